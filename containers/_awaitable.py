"""``settle``: await what dependency-injector handed back when it is awaitable."""

from __future__ import annotations

import inspect
from typing import Any

__all__ = ["settle"]


async def settle(result: object) -> Any:
    """``await`` ``result`` when it is awaitable (an async provider's call), else return it.

    ``init_resources()`` returns ``None`` when nothing async started; an async Resource
    returns a future; an object override returns the object.
    """
    if inspect.isawaitable(result):
        return await result
    return result
