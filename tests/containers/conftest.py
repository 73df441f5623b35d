"""Fixtures shared by the containers tests."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any ENGINESCOPE_* variable of the developer's shell from the settings."""
    import os  # noqa: PLC0415 - only this fixture needs it

    for name in list(os.environ):
        if name.upper().startswith("ENGINESCOPE_"):
            monkeypatch.delenv(name)
