"""enginescope.engines.redis: the Redis backend, for several replicas of one app.

:class:`RedisSlotLedger` keeps the per-user engine limit as leases in Redis;
:class:`RedisWebSocketBridge` carries each user's events through a Redis stream to the
replica holding the user's sockets. Both implement the protocols of the in-process
versions (:class:`~enginescope.engines.slots.SlotLedger`,
:class:`~enginescope.engines.bridge.ResumableBridge`). Needs the ``redis`` extra.
"""

from .bridge import RedisWebSocketBridge
from .slots import RedisSlotLedger

__all__ = ["RedisSlotLedger", "RedisWebSocketBridge"]
