"""Fixtures shared by the containers tests."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """Enable the ``pytester`` fixture for the plugin tests.

    ``pytest_plugins`` is only allowed in the rootdir's conftest; registering the plugin
    here keeps it local to this folder however the suite is started.
    """
    if not config.pluginmanager.has_plugin("pytester"):
        config.pluginmanager.import_plugin("pytester")


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hide any ENGINESCOPE_* variable of the developer's shell from the settings."""
    for name in list(os.environ):
        if name.upper().startswith("ENGINESCOPE_"):
            monkeypatch.delenv(name)
