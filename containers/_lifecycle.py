"""``StoppableResource``: a Resource that, once shut down, starts again only through ``init()``.

dependency-injector starts a Resource on any resolve, so resolving ``user_engine`` after
``shutdown_resources()`` silently builds a new bridge, factory and reaper that nobody stops.
This Resource refuses that with :class:`ContainerShutDownError` before resolving anything it
depends on; ``init()`` (``init_resources()``) starts it again, and with it the stopped
Resources it depends on. A Resource never started still starts on its first resolve, as
dependency-injector's does.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any, TypeVar, cast

from dependency_injector import providers

from .captive import check_container_tree
from .errors import ContainerShutDownError

__all__ = ["FactoryResource", "StoppableResource"]

T = TypeVar("T")

_restarting: ContextVar[bool] = ContextVar("enginescope_restarting", default=False)


class StoppableResource(providers.Resource[T]):
    """A Resource refusing to be started by a resolve once it was shut down."""

    __slots__ = ("_stopped",)

    def __init__(self, provides: Any = None, *args: Any, **kwargs: Any) -> None:
        super().__init__(provides, *args, **kwargs)
        self._stopped = False

    @property
    def stopped(self) -> bool:
        """Whether it was shut down and not initialised again since."""
        return self._stopped

    def init(self) -> Any:
        """Start it (again), and the stopped Resources it injects: what ``init_resources()``
        calls."""
        self._stopped = False
        token = _restarting.set(True)
        try:
            return super().init()
        finally:
            _restarting.reset(token)

    def shutdown(self) -> Any:
        """Shut it down; from now on only :meth:`init` starts it again."""
        if self.initialized:
            self._stopped = True
        return super().shutdown()

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._stopped and not self.initialized and _restarting.get():
            self._stopped = False
        elif self._stopped and not self.initialized:
            raise ContainerShutDownError(getattr(self.provides, "__name__", repr(self.provides)))
        return super()._provide(args, kwargs)  # type: ignore[misc]  # cpdef, not in the stubs


class FactoryResource(StoppableResource[T]):
    """The engine factory's Resource: it refuses captive dependencies when it starts.

    ``container`` (a ``providers.Self``) is checked with :func:`check_container_tree`
    before any injection is resolved, so a captive provider is reported as such, not as
    the error its early resolve would raise, and nothing has started when it is.
    """

    __slots__ = ("_container",)

    def __init__(
        self, container: Any = None, provides: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        super().__init__(provides, *args, **kwargs)
        self._container = container

    def __deepcopy__(self, memo: dict[Any, Any] | None) -> FactoryResource[T]:
        memo = {} if memo is None else memo
        copied = cast("FactoryResource[T]", super().__deepcopy__(memo))
        copied._container = providers.deepcopy(self._container, memo)
        return copied

    def _provide(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if not self.initialized and not self.stopped and self._container is not None:
            check_container_tree(self._container())
        return super()._provide(args, kwargs)
