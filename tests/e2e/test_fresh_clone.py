"""A newcomer on a fresh clone: what scripts/test and scripts/demo do before any test runs.

The scripts run here against stand-ins: a fake ``apt-get`` on a ``PATH`` of our own and a
fake ``python3`` whose ``pip`` only prints, so nothing is installed for real.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ROOT / "scripts"
BASH = shutil.which("bash") or "/bin/bash"
CHMOD = shutil.which("chmod") or "/bin/chmod"


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{BASH}\n{body}", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_bash(
    script: str, cwd: Path, env: dict[str, str], check: bool = True
) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(  # noqa: S603 - bash on our own scripts
        [BASH, "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if check:
        assert 0 == done.returncode, done.stderr
    return done


class FakeMachine:
    """A ``PATH`` holding only ``id`` and, optionally, an ``apt-get`` that records its calls
    and "installs" a package by creating an executable of that name."""

    def __init__(self, bin_dir: Path, *, apt: bool = True, uid: int = 0) -> None:
        self.bin = bin_dir
        self.bin.mkdir()
        self.log = bin_dir / "apt-get.log"
        executable(bin_dir / "id", f"echo {uid}\n")
        if apt:
            executable(
                bin_dir / "apt-get",
                f'echo "$*" >> {self.log}\n'
                'if [ "$1" = install ]; then\n'
                '  for p in "$@"; do case $p in -*|install) ;; *)\n'
                f'    printf "#!{BASH}\\n" > {bin_dir}/$p; {CHMOD} +x {bin_dir}/$p;;\n'
                "  esac; done\n"
                "fi\n",
            )

    def has(self, *programs: str) -> None:
        for program in programs:
            executable(self.bin / program, "exit 0\n")

    @property
    def apt_calls(self) -> list[str]:
        return self.log.read_text().splitlines() if self.log.exists() else []

    def source(self, **env: str) -> subprocess.CompletedProcess[str]:
        """Source scripts/_system_packages.sh; stdout is ``[<still missing>]``."""
        script = f'. {SCRIPTS}/_system_packages.sh; echo "[$MISSING_SYSTEM_PACKAGES]"'
        return run_bash(script, self.bin, {"PATH": str(self.bin), **env}, check=False)


class TestSystemPackages:
    def test_missing_packages_are_installed_with_apt_get_as_root(self, tmp_path: Path) -> None:
        """As root with apt-get: update, install both, say so, and nothing is left missing."""
        machine = FakeMachine(tmp_path / "bin")
        done = machine.source()
        assert (0, "[]") == (done.returncode, done.stdout.strip())
        assert ["update -qq", "install -y -qq redis-server chromium"] == machine.apt_calls
        assert "== installing redis-server chromium with apt-get" in done.stderr

    def test_nothing_happens_when_both_are_there(self, tmp_path: Path) -> None:
        """redis-server and chromium present: no apt-get, not a word."""
        machine = FakeMachine(tmp_path / "bin")
        machine.has("redis-server", "chromium")
        done = machine.source()
        assert ("[]", "", []) == (done.stdout.strip(), done.stderr, machine.apt_calls)

    @pytest.mark.parametrize(
        ("apt", "uid", "env"),
        [(False, 0, {}), (True, 1000, {}), (True, 0, {"ENGINESCOPE_SYSTEM_PACKAGES": "skip"})],
        ids=["no-apt-get", "not-root", "skip"],
    )
    def test_otherwise_the_tests_that_need_them_are_skipped(
        self, tmp_path: Path, apt: bool, uid: int, env: dict[str, str]
    ) -> None:
        """Without apt-get, as another user, or told to skip: exit 0, say which tests skip."""
        machine = FakeMachine(tmp_path / "bin", apt=apt, uid=uid)
        machine.has("chromium")
        done = machine.source(**env)
        assert (0, "[redis-server]", []) == (
            done.returncode,
            done.stdout.strip(),
            machine.apt_calls,
        )
        assert "== without redis-server: the Redis tests are skipped" in done.stderr
        assert "chromium" not in done.stderr

    def test_ci_requires_them(self, tmp_path: Path) -> None:
        """ENGINESCOPE_SYSTEM_PACKAGES=require (.ci/run) fails when one cannot be installed."""
        machine = FakeMachine(tmp_path / "bin", apt=False)
        done = machine.source(ENGINESCOPE_SYSTEM_PACKAGES="require")
        assert 1 == done.returncode
        assert "redis-server chromium missing" in done.stderr

    def test_ci_and_scripts_test_share_the_script(self) -> None:
        """.ci/run asks for every package and runs scripts/test, which sources the script."""
        ci = (ROOT / ".ci" / "run").read_text()
        assert "ENGINESCOPE_SYSTEM_PACKAGES=require" in ci
        assert "exec scripts/test" in ci
        assert '. "$(dirname "$0")/_system_packages.sh"' in (SCRIPTS / "test").read_text()


def redis_backend_patterns() -> list[str]:
    found = re.search(r'^REDIS_BACKEND_MODULES="([^"]+)"$', (SCRIPTS / "test").read_text(), re.M)
    assert found is not None
    return found.group(1).split(",")


class TestWithoutRedis:
    def test_every_redis_test_is_marked_redis(self) -> None:
        """Deselecting the redis marker leaves no test in tests/redis (each needs a server)."""
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "tests/redis",
                "-m",
                "not redis",
                "--collect-only",
                "-q",
                "-p",
                "no:cacheprovider",
            ],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert 5 == done.returncode, done.stdout  # 5: no test collected

    def test_the_coverage_omit_list_is_exactly_the_redis_backend(self) -> None:
        """The modules scripts/test leaves out of coverage without Redis are the ones that
        import redis, and only those."""
        patterns = redis_backend_patterns()
        modules = sorted(p for p in (ROOT / "engines").rglob("*.py"))
        uses_redis = re.compile(r"^\s*(import redis|from redis[ .])", re.M)
        expected = [m for m in modules if uses_redis.search(m.read_text(encoding="utf-8"))]
        omitted = [m for m in modules if any(fnmatch.fnmatch(str(m), p) for p in patterns)]
        assert expected
        assert set(expected) <= set(omitted)
        assert all("redis" in str(m.relative_to(ROOT)) for m in omitted)


class TestVenvProgress:
    @staticmethod
    def fake_checkout(tmp_path: Path) -> tuple[Path, dict[str, str]]:
        """scripts/_venv.sh and pyproject.toml in a folder, and a python3 whose venv's pip
        prints what a real one would."""
        checkout = tmp_path / "checkout"
        (checkout / "scripts").mkdir(parents=True)
        shutil.copy(SCRIPTS / "_venv.sh", checkout / "scripts")
        shutil.copy(ROOT / "pyproject.toml", checkout)
        pip = (
            'case "$*" in *"-e .["*) printf "Obtaining file:///x\\nCollecting fastapi>=0.110\\n'
            'Collecting uvicorn>=0.29\\nSuccessfully installed fastapi uvicorn\\n";; esac\n'
        )
        python = executable(
            tmp_path / "python3",
            'if [ "$1" = --version ]; then echo "Python 3.11.0"; exit; fi\n'
            'mkdir -p "$3/bin"\n'
            f"cat > \"$3/bin/python\" <<'PIP'\n#!{BASH}\n{pip}PIP\n"
            'chmod +x "$3/bin/python"\n',
        )
        return checkout, {"PATH": os.environ["PATH"], "PYTHON": str(python)}

    def test_a_first_install_says_what_it_is_doing(self, tmp_path: Path) -> None:
        """The first run names each step and each package; the next run says nothing."""
        checkout, env = self.fake_checkout(tmp_path)
        first = run_bash(". scripts/_venv.sh examples", checkout, env)
        again = run_bash(". scripts/_venv.sh examples", checkout, env)
        assert [
            "== creating .venv with Python 3.11.0",
            "== installing enginescope[examples] into .venv (a minute on a first run)",
            "   fastapi>=0.110",
            "   uvicorn>=0.29",
            "   done",
        ] == first.stdout.splitlines()
        assert "" == again.stdout
