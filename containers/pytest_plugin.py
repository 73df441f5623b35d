"""The enginescope pytest plugin, registered through the ``pytest11`` entry point.

Fixtures for the tests of applications built on enginescope:

- ``enginescope_bridge``: a :class:`~enginescope.engines.testing.RecordingBridge`.
- ``make_user_context``: ``make_user_context("u-1", **fields)`` builds a valid context.
- ``enginescope_settings``: the :class:`~enginescope.containers.EngineSettings` the
  engine container gets (override this fixture to change limits or timeouts).
- ``enginescope_app_container``: the container the fixtures configure; a fresh
  :class:`~enginescope.containers.EngineContainer` unless you override it to return your
  application's container (the one your app is built with). The engine container is
  found in it (``providers.Container(EngineContainer)``).
- ``enginescope_engines``: that engine container, its bridge set to ``enginescope_bridge``
  and its settings to ``enginescope_settings`` for the test (reset after it), *not
  started*: your app's lifespan starts and stops it. Use it with Starlette's sync
  ``TestClient``: ``with TestClient(app) as client:`` runs the lifespan on the client's
  own event loop, and every request and WebSocket runs there too.
- ``enginescope_container``: ``enginescope_engines`` with its resources started on the
  test's event loop before the test and shut down after it (async; needs
  pytest-asyncio). Use it for async tests: ``in_user_scope``, or your app over httpx's
  ``ASGITransport`` (which runs no lifespan). Do not mix it with a ``TestClient``, which
  runs the app on another event loop.
- ``in_user_scope``: ``async with in_user_scope("u-1") as engine:`` enters a user scope
  (a user id, a context or a mapping) and resolves that user's engine.

Importing this module only imports pytest (and pytest-asyncio when installed); everything
else is imported when a fixture is first used, so the plugin costs nothing to projects
that do not use it.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias, TypeVar, cast

import pytest
from enginescope.containers._awaitable import settle

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
    "enginescope_app_container",
    "enginescope_bridge",
    "enginescope_container",
    "enginescope_engines",
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


@pytest.fixture
def enginescope_app_container() -> Any:
    """The container the fixtures configure: override it to return your app's container."""
    from enginescope.containers.container import EngineContainer  # noqa: PLC0415 - lazy plugin

    return EngineContainer()


@pytest.fixture
def enginescope_engines(
    enginescope_app_container: Any,
    enginescope_bridge: RecordingBridge,
    enginescope_settings: EngineSettings,
) -> Iterator[EngineContainer]:
    """The engine container of ``enginescope_app_container`` on the recording bridge and the
    test's settings, not started (your app's lifespan starts it); overrides reset after."""
    from enginescope.containers.lookup import find_engine_container  # noqa: PLC0415 - lazy

    engines = find_engine_container(enginescope_app_container, caller="enginescope_engines")
    with (
        engines.settings.override(enginescope_settings),
        engines.websocket_bridge.override(enginescope_bridge),
    ):
        yield engines


@_async_fixture
async def enginescope_container(
    enginescope_engines: EngineContainer,
) -> AsyncIterator[EngineContainer]:
    """``enginescope_engines``, started on the test's event loop, then shut down."""
    await settle(enginescope_engines.init_resources())
    try:
        yield enginescope_engines
    finally:
        await settle(enginescope_engines.shutdown_resources())


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
