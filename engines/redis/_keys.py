"""Where a user's data lives in Redis (not API).

One Redis: ``{prefix}:slots:{user_id}`` and ``{prefix}:events:{user_id}``. A Redis Cluster:
``{prefix}:slots:{b7}:{user_id}`` and ``{prefix}:events:{b7}:{user_id}``, where the hash
tag ``{b7}`` is the user's bucket (one of :data:`BUCKETS`, from a CRC32 of the id), so
every key of one user lives in one hash slot, each per-user script touches one slot, and
a replica reads the streams of all its users of one bucket with one ``XREAD``.

Ids are encoded here, so an id that cannot be sent to Redis (a lone surrogate) is refused
where it is given, never inside a batch or the reader.
"""

from __future__ import annotations

import zlib
from typing import Final

from ..errors import InvalidContextError

__all__ = ["BUCKETS", "bucket", "encode_id", "user_key"]

BUCKETS: Final = 16
"""Key buckets of a cluster: the readers a replica runs at most (one per bucket in use)."""


def encode_id(field: str, value: str) -> bytes:
    """``value`` as UTF-8; raises :class:`InvalidContextError` naming ``field`` if it is not
    text Redis can store (a lone surrogate such as ``"eve\\ud800"``)."""
    try:
        return value.encode()
    except UnicodeEncodeError:
        raise InvalidContextError(
            field, "must be valid Unicode text (it holds a lone surrogate)"
        ) from None


def bucket(user_id: str, *, cluster: bool) -> int:
    """The bucket of ``user_id``'s keys (always 0 on one Redis)."""
    return zlib.crc32(encode_id("user_id", user_id)) % BUCKETS if cluster else 0


def user_key(prefix: str, kind: str, user_id: str, *, cluster: bool) -> str:
    """The key of ``user_id``'s ``kind`` data (``slots`` or ``events``)."""
    if not cluster:
        return f"{prefix}:{kind}:{user_id}"
    return f"{prefix}:{kind}:{{b{bucket(user_id, cluster=True)}}}:{user_id}"
