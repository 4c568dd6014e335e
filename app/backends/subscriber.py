"""A Redis pub/sub listener that reconnects by itself, for one named channel.

``RedisSubscriber(redis, channel, on_message)`` hands every message published on
``channel`` (its raw bytes) to ``on_message``. Pub/sub does not queue: whatever is
published while the listener is disconnected is lost to it, so after every reconnection
(its own, or one redis-py made silently under it) it calls ``on_reconnect``. It
reconnects with bounded, jittered exponential back-off, PINGs a quiet connection to
notice a dead one, logs one warning per outage, and stops cleanly on ``close()``.
Callbacks may be sync or async; their exceptions are logged and do not stop it.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from app.backends.errors import describe
from app.backends.tasks import cancel_and_wait

__all__ = ["MessageCallback", "ReconnectCallback", "RedisSubscriber"]

log = logging.getLogger(__name__)

_LIVENESS = b"virtuoso-liveness"

MessageCallback = Callable[[bytes], Awaitable[None] | None]
ReconnectCallback = Callable[[], Awaitable[None] | None]


class RedisSubscriber:
    """Listens on ``channel`` until closed (see the module docstring).

    ``timeout_seconds``: the bound of one subscription attempt is four times this;
    ``min_backoff``/``max_backoff``: the wait between attempts (seconds, doubling);
    ``ping_interval``: PING a quiet connection this often, and give it up after two
    unanswered; ``poll_seconds``: how long one read waits (at most ``ping_interval``).
    """

    def __init__(
        self,
        redis: Redis,
        channel: str,
        on_message: MessageCallback,
        *,
        on_reconnect: ReconnectCallback | None = None,
        timeout_seconds: float = 0.5,
        min_backoff: float = 0.05,
        max_backoff: float = 5.0,
        ping_interval: float = 5.0,
        poll_seconds: float = 1.0,
    ) -> None:
        self._redis = redis
        self.channel = channel
        self._on_message = on_message
        self._on_reconnect = on_reconnect
        self._timeout = timeout_seconds
        self._min_backoff = min_backoff
        self._max_backoff = max_backoff
        self._ping_interval = ping_interval
        self._poll_seconds = min(poll_seconds, ping_interval)
        self._task: asyncio.Task[None] | None = None
        self._subscribed = asyncio.Event()
        self._silently_reconnected = False
        self.received = 0  # messages handed to on_message
        self.reconnects = 0

    def start(self) -> None:
        """Launches the listener task (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=f"subscriber-{self.channel}")

    @property
    def listening(self) -> bool:
        """True while subscribed."""
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
        await cancel_and_wait([task])

    def snapshot(self) -> dict[str, Any]:
        """``{"channel", "listening", "received", "reconnects"}``."""
        return {
            "channel": self.channel,
            "listening": self.listening,
            "received": self.received,
            "reconnects": self.reconnects,
        }

    async def _listen(self) -> None:
        failures = 0
        connected_before = False
        while True:
            pubsub = self._redis.pubsub()
            try:
                async with asyncio.timeout(self._timeout * 4):
                    await pubsub.subscribe(self.channel)
                    await self._await_confirmation(pubsub)
                assert pubsub.connection is not None
                # Called on every reconnection redis-py makes by itself under this pubsub.
                pubsub.connection.register_connect_callback(self._note_reconnection)
                self._subscribed.set()
                if connected_before:
                    await self._reconnected()
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
                    await pubsub.aclose()  # type: ignore[no-untyped-call]  # untyped in redis-py
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
                    self.received += 1
                    await self._call(self._on_message, "on_message", message["data"])
            if self._silently_reconnected:
                # redis-py reconnected and re-subscribed under us: messages may be lost.
                self._silently_reconnected = False
                await self._reconnected()
            if now - last_ping >= self._ping_interval:
                last_ping = now
                await pubsub.ping(_LIVENESS)
            if now - last_heard > 2 * self._ping_interval + self._poll_seconds:
                raise RedisConnectionError("no answer to PING on the pub/sub connection")

    async def _reconnected(self) -> None:
        self.reconnects += 1
        log.info("pub/sub listener of %s reconnected", self.channel)
        await self._call(self._on_reconnect, "on_reconnect")

    def _note_reconnection(self, _connection: Any) -> None:
        self._silently_reconnected = True

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
            log.exception("pub/sub %s callback of %s failed", what, self.channel)
