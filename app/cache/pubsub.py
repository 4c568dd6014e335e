"""Cache invalidation messages across replicas over Redis pub/sub.

Every replica publishes on one channel (``<namespace>:invalidate``) JSON messages::

    {"origin": "<replica id>", "families": ["ticker", ...], "keys": ["...", ...],
     "scope": "all" | "l1"}

and listens there, handing the messages of OTHER replicas to a callback. Pub/sub
does not queue: whatever is published while a listener is disconnected is lost to
it, so after every reconnection the listener calls ``on_reconnect`` (the cache then
clears its L1). The listening (reconnection with back-off, PING liveness, clean stop) is
``app.backends.subscriber.RedisSubscriber``'s; this module is the messages' meaning.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis

from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.subscriber import RedisSubscriber
from app.resilience.redis_breaker import redis_guard

log = logging.getLogger(__name__)

SCOPES = ("all", "l1")

Scope = Literal["all", "l1"]


@dataclass(frozen=True, slots=True)
class Invalidation:
    """One invalidation: drop these families and keys, from every tier or only from L1."""

    origin: str
    families: tuple[str, ...] = ()
    keys: tuple[str, ...] = ()
    scope: Scope = "all"

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "origin": self.origin,
                "families": list(self.families),
                "keys": list(self.keys),
                "scope": self.scope,
            }
        )

    @staticmethod
    def decode(data: bytes | str) -> Invalidation:
        """Raises ValueError for anything but a well-formed message."""
        try:
            message = orjson.loads(data)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not JSON: {exc}") from None
        if not isinstance(message, dict):
            raise ValueError("not a JSON object")
        origin = message.get("origin")
        families = message.get("families", [])
        keys = message.get("keys", [])
        scope = message.get("scope", "all")
        if not isinstance(origin, str) or not origin:
            raise ValueError("origin must be a non-empty string")
        for field, values in (("families", families), ("keys", keys)):
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise ValueError(f"{field} must be a list of strings")
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        return Invalidation(origin, tuple(families), tuple(keys), scope)


MessageCallback = Callable[[Invalidation], Awaitable[None] | None]
ReconnectCallback = Callable[[], Awaitable[None] | None]


class InvalidationBus:
    """Publishes invalidations and delivers other replicas' ones to ``on_message``.

    ``start()`` launches the listener task; ``wait_subscribed(seconds)`` tells when it
    listens; ``close()`` stops it. Callbacks may be sync or async; their exceptions
    are logged and do not stop the listener. ``min_backoff``, ``max_backoff``,
    ``ping_interval`` and ``poll_seconds`` are the subscriber's (seconds). The channel
    is ``keyspace``'s ``invalidate``: only replicas of one deployment hear each other.
    """

    def __init__(
        self,
        redis: Redis,
        replica_id: str,
        on_message: MessageCallback,
        *,
        keyspace: Keyspace,
        on_reconnect: ReconnectCallback | None = None,
        guard: RedisGuard | None = None,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        ping_interval: float = 5.0,
        poll_seconds: float = 1.0,
    ) -> None:
        if not replica_id:
            raise ValueError("replica_id must not be empty")
        self._redis = redis
        self.replica_id = replica_id
        self.channel = channel = keyspace.name("invalidate")
        self._on_message = on_message
        self._guard = guard or redis_guard()
        self._subscriber = RedisSubscriber(
            redis,
            channel,
            self._deliver,
            on_reconnect=on_reconnect,
            timeout_seconds=self._guard.timeout_seconds,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
            ping_interval=ping_interval,
            poll_seconds=poll_seconds,
        )
        self._publish_counters = OpCounters()
        self.received = 0  # messages from other replicas handed to on_message
        self.malformed = 0

    # -- publishing -------------------------------------------------------------------

    async def publish(
        self,
        *,
        families: Sequence[str] = (),
        keys: Sequence[str] = (),
        scope: Scope = "all",
    ) -> int:
        """Tells the other replicas; returns how many listeners got it (this one included).

        Raises TierUnavailable when Redis is down, ValueError for a bad scope.
        """
        if scope not in SCOPES:
            raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
        payload = Invalidation(self.replica_id, tuple(families), tuple(keys), scope).encode()
        receivers = await self._guard.run(
            lambda: self._redis.publish(self.channel, payload), "PUBLISH", self._publish_counters
        )
        return int(receivers)

    # -- listening --------------------------------------------------------------------

    def start(self) -> None:
        """Launches the listener (once)."""
        self._subscriber.start()

    @property
    def listening(self) -> bool:
        """True while subscribed."""
        return self._subscriber.listening

    @property
    def reconnects(self) -> int:
        """Reconnections of the listener since it started."""
        return self._subscriber.reconnects

    async def wait_subscribed(self, seconds: float) -> bool:
        """True once the listener is subscribed, False after ``seconds``."""
        return await self._subscriber.wait_subscribed(seconds)

    async def close(self) -> None:
        """Stops the listener and waits for it (bounded by its own clean-up)."""
        await self._subscriber.close()

    def snapshot(self) -> dict[str, Any]:
        """The channel, this replica, listening, messages received and malformed,
        reconnections and the publish counters."""
        return {
            "channel": self.channel,
            "replica_id": self.replica_id,
            "listening": self.listening,
            "received": self.received,
            "malformed": self.malformed,
            "reconnects": self.reconnects,
            "published": self._publish_counters.as_dict(),
        }

    async def _deliver(self, data: bytes) -> None:
        try:
            message = Invalidation.decode(data)
        except ValueError as exc:
            self.malformed += 1
            if self.malformed == 1:
                log.warning("ignoring malformed invalidation message (%s): %.200r", exc, data)
            else:
                log.debug("ignoring malformed invalidation message (%s): %.200r", exc, data)
            return
        if message.origin == self.replica_id:
            return
        self.received += 1
        result = self._on_message(message)  # its failure is logged by the subscriber
        if inspect.isawaitable(result):
            await result
