"""The unit suites on every supported Python: ``nox`` (or ``scripts/test``, which runs it);
the benchmarks on each of them: ``nox -s bench-3.12`` (or ``scripts/bench --all-pythons``).

The fast paths differ by version (eager tasks arrived in 3.12), so the engine, provider,
container and contract suites run on 3.11, 3.12 and 3.13, and so can the benchmarks. An
interpreter that is not installed is skipped with a message (``scripts/test`` and
``scripts/bench`` find pyenv's versions themselves).
"""

from __future__ import annotations

from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]
UNIT_SUITES = ["tests/engines", "tests/providers", "tests/containers", "tests/contracts"]
# The options scripts/bench gives pytest on the repository's .venv.
BENCH_OPTIONS = [
    "--benchmark-enable",
    "--benchmark-only",
    "-p",
    "no:randomly",
    "-p",
    "no:cacheprovider",
    "--benchmark-columns=min,median,max,rounds",
    "-q",
]


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """The unit and contract suites (Redis halves included when redis-server is here)."""
    session.install("-e", ".[dev]")
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *(session.posargs or UNIT_SUITES)
    )


@nox.session(python=PYTHONS, default=False)
def bench(session: nox.Session) -> None:
    """The benchmarks, timed, raw numbers in ``build/bench-<python>.json``; extra arguments
    go to pytest (``nox -s bench-3.12 -- -k container``). Not run by a bare ``nox``."""
    session.install("-e", ".[dev]")
    Path("build").mkdir(exist_ok=True)
    session.run(
        "python",
        "-m",
        "pytest",
        "tests/benchmarks",
        *BENCH_OPTIONS,
        f"--benchmark-json=build/bench-{session.python}.json",
        *session.posargs,
    )
