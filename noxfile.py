"""The unit suites on every supported Python: ``nox`` (or ``scripts/test``, which runs it).

The fast paths differ by version (eager tasks arrived in 3.12), so the engine, provider,
container and contract suites run on 3.11, 3.12 and 3.13. An interpreter that is not
installed is skipped with a message (``scripts/test`` finds pyenv's versions itself).
"""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

PYTHONS = ["3.11", "3.12", "3.13"]
UNIT_SUITES = ["tests/engines", "tests/providers", "tests/containers", "tests/contracts"]


@nox.session(python=PYTHONS)
def unit(session: nox.Session) -> None:
    """The unit and contract suites (Redis halves included when redis-server is here)."""
    session.install("-e", ".[dev]")
    session.run(
        "python", "-m", "pytest", "-q", "-p", "no:cacheprovider", *(session.posargs or UNIT_SUITES)
    )
