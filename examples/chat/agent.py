"""The chat's built-in agent: deterministic, no network, no model.

For every message it thinks once and uses exactly one real tool, so each run emits five
events: ``agent_started``, ``agent_thinking``, ``tool_executing``, ``tool_completed``,
``agent_completed``. A message with arithmetic in it goes to :func:`calculate`, which
parses the expression with :mod:`ast` and evaluates a whitelist of nodes (never
``eval``); anything else goes to word statistics.
"""

from __future__ import annotations

import ast
import asyncio
import math
import operator
import re
from collections.abc import Callable
from typing import Any, Final

from enginescope.engines import Agent, AgentRun
from enginescope.engines.testing import word_statistics

__all__ = [
    "AGENT_NAME",
    "CalculatorError",
    "calculate",
    "find_expression",
    "make_chat_agent",
    "word_statistics",
]

AGENT_NAME: Final = "assistant"
MAX_EXPRESSION_LENGTH: Final = 200
MAX_EXPONENT: Final = 64
MAX_MAGNITUDE: Final = 10**30

_BINARY: Final[dict[type[ast.operator], Callable[[Any, Any], Any]]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
}
_UNARY: Final[dict[type[ast.unaryop], Callable[[Any], Any]]] = {
    ast.UAdd: operator.pos,
    ast.USub: operator.neg,
}
# Runs of digits, operators, dots, parentheses and spaces; at least "<number> <op> <number>".
_CANDIDATE = re.compile(r"[\d.\s()+\-*/%^]+")
_ARITHMETIC = re.compile(r"\d[\d.\s)]*[+\-*/%^][\s(+\-*/]*\.?\d")


class CalculatorError(ValueError):
    """An expression the calculator refuses: not arithmetic, too big, or undefined."""


def find_expression(text: str) -> str | None:
    """The longest arithmetic expression in ``text`` (``2 + 3 * 4``), or ``None``."""
    candidates = (match.strip() for match in _CANDIDATE.findall(text))
    found = [c for c in candidates if _ARITHMETIC.search(c)]
    return max(found, key=len) if found else None


def calculate(expression: str) -> int | float:
    """Evaluate ``+ - * / // % **`` (or ``^``) over numbers, safely.

    Parsed with :func:`ast.parse`; only number literals, those operators and parentheses
    are allowed, exponents and magnitudes are bounded.
    """
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise CalculatorError(f"Expressions have at most {MAX_EXPRESSION_LENGTH} characters.")
    try:
        tree = ast.parse(expression.replace("^", "**"), mode="eval")
    except SyntaxError:
        raise CalculatorError(f"{expression!r} is not an arithmetic expression.") from None
    return _evaluate(tree.body)


def _evaluate(node: ast.expr) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        return _bounded(_UNARY[type(node.op)](_evaluate(node.operand)))
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _binary(node.op, _evaluate(node.left), _evaluate(node.right))
    raise CalculatorError("Only numbers, + - * / // % ** and parentheses are allowed.")


def _binary(op: ast.operator, left: int | float, right: int | float) -> int | float:
    if isinstance(op, ast.Pow) and abs(right) > MAX_EXPONENT:
        raise CalculatorError(f"Exponents are limited to {MAX_EXPONENT}.")
    try:
        return _bounded(_BINARY[type(op)](left, right))
    except ZeroDivisionError:
        raise CalculatorError("Division by zero is undefined.") from None
    except (OverflowError, TypeError):  # huge floats; complex results of negative roots
        raise CalculatorError("The result is not a finite real number.") from None


def _bounded(value: Any) -> int | float:
    if isinstance(value, complex) or not math.isfinite(value) or abs(value) > MAX_MAGNITUDE:
        raise CalculatorError("The result is not a finite real number below 10**30.")
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _delayed(fn: Callable[..., Any], delay: float) -> Callable[..., Any]:
    """``fn`` as an async tool that first waits ``delay`` seconds (so runs can be watched)."""

    async def tool(**params: Any) -> Any:
        if delay:
            await asyncio.sleep(delay)
        return fn(**params)

    return tool


def make_chat_agent(tool_delay_seconds: float = 0.0) -> Agent:
    """The chat agent; each tool call first waits ``tool_delay_seconds``."""
    calculator = _delayed(calculate, tool_delay_seconds)
    statistics = _delayed(word_statistics, tool_delay_seconds)

    async def chat_agent(run: AgentRun) -> str:
        expression = find_expression(run.message)
        if expression is not None:
            await run.think(f"I see arithmetic: {expression}. Using the calculator.")
            try:
                value = await run.use_tool("calculator", calculator, expression=expression)
            except CalculatorError as exc:
                return f"I could not calculate {expression}: {exc}"
            return f"{expression} = {value}"
        await run.think(f"Counting the words of your {len(run.message)}-character message.")
        stats = await run.use_tool("word_statistics", statistics, text=run.message)
        common = ", ".join(stats["most_common"]) or "none"
        return f"{stats['words']} words, {stats['unique_words']} unique; most common: {common}."

    return chat_agent
