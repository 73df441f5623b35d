"""The README's install step works as written: a built wheel installs into a clean virtual
environment, and the README's quickstart runs there, outside the repository."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"


def quickstart() -> str:
    """The first python block of the README's quickstart section."""
    section = README.read_text(encoding="utf-8").split("## Quickstart", 1)[1]
    found = re.search(r"^```python\n(.*?)^```$", section, re.DOTALL | re.MULTILINE)
    assert found is not None, "no python block in the README's quickstart"
    return found.group(1)


def run(*command: str | Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    done = subprocess.run(  # noqa: S603 - pip and python of our own venvs
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert 0 == done.returncode, f"{command}\n{done.stdout}\n{done.stderr}"
    return done


class TestWheel:
    def test_the_wheel_installs_in_a_clean_venv_and_runs_the_quickstart(
        self, tmp_path: Path
    ) -> None:
        """pip wheel, pip install the wheel into a fresh venv, run the quickstart there:
        it prints the calculator's five events and its result."""
        dist = tmp_path / "dist"
        run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", dist, ROOT,
            cwd=tmp_path)  # fmt: skip
        (wheel,) = dist.glob("enginescope-*.whl")
        venv.create(tmp_path / "venv", with_pip=True)
        python = tmp_path / "venv" / "bin" / "python"
        run(python, "-m", "pip", "install", "--quiet", wheel, cwd=tmp_path)
        script = tmp_path / "quickstart.py"
        script.write_text(quickstart(), encoding="utf-8")

        done = run(python, script, cwd=tmp_path)
        where = run(
            python, "-c", "import enginescope.engines as e; print(e.__file__)", cwd=tmp_path
        )

        assert [
            "1 agent_started",
            "2 agent_thinking",
            "3 tool_executing",
            "4 tool_completed",
            "5 agent_completed",
            "True 2 + 3 = 5",
        ] == done.stdout.splitlines()
        assert str(tmp_path / "venv") in where.stdout  # the wheel's copy, not the checkout
