"""Recording fakes shared by the providers tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest


@dataclass
class Resource:
    """A thing a scoped provider creates; records which journal made it."""

    name: str
    serial: int


@dataclass
class Journal:
    """Records the lifecycle of every resource it makes, in order."""

    events: list[tuple[str, str]] = field(default_factory=list)
    created: int = 0

    def make(self, name: str) -> Resource:
        self.created += 1
        self.events.append(("open", name))
        return Resource(name, self.created)

    def generator(self, name: str) -> Iterator[Resource]:
        resource = self.make(name)
        try:
            yield resource
        except BaseException as error:
            self.events.append(("rollback", f"{name}:{type(error).__name__}"))
            raise
        self.events.append(("close", name))

    async def agenerator(self, name: str) -> AsyncIterator[Resource]:
        resource = self.make(name)
        try:
            yield resource
        except BaseException as error:
            self.events.append(("rollback", f"{name}:{type(error).__name__}"))
            raise
        self.events.append(("close", name))

    def closed(self) -> list[str]:
        return [name for kind, name in self.events if kind in {"close", "rollback"}]


@pytest.fixture
def journal() -> Journal:
    """A fresh recording journal."""
    return Journal()
