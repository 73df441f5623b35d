"""The enginescope pytest plugin, registered through the ``pytest11`` entry point.

Fixtures for the tests of applications built on enginescope.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import pytest
from enginescope.engines import UserExecutionContext
from enginescope.engines.testing import RecordingBridge

__all__ = ["enginescope_bridge", "make_user_context"]

_numbers = itertools.count(1)


@pytest.fixture
def enginescope_bridge() -> RecordingBridge:
    """A bridge that records every event it is asked to send, per user."""
    return RecordingBridge()


@pytest.fixture
def make_user_context() -> Callable[..., UserExecutionContext]:
    """``make_user_context(user_id="u-1", **fields)``: a valid context with fresh ids."""

    def make(user_id: str = "test-user", **fields: Any) -> UserExecutionContext:
        number = next(_numbers)
        fields.setdefault("thread_id", f"thread-{number}")
        fields.setdefault("run_id", f"run-{number}")
        return UserExecutionContext(user_id=user_id, **fields)

    return make
