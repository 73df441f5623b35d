"""The chat example's agent: the safe calculator, expression finding and its five events."""

from __future__ import annotations

import pytest
from enginescope.engines import AgentRegistry, ExecutionEngineFactory, UserExecutionContext
from enginescope.engines.testing import RecordingBridge

from examples.chat.agent import (
    AGENT_NAME,
    CalculatorError,
    calculate,
    find_expression,
    make_chat_agent,
)

FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


class TestCalculate:
    @pytest.mark.parametrize(
        ("expression", "expected"),
        [
            ("2 + 3 * 4", 14),
            ("(2 + 3) * 7", 35),
            ("2 ^ 10 - 24 / 3", 1016),
            ("7 // 2", 3),
            ("7 % 3", 1),
            ("-3 + +5", 2),
            ("1 / 4", 0.25),
            ("10 - -3", 13),
        ],
    )
    def test_arithmetic_is_evaluated(self, expression: str, expected: float) -> None:
        """The four operations, floor division, modulo, powers and signs work."""
        assert expected == calculate(expression)

    @pytest.mark.parametrize(
        "expression",
        [
            "__import__('os').system('true')",
            "(1).__class__",
            "x + 1",
            "[1, 2]",
            "2 if 1 else 3",
            "'a' * 3",
            "True + 1",
            "1 +",
            "2 ** 100000",
            "9 ** 64 ** 64",
            "1 / 0",
            "(-8) ** 0.5",
            "1" * 201,
        ],
    )
    def test_anything_else_is_refused(self, expression: str) -> None:
        """Names, calls, attributes, strings, huge or undefined results: CalculatorError."""
        with pytest.raises(CalculatorError):
            calculate(expression)


class TestFindExpression:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            ("what is 2 + 3 * 4?", "2 + 3 * 4"),
            ("(1+2)^3 please", "(1+2)^3"),
            ("hello world", None),
            ("version 1.2 is out", None),
            ("2 3", None),
        ],
    )
    def test_finds_the_arithmetic_in_a_message(self, text: str, expected: str | None) -> None:
        """The longest run of digits and operators with an operator between numbers."""
        assert expected == find_expression(text)


class TestChatAgent:
    @pytest.mark.parametrize(
        ("message", "tool", "reply"),
        [
            ("what is 6 * 7", "calculator", "6 * 7 = 42"),
            ("one two two", "word_statistics", "3 words, 2 unique; most common: two, one."),
            ("what is 1 / 0", "calculator", "I could not calculate 1 / 0: Division by zero"),
        ],
    )
    async def test_a_run_emits_five_events_and_replies(
        self, message: str, tool: str, reply: str
    ) -> None:
        """Think once, use one tool, reply: five events, whatever the message."""
        bridge = RecordingBridge()
        agents = AgentRegistry()
        agents.register(AGENT_NAME, make_chat_agent())
        factory = ExecutionEngineFactory(bridge, agent_registry=agents)
        ctx = UserExecutionContext(user_id="u-1", thread_id="t-1", run_id="r-1")
        async with factory.user_execution_scope(ctx) as engine:
            result = await engine.execute_agent(AGENT_NAME, message)
        await factory.shutdown()
        assert FIVE == bridge.types_for("u-1")
        assert tool == bridge.events_for("u-1")[2]["data"]["tool_name"]
        assert str(result.result).startswith(reply)
