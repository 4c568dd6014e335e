"""Sequence numbers and the cross-replica pub/sub of live updates; knows no clients.

``publish`` gives an update the channel's next sequence number. With Redis, one Lua
script does ``INCR <namespace>:realtime:seq:<channel>`` and ``PUBLISH
<namespace>:realtime`` atomically (so seq
order is publish order on every replica), and every replica, this one included, hands
what it receives to its ``on_message``: each client gets each update once. Without
Redis, or when the publish fails (Redis down, breaker open), the message goes to this
replica's ``on_message`` only, with a sequence continuing from the last one seen here.

On the Redis channel a message is ``<published_at> <update JSON>`` (``published_at``:
epoch seconds, for the delivery latency). Listening is ``app.backends``'s reconnecting
subscriber: pub/sub does not queue, so what is published while a replica's listener
reconnects is lost to its clients, who see a seq gap and may resync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import orjson
from redis.asyncio import Redis

from app.backends.errors import TierUnavailable
from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.subscriber import RedisSubscriber
from app.realtime import protocol
from app.realtime.connection import RealtimeStats
from app.resilience.redis_breaker import redis_guard

__all__ = ["Broker", "OnMessage"]

log = logging.getLogger(__name__)

# KEYS[1]: the channel's seq counter; ARGV: pub/sub channel, message head, message tail.
PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. seq .. ARGV[3])
return seq
"""

# (the parsed message, its JSON text, published_at in epoch seconds)
OnMessage = Callable[[dict[str, Any], str, float], None]


class Broker:
    """Publishes serialized updates and hands every message back to ``on_message``.

    ``redis``/``guard``: the process's client and guard (no client: this replica alone);
    ``keyspace``: the deployment's namespace of the pub/sub channel and the sequence
    counters, required with ``redis`` (ValueError without).
    ``stats.publish_fallbacks`` counts publishes Redis could not take.
    """

    def __init__(
        self,
        on_message: OnMessage,
        stats: RealtimeStats,
        redis: Redis | None = None,
        guard: RedisGuard | None = None,
        *,
        keyspace: Keyspace | None = None,
    ) -> None:
        if redis is not None and keyspace is None:
            raise ValueError("realtime updates through Redis need the deployment's keyspace")
        keyspace = keyspace or Keyspace("")  # this replica alone: the names are unused
        self._on_message = on_message
        self._stats = stats
        self._redis = redis
        self._guard = guard or redis_guard()
        self.channel = channel = keyspace.name("realtime")
        self._seq_prefix = keyspace.prefix("realtime", "seq")
        self._seq: dict[str, int] = dict.fromkeys(protocol.CHANNELS, 0)
        self._counters = OpCounters()
        self.malformed = 0
        self._script = redis.register_script(PUBLISH_SCRIPT) if redis is not None else None
        self._subscriber = (
            RedisSubscriber(
                redis,
                channel,
                self._on_redis_message,
                timeout_seconds=self._guard.timeout_seconds,
            )
            if redis is not None
            else None
        )

    def start(self) -> None:
        """Starts listening to Redis (nothing to do without it)."""
        if self._subscriber is not None:
            self._subscriber.start()

    async def wait_ready(self, seconds: float) -> bool:
        """True once this replica listens to Redis (at once without Redis)."""
        if self._subscriber is None:
            return True
        return await self._subscriber.wait_subscribed(seconds)

    async def close(self) -> None:
        """Stops listening (bounded)."""
        if self._subscriber is not None:
            await self._subscriber.close()

    async def publish(self, channel: str, head: str, tail: str, published_at: float) -> int:
        """Publishes the update ``head + <seq> + tail`` (``protocol.update_parts``) to
        every replica and returns its seq. Never raises for Redis: a failed publish is
        delivered here only."""
        script = self._script
        if script is not None:
            args = [self.channel, f"{published_at!r} {head}", tail]
            try:
                seq = await self._guard.run(
                    lambda: script(
                        keys=[self._seq_prefix + channel], args=args, client=self._redis
                    ),
                    "realtime PUBLISH",
                    self._counters,
                )
                return int(seq)
            except TierUnavailable as exc:
                self._stats.publish_fallbacks += 1
                log.debug("realtime publish delivered locally only: %s", exc)
        seq = self._seq[channel] + 1
        self.deliver(head + str(seq) + tail, published_at)
        return seq

    def deliver(self, text: str, published_at: float) -> None:
        """Notes the seq of one serialized update (from Redis or this replica) and hands
        it to ``on_message``."""
        message = orjson.loads(text)
        channel = message["channel"]
        self._seq[channel] = max(self._seq[channel], message["seq"])
        self._on_message(message, text, published_at)

    def _on_redis_message(self, data: bytes) -> None:
        try:
            stamp, _, text = data.decode().partition(" ")
            self.deliver(text, float(stamp))
        except Exception:
            self.malformed += 1
            log.exception("ignoring an undeliverable realtime message: %.200r", data)

    def snapshot(self) -> dict[str, Any] | None:
        """The listener's state and the publish counters; None without Redis."""
        if self._subscriber is None:
            return None
        return {
            **self._subscriber.snapshot(),
            "malformed": self.malformed,
            "published": self._counters.as_dict(),
        }
