"""The collector's wire over Redis (``app.services.collector_wire``): requests on a
pub/sub channel only the leading collector listens on, replies on a channel per server,
the status report in a key with an expiry, read every ``poll_seconds`` by each server."""

from __future__ import annotations

import asyncio
import contextlib

from redis.asyncio import Redis

from app.backends.errors import TierUnavailable
from app.backends.guard import RedisGuard
from app.backends.subscriber import RedisSubscriber
from app.backends.tasks import cancel_and_wait
from app.services.collector_wire import CollectorChannels, CollectorUnavailable, Received

STATUS_KEPT_SECONDS = 30.0  # the report's expiry: gone means no collector lately


class RedisServerEnd:
    """A server's end: listens on its replies channel, reads the status key."""

    def __init__(
        self,
        redis: Redis,
        guard: RedisGuard,
        channels: CollectorChannels,
        replica_id: str,
        poll_seconds: float = 1.0,
    ) -> None:
        self.redis = redis
        self.guard = guard
        self.channels = channels
        self.poll_seconds = poll_seconds
        self._replies_channel = channels.replies(replica_id)
        self._replies: RedisSubscriber | None = None
        self._on_status: Received | None = None
        self._poll_task: asyncio.Task[None] | None = None

    @property
    def listening(self) -> bool:
        return self._replies is not None and self._replies.listening

    def start(self, on_reply: Received, on_status: Received) -> None:
        self._on_status = on_status
        self._replies = RedisSubscriber(
            self.redis,
            self._replies_channel,
            on_reply,
            timeout_seconds=self.guard.timeout_seconds,
        )
        self._replies.start()
        self._poll_task = asyncio.create_task(self._poll(), name="collector-status")

    async def wait_listening(self, seconds: float) -> bool:
        """True once the replies channel is subscribed (tests, start-up)."""
        return self._replies is not None and await self._replies.wait_subscribed(seconds)

    async def read_status(self) -> None:
        """Reads the status key now and hands what it holds to the handler. Raises
        TierUnavailable."""
        raw = await self.guard.run(lambda: self.redis.get(self.channels.status), "collector status")
        if raw is not None and self._on_status is not None:
            self._on_status(raw if isinstance(raw, bytes) else raw.encode())

    async def _poll(self) -> None:
        while True:
            with contextlib.suppress(TierUnavailable):  # the guard logs the outage once
                await self.read_status()
            await asyncio.sleep(self.poll_seconds)

    async def send(self, payload: bytes) -> None:
        try:
            listeners = await self.guard.run(
                lambda: self.redis.publish(self.channels.requests, payload), "collector request"
            )
        except TierUnavailable as error:
            raise CollectorUnavailable(f"cannot reach the collector: {error}") from None
        if not listeners:
            raise CollectorUnavailable("no collector is listening")

    async def close(self) -> None:
        await cancel_and_wait([self._poll_task])
        if self._replies is not None:
            await self._replies.close()


class RedisCollectorEnd:
    """The collector's end: listens on the requests channel, publishes replies to each
    server's channel and writes the status key."""

    def __init__(self, redis: Redis, guard: RedisGuard, channels: CollectorChannels) -> None:
        self.redis = redis
        self.guard = guard
        self.channels = channels
        self._requests: RedisSubscriber | None = None

    def start(self, on_request: Received) -> None:
        self._requests = RedisSubscriber(
            self.redis,
            self.channels.requests,
            on_request,
            timeout_seconds=self.guard.timeout_seconds,
        )
        self._requests.start()

    async def wait_listening(self, seconds: float) -> bool:
        return self._requests is not None and await self._requests.wait_subscribed(seconds)

    async def reply(self, reply_to: str, payload: bytes) -> None:
        channel = self.channels.replies(reply_to)
        await self.guard.run(lambda: self.redis.publish(channel, payload), "collector reply")

    async def report(self, payload: bytes) -> None:
        kept_ms = int(STATUS_KEPT_SECONDS * 1000)
        await self.guard.run(
            lambda: self.redis.set(self.channels.status, payload, px=kept_ms), "collector status"
        )

    async def close(self) -> None:
        if self._requests is not None:
            await self._requests.close()
            self._requests = None
