"""Cache invalidation messages across replicas over Redis pub/sub.

Every replica publishes on one channel (``virtuoso:invalidate``) JSON messages::

    {"origin": "<replica id>", "families": ["ticker", ...], "keys": ["...", ...],
     "scope": "all" | "l1"}

and listens there, handing the messages of OTHER replicas to a callback. Pub/sub
does not queue: whatever is published while a listener is disconnected is lost to
it, so after every reconnection the listener calls ``on_reconnect`` (the cache then
clears its L1). The listener reconnects by itself with bounded exponential back-off,
PINGs a quiet connection to notice a dead one, and stops cleanly on ``close()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.cache.redis_tier import OpCounters, RedisGuard, describe

log = logging.getLogger(__name__)

CHANNEL = "virtuoso:invalidate"
SCOPES = ("all", "l1")
_LIVENESS = b"virtuoso-liveness"

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
    are logged and do not stop the listener.
    """

    def __init__(
        self,
        redis: Redis,
        replica_id: str,
        on_message: MessageCallback,
        *,
        on_reconnect: ReconnectCallback | None = None,
        channel: str = CHANNEL,
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
        self.channel = channel
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._guard = guard or RedisGuard()
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._poll_seconds = min(poll_seconds, ping_interval)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._silently_reconnected = False
        self._publish_counters = OpCounters()
        self.received = 0  # messages from other replicas handed to on_message
        self.malformed = 0
        self.reconnects = 0

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
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"invalidation-{self.channel}")

    @property
    def listening(self) -> bool:
        return self._subscribed.is_set()

    async def wait_subscribed(self, seconds: float) -> bool:
        """True once the listener is subscribed, False after ``seconds``."""
        try:
            async with asyncio.timeout(seconds):
                await self._subscribed.wait()
        except TimeoutError:
            return False
        return True

    async def close(self) -> None:
        """Stops the listener and waits for it (bounded by its own clean-up)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    def snapshot(self) -> dict[str, Any]:
        return {
            "channel": self.channel,
            "replica_id": self.replica_id,
            "listening": self.listening,
            "received": self.received,
            "malformed": self.malformed,
            "reconnects": self.reconnects,
            "published": self._publish_counters.as_dict(),
        }

    async def _listen(self) -> None:
        failures = 0
        connected_before = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with asyncio.timeout(self._guard.timeout_seconds * 4):
                    await pubsub.subscribe(self.channel)
                    await self._await_confirmation(pubsub)
                assert pubsub.connection is not None
                # Called on every reconnection redis-py makes by itself under this pubsub.
                pubsub.connection.register_connect_callback(self._note_reconnection)
                self._subscribed.set()
                if connected_before:
                    self.reconnects += 1
                    log.info("pub/sub listener of %s reconnected", self.channel)
                    await self._call(self._on_reconnect, "on_reconnect")
                else:
                    log.debug("pub/sub listener of %s subscribed", self.channel)
                connected_before = True
                failures = 0
                await self._receive(pubsub)
            except (RedisError, OSError, TimeoutError) as exc:
                failures += 1
                level = logging.WARNING if failures == 1 else logging.DEBUG
                log.log(  # one line per listener (invalidations, live updates) per outage
                    level,
                    "pub/sub listener of %s lost Redis (%s); retrying",
                    self.channel,
                    describe(exc),
                )
            except Exception:
                failures += 1
                log.exception("pub/sub listener of %s failed; restarting it", self.channel)
            finally:
                self._subscribed.clear()
                if pubsub.connection is not None:
                    pubsub.connection.deregister_connect_callback(self._note_reconnection)
                with contextlib.suppress(Exception):
                    await pubsub.aclose()
            delay = min(self._max_backoff, self._min_backoff * 2 ** min(failures - 1, 16))
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))

    async def _await_confirmation(self, pubsub: Any) -> None:
        while True:
            message = await pubsub.get_message(timeout=self._poll_seconds)
            if message is not None and message["type"] == "subscribe":
                return

    async def _receive(self, pubsub: Any) -> None:
        loop = asyncio.get_running_loop()
        last_heard = last_ping = loop.time()
        while True:
            message = await pubsub.get_message(timeout=self._poll_seconds)
            now = loop.time()
            if message is not None:
                last_heard = now
                if message["type"] == "message":
                    await self._deliver(message["data"])
            if self._silently_reconnected:
                # redis-py reconnected and re-subscribed under us: messages may be lost.
                self._silently_reconnected = False
                self.reconnects += 1
                log.info("pub/sub listener of %s reconnected", self.channel)
                await self._call(self._on_reconnect, "on_reconnect")
            if now - last_ping >= self._ping_interval:
                last_ping = now
                await pubsub.ping(_LIVENESS)
            if now - last_heard > 2 * self._ping_interval + self._poll_seconds:
                raise RedisConnectionError("no answer to PING on the pub/sub connection")

    def _note_reconnection(self, _connection: Any) -> None:
        self._silently_reconnected = True

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
        await self._call(self._on_message, "on_message", message)

    async def _call(self, callback: Callable[..., Any] | None, what: str, *args: Any) -> None:
        if callback is None:
            return
        try:
            result = callback(*args)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("invalidation %s callback failed", what)
