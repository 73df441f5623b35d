"""The enginescope pytest plugin, registered through the ``pytest11`` entry point.

Fixtures for the tests of applications built on enginescope:

- ``enginescope_bridge``: a :class:`~enginescope.engines.testing.RecordingBridge`.
- ``make_user_context``: ``make_user_context("u-1", **fields)`` builds a valid context.
- ``enginescope_settings``: the :class:`~enginescope.containers.EngineSettings` used by
  ``enginescope_container`` (override this fixture to change limits or timeouts).
- ``enginescope_container``: an :class:`~enginescope.containers.EngineContainer` whose
  bridge is ``enginescope_bridge``, with resources started before the test and shut down
  after it (async; needs pytest-asyncio). Override it to test your own container.
- ``in_user_scope``: ``async with in_user_scope("u-1") as engine:`` enters a user scope
  (a user id, a context or a mapping) and resolves that user's engine.

Importing this module only imports pytest (and pytest-asyncio when installed); everything
else is imported when a fixture is first used, so the plugin costs nothing to projects
that do not use it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, cast

import pytest

if TYPE_CHECKING:
    from enginescope.containers.container import EngineContainer
    from enginescope.containers.settings import EngineSettings
    from enginescope.engines import UserExecutionContext, UserExecutionEngine
    from enginescope.engines.testing import RecordingBridge

_fixture: Any
try:
    from pytest_asyncio import fixture as _fixture
except ImportError:  # pragma: no cover - without pytest-asyncio, another plugin may run it
    _fixture = pytest.fixture

_F = TypeVar("_F", bound=Callable[..., Any])


def _async_fixture(function: _F) -> _F:
    """Declare an async fixture that runs in pytest-asyncio's strict and auto modes."""
    return cast("_F", _fixture(function))


__all__ = [
    "InUserScope",
    "enginescope_bridge",
    "enginescope_container",
    "enginescope_settings",
    "in_user_scope",
    "make_user_context",
]

ContextLike: TypeAlias = "UserExecutionContext | Mapping[str, Any] | str"

_numbers = itertools.count(1)


class InUserScope(Protocol):
    """The ``in_user_scope`` helper: enter a user scope and yield that user's engine."""

    def __call__(
        self, context: ContextLike = ..., /, **fields: Any
    ) -> contextlib.AbstractAsyncContextManager[UserExecutionEngine]: ...


@pytest.fixture
def enginescope_bridge() -> RecordingBridge:
    """A bridge that records every event it is asked to send, per user."""
    from enginescope.engines.testing import RecordingBridge  # noqa: PLC0415 - lazy plugin

    return RecordingBridge()


@pytest.fixture
def make_user_context() -> Callable[..., UserExecutionContext]:
    """``make_user_context(user_id="u-1", **fields)``: a valid context with fresh ids."""
    from enginescope.engines import UserExecutionContext  # noqa: PLC0415 - lazy plugin

    def make(user_id: str = "test-user", **fields: Any) -> UserExecutionContext:
        number = next(_numbers)
        fields.setdefault("thread_id", f"thread-{number}")
        fields.setdefault("run_id", f"run-{number}")
        return UserExecutionContext(user_id=user_id, **fields)

    return make


@pytest.fixture
def enginescope_settings() -> EngineSettings:
    """The settings of ``enginescope_container``: ``ENGINESCOPE_*`` variables, else defaults."""
    from enginescope.containers.settings import EngineSettings  # noqa: PLC0415 - lazy plugin

    return EngineSettings()


@_async_fixture
async def enginescope_container(
    enginescope_bridge: RecordingBridge, enginescope_settings: EngineSettings
) -> AsyncIterator[EngineContainer]:
    """An ``EngineContainer`` on the recording bridge, started for the test, then shut down."""
    from enginescope.containers.container import EngineContainer  # noqa: PLC0415 - lazy plugin

    container = EngineContainer()
    container.settings.override(enginescope_settings)
    container.websocket_bridge.override(enginescope_bridge)
    await _settled(container.init_resources())
    try:
        yield container
    finally:
        await _settled(container.shutdown_resources())


async def _settled(result: Awaitable[None] | None) -> None:
    if result is not None:
        await result


@pytest.fixture
def in_user_scope(
    enginescope_container: EngineContainer,
    make_user_context: Callable[..., UserExecutionContext],
) -> InUserScope:
    """``async with in_user_scope("u-1") as engine:``: a user scope and that user's engine.

    Takes a user id (plus context ``**fields``), a ``UserExecutionContext`` or a mapping;
    resolves ``user_engine`` of ``enginescope_container``.
    """
    from enginescope.containers.scope import user_scope  # noqa: PLC0415 - lazy plugin

    @contextlib.asynccontextmanager
    async def enter(
        context: ContextLike = "test-user", /, **fields: Any
    ) -> AsyncIterator[UserExecutionEngine]:
        if isinstance(context, str):
            context = make_user_context(context, **fields)
        async with user_scope(context):
            yield await enginescope_container.user_engine()

    return enter
