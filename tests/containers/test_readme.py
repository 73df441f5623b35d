"""The README's dependency-injection snippets run as written.

A snippet is run when the line before its ```python fence is ``<!-- test: container -->``.
Each runs as a fresh module (so ``app.wire(modules=[__name__])`` works). A snippet marked
``<!-- test: pytest -->`` is a test module: it runs under pytest (with the enginescope
plugin, pytest-asyncio in strict mode and warnings as errors) and its tests must pass.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path
from typing import NamedTuple

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKER = "<!-- test: container -->"
PYTEST_MARKER = "<!-- test: pytest -->"
FENCE = re.compile(r"^```python[ \t]*\n(?P<code>.*?)^```[ \t]*$", re.DOTALL | re.MULTILINE)


class Snippet(NamedTuple):
    line: int
    code: str


def marked_snippets(text: str, marker: str = MARKER) -> list[Snippet]:
    """The python blocks whose fence directly follows the marker line."""
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        if before.strip() == marker:
            found.append(Snippet(text.count("\n", 0, match.start()) + 2, match["code"]))
    return found


TEXT = README.read_text(encoding="utf-8") if README.exists() else ""
SNIPPETS = marked_snippets(TEXT)
PYTEST_SNIPPETS = marked_snippets(TEXT, PYTEST_MARKER)
PYTEST_INI = """
[pytest]
asyncio_mode = strict
asyncio_default_fixture_loop_scope = function
filterwarnings = error
"""


def run_as_module(snippet: Snippet) -> None:
    """Execute ``snippet`` as the body of a fresh, importable module."""
    name = f"readme_snippet_line_{snippet.line}"
    module = types.ModuleType(name)
    sys.modules[name] = module
    try:
        exec(compile(snippet.code, f"{README}:{snippet.line}", "exec"), module.__dict__)  # noqa: S102 - running the README is the point
    finally:
        del sys.modules[name]


class TestReadme:
    def test_the_readme_marks_its_container_snippets(self) -> None:
        """The README keeps marked snippets, so dropping them cannot pass silently."""
        assert README.exists()
        assert len(SNIPPETS) >= 1, f"no python block after a {MARKER!r} line in README.md"

    @pytest.mark.parametrize("snippet", SNIPPETS, ids=[f"line-{s.line}" for s in SNIPPETS])
    def test_the_snippet_runs(self, snippet: Snippet, capsys: pytest.CaptureFixture[str]) -> None:
        """The snippet runs to the end without an error."""
        run_as_module(snippet)

        assert "Traceback" not in capsys.readouterr().err


class TestPytestSnippets:
    def test_the_readme_has_a_test_module_snippet(self) -> None:
        """The testing section keeps a snippet that runs under pytest."""
        assert len(PYTEST_SNIPPETS) >= 1, f"no python block after a {PYTEST_MARKER!r} line"

    @pytest.mark.parametrize(
        "snippet", PYTEST_SNIPPETS, ids=[f"line-{s.line}" for s in PYTEST_SNIPPETS]
    )
    def test_the_test_module_passes(self, snippet: Snippet, pytester: pytest.Pytester) -> None:
        """Every test of the snippet passes, and there is at least one."""
        pytester.makeini(PYTEST_INI)
        pytester.makepyfile(**{f"test_readme_line_{snippet.line}": snippet.code})

        result = pytester.runpytest("-p", "no:cacheprovider")

        outcomes = result.parseoutcomes()
        assert (0, 0) == (outcomes.get("failed", 0), outcomes.get("errors", 0)), result.stdout
        assert outcomes.get("passed", 0) >= 1


class TestFinder:
    def test_only_marked_python_blocks_are_found(self) -> None:
        """Unmarked blocks and blocks in other languages are left alone."""
        text = (
            "```python\nskipped = 1\n```\n"
            f"{MARKER}\n```python\nfound = 2\n```\n"
            f"{MARKER}\n```bash\necho no\n```\n"
        )

        assert [Snippet(6, "found = 2\n")] == marked_snippets(text)
