"""The collector's wire over the local channel between a server and its collector child
(``app.backends.local_channel``), where there is no Redis: the same requests, replies
and status reports as over Redis (``collector_wire``), plus what Redis would otherwise
carry — the views of each snapshot (into the server's in-process tier), the live
updates and alerts (to its WebSocket clients) and the alert store's calls (the server
holds the store).

Message kinds: ``request`` (server → child), ``reply``, ``status``, ``views``, ``live``,
``alert`` (child → server), and the ``store`` call (child → server).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from app.backends.local_channel import Channel, ChannelError
from app.backends.tasks import cancel_and_wait
from app.services.collector_wire import (
    CollectorUnavailable,
    Received,
    Reply,
    WireError,
    decode_reply,
    decode_request,
    encode_reply,
)

CHILD_GONE = "the collector child exited before answering"
REMEMBERED = 1024  # unanswered requests remembered per channel (a server has ≤ 256 waiting)


class ChannelServerEnd:
    """A server's end: the channel of its current child, attached by whoever accepts the
    child's connection (a restarted child attaches a new one).

    The requests sent on a channel and not answered yet are remembered (the latest
    ``REMEMBERED``; a server keeps fewer than that waiting): when that channel closes —
    the child exited — each is answered here at once with the reason, since no child
    will ever answer it, instead of being awaited until its deadline."""

    def __init__(self) -> None:
        self.channel: Channel | None = None
        self._on_reply: Received | None = None
        self._on_status: Received | None = None
        self._unanswered: dict[str, None] = {}  # ids sent on the current channel, in order
        self._watches: set[asyncio.Task[None]] = set()

    @property
    def listening(self) -> bool:
        return self.channel is not None and not self.channel.closed.is_set()

    def start(self, on_reply: Received, on_status: Received) -> None:
        self._on_reply, self._on_status = on_reply, on_status
        if self.channel is not None:
            self._listen(self.channel)

    def attach(self, channel: Channel) -> None:
        """Talks to the collector through ``channel`` from now on."""
        self.channel = channel
        self._unanswered = {}
        if self._on_reply is not None:
            self._listen(channel)

    def _listen(self, channel: Channel) -> None:
        assert self._on_reply is not None and self._on_status is not None
        unanswered, on_reply = self._unanswered, self._on_reply

        async def replied(raw: bytes) -> None:
            with contextlib.suppress(WireError):  # the link counts what it cannot read
                unanswered.pop(decode_reply(raw).id, None)
            result = on_reply(raw)
            if result is not None:
                await result

        channel.on_notify("reply", replied)
        channel.on_notify("status", self._on_status)
        watch = asyncio.create_task(self._answer_when_closed(channel, unanswered))
        self._watches.add(watch)
        watch.add_done_callback(self._watches.discard)

    async def _answer_when_closed(self, channel: Channel, unanswered: dict[str, None]) -> None:
        await channel.closed.wait()
        for request_id in list(unanswered):  # the link ignores ids no one awaits any more
            if self._on_reply is not None:
                reply = Reply(request_id, ok=False, error=CHILD_GONE)
                result = self._on_reply(encode_reply(reply))
                if result is not None:
                    await result
        unanswered.clear()

    async def send(self, payload: bytes) -> None:
        channel = self.channel
        if channel is None or channel.closed.is_set():
            raise CollectorUnavailable("the collector child is not connected")
        request = decode_request(payload)
        self._unanswered[request.id] = None
        if len(self._unanswered) > REMEMBERED:
            del self._unanswered[next(iter(self._unanswered))]  # the oldest: long given up
        try:
            await channel.notify("request", payload)
        except ChannelError as error:
            self._unanswered.pop(request.id, None)
            raise CollectorUnavailable(f"cannot reach the collector child: {error}") from None

    async def close(self) -> None:
        await cancel_and_wait(list(self._watches))
        if self.channel is not None:
            await self.channel.close()


class ChannelCollectorEnd:
    """The collector child's end of its channel."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    def start(self, on_request: Received) -> None:
        self.channel.on_notify("request", on_request)

    async def wait_listening(self, seconds: float) -> bool:
        return not self.channel.closed.is_set()

    async def reply(self, reply_to: str, payload: bytes) -> None:
        await self.channel.notify("reply", payload)

    async def report(self, payload: bytes) -> None:
        await self.channel.notify("status", payload)

    async def close(self) -> None:
        """The channel outlives the desk (the child closes it when it stops)."""


class ChannelLivePublisher:
    """The child's live updates and alerts, sent to its server's WebSocket clients (a
    ``LivePublisher``; the server gives them their sequence numbers)."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def publish(
        self, channel: str, symbol: str | None, data: Any, generated_at_ms: int
    ) -> int:
        """Sends one update; returns 0 (the server numbers it). Raises ChannelError."""
        await self.channel.notify("live", [channel, symbol, data, generated_at_ms])
        return 0

    async def publish_alert(self, alert: dict[str, Any], generated_at_ms: int) -> int:
        """Sends one alert (``Alert.to_dict()`` shape); returns 0. Raises ChannelError."""
        await self.channel.notify("alert", [alert, generated_at_ms])
        return 0


class ChannelViews:
    """The child pipeline's ``publish``: every view of a snapshot to the server."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    async def __call__(self, bodies: dict[str, bytes], generated_at_ms: int) -> None:
        await self.channel.notify("views", [bodies, generated_at_ms])
