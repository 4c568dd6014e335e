"""One WebSocket client: its subscriptions, its bounded send queue, its sender and heartbeat.

The hub and the broadcaster only call the synchronous ``send_*``/``enqueue_*``/``reply``
methods, which never wait. ``send_update``/``send_alert`` first try the *direct write*:
when nothing of this client is queued or being sent, the message's frame (built once
per message for every client, ``protocol.frame``) joins the connection's *batch*, and
``flush`` (the hub calls it once per event-loop turn) writes the whole batch to the
socket in one write through the connection's frame writer
(``hypercorn_stream.FRAME_WRITER``) — no task, no await, no per-client encoding, and
one system call per client for every message that arrived in the same turn: a fan-out
costs a few µs per client. Otherwise (a slow client, a reply waiting, no frame writer)
the message is queued, and the connection's own sender task does the (possibly slow)
sends, one at a time, each bounded by ``send_timeout``. A batch the socket cannot take
at once (it holds more than ``direct_write_bytes``, a send is under way, something got
queued meanwhile), or that would grow past ``direct_write_bytes`` itself (a backlog
arriving in one turn), moves to the queue, in order. Order is kept either way: a message
joins the batch only when nothing is waiting before it, or after a batch that is itself
waiting. Queue, by priority:

* replies (snapshots, errors, pongs): answers to the client's own requests, at most
  ``max_queued_replies``; a snapshot of a channel replaces the one of the same channel
  still waiting, in place, and a pong the waiting pong (coalescing: a client that asks
  again and again before reading costs one reply per channel, not one per request);
* alerts: a deque, never dropped or coalesced, at most ``max_queued_alerts``;
* updates: a dict keyed by (channel, symbol); a newer update replaces the queued one in
  place (coalescing), at most ``max_queue`` distinct entries;
* heartbeats: at most one pending.

Every queue is bounded in count, and all of them together in size:
``max_queued_bytes`` characters of queued text (the frames are JSON, nearly all
ASCII: characters ≈ bytes on the wire). Overflow or a send timeout asks for the
close (1013); ``closed`` is then set and the WebSocket route closes the socket.
``request_close`` keeps the first reason.

Client messages of any kind are rate-limited per connection by a token bucket
(``message_rate`` per second, ``message_burst`` at once): see ``take_message_token``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from app.realtime import protocol
from app.realtime.hypercorn_stream import FrameWriter
from app.resilience.rate_limit import MICROS, Family, gcra

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class WsLimits:
    """Limits of the real-time endpoint (per replica). Times in seconds."""

    max_connections: int = 10_000  # open WebSockets of this replica; more → 1013
    max_connections_per_client: int = 5  # without a RateLimiter; more → 1008
    max_subscriptions: int = 200  # (channel, symbol) pairs + whole channels per connection
    max_message_bytes: int = 4096  # a bigger client message → error "too_large"
    max_queue: int = 256  # distinct queued updates per connection; more → 1013
    max_queued_alerts: int = 1000  # queued alerts per connection; more → 1013
    max_queued_replies: int = 16  # queued snapshots/errors/pongs per connection; more → 1013
    max_queued_bytes: int = 1 << 20  # characters queued per connection, all queues; more → 1013
    message_rate: float = 5.0  # client messages per second per connection, sustained
    message_burst: int = 20  # ... and at once; over → error "rate_limited" (counts as bad)
    handshake_rate: float = 1.0  # WebSocket handshakes per second per client, sustained
    handshake_burst: int = 10  # ... and at once (0: unlimited); over → HTTP 429
    max_handshake_clients: int = 10_000  # clients whose handshake buckets are remembered
    send_timeout: float = 2.0  # one send longer than this → 1013
    heartbeat_seconds: float = 15.0
    pong_timeout: float = 10.0  # no pong within this after a heartbeat → 1011
    max_bad_messages: int = 5  # invalid messages within bad_message_window → 1008
    bad_message_window: float = 60.0
    close_timeout: float = 1.0  # bound on sending the close frame to a stuck client
    # Socket bytes a connection may hold for a frame still to be written at once (a
    # direct write); past it, or 0: through its queue and sender. hypercorn's own sends
    # wait past 64 KiB (asyncio's high-water mark), too.
    direct_write_bytes: int = 64 * 1024
    latency_samples: int = 10_000  # publish → send latencies kept for metrics


@dataclass(slots=True)
class RealtimeStats:
    """Counters for metrics. ``latencies``: recent publish → send times (seconds)."""

    connections: int = 0
    opened: int = 0
    sent: Counter[str] = field(default_factory=Counter)  # by channel (+ "control")
    direct: Counter[str] = field(default_factory=Counter)  # of sent: written directly
    coalesced: Counter[str] = field(default_factory=Counter)  # by channel
    dropped: Counter[str] = field(default_factory=Counter)  # queued, lost at close, by channel
    disconnects: Counter[str] = field(default_factory=Counter)  # by reason
    published: Counter[str] = field(default_factory=Counter)  # by channel, on this replica
    delivered: Counter[str] = field(default_factory=Counter)  # by channel, fan-outs run here
    publish_fallbacks: int = 0  # Redis unavailable: delivered to this replica only
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=10_000))
    on_latency: Callable[[str, float], None] | None = None  # a histogram's observe()
    on_data_age: Callable[[str, float], None] | None = None  # a histogram's observe()

    def record_latency(self, channel: str, seconds: float) -> None:
        self.latencies.append(seconds)
        if self.on_latency is not None:
            self.on_latency(channel, seconds)

    def record_data_age(self, channel: str, seconds: float) -> None:
        if self.on_data_age is not None:
            self.on_data_age(channel, seconds)

    def as_dict(self) -> dict[str, Any]:
        ordered = sorted(self.latencies)

        def p(q: float) -> float:
            return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 6)

        return {
            "connections": self.connections,
            "opened": self.opened,
            "sent": dict(self.sent),
            "direct": dict(self.direct),
            "coalesced": dict(self.coalesced),
            "dropped": dict(self.dropped),
            "disconnects": dict(self.disconnects),
            "published": dict(self.published),
            "delivered": dict(self.delivered),
            "publish_fallbacks": self.publish_fallbacks,
            "latency_seconds": {"p50": p(0.5), "p99": p(0.99), "max": ordered[-1]}
            if ordered
            else None,
        }


# A queued message: its text, its channel ("" for control messages), and when it was
# published (epoch seconds, None for control messages).
Queued = tuple[str, str, float | None]
# A batched message: its frame, channel, symbol, text and published_at (epoch seconds).
Batched = tuple[bytes, str, str | None, str, float]


class Connection:
    """State of one client. ``ws``: anything with ``async send(str)`` (Quart's websocket);
    ``write_frame``: the stream's frame writer (None: every message through the queue)."""

    _ids = itertools.count(1)

    def __init__(
        self,
        ws: Any,
        client_id: str,
        limits: WsLimits,
        stats: RealtimeStats,
        clock: Callable[[], float] = time.time,
        *,
        server_clock: Callable[[], float] | None = None,
        write_frame: FrameWriter | None = None,
    ) -> None:
        self.id = next(self._ids)
        self.ws = ws
        self._write_frame = write_frame if limits.direct_write_bytes > 0 else None
        self._batch: list[Batched] = []  # frames for the socket at the end of this turn
        self._batch_bytes = 0  # of the batch's frames, at most direct_write_bytes
        self._sending = False  # the sender holds a message between queue and socket
        self.client_id = client_id
        self.limits = limits
        self.stats = stats
        self.clock = clock
        self.server_clock = server_clock or clock
        self.subscriptions: dict[str, set[str] | None] = {}  # None: every symbol
        # key: ("snapshot", channel) | ("pong",) | ("error", n) — see reply_keyed
        self._replies: dict[tuple[Any, ...], Queued] = {}
        self._reply_ids = itertools.count()
        self._bytes = 0  # characters of every queued text (replies, alerts, updates)
        self._message_tat: int | None = None  # the message bucket's GCRA state (µs)
        self._message_family = token_bucket("messages", limits.message_rate, limits.message_burst)
        self._alerts: deque[Queued] = deque()
        self._updates: dict[tuple[str, str | None], Queued] = {}
        self._heartbeat: Queued | None = None
        self._wake = asyncio.Event()
        self.closed = asyncio.Event()
        self.close_code: int | None = None
        self.close_reason = ""
        self.close_cause = ""
        self._bad: deque[float] = deque()
        self._nonces = itertools.count(1)
        self._awaited_nonce: int | None = None
        self._pong = asyncio.Event()

    def __repr__(self) -> str:
        return f"<Connection {self.id} {self.client_id}>"

    @property
    def subscription_count(self) -> int:
        return sum(1 if s is None else len(s) for s in self.subscriptions.values())

    @property
    def queued(self) -> int:
        """Messages waiting to be sent (replies, alerts, updates; not the heartbeat)."""
        return len(self._replies) + len(self._alerts) + len(self._updates)

    @property
    def queued_bytes(self) -> int:
        """Characters of the messages waiting to be sent (≈ bytes on the wire)."""
        return self._bytes

    def _fits(self, added: int) -> bool:
        """Whether ``added`` more characters stay within ``max_queued_bytes``; if not,
        asks for the close (1013) and returns False."""
        if self._bytes + added <= self.limits.max_queued_bytes:
            return True
        self.request_close(
            protocol.CLOSE_TRY_LATER,
            f"too slow: more than {self.limits.max_queued_bytes} bytes waiting",
            "bytes_full",
        )
        return False

    # -- sending and enqueueing (never waits) ------------------------------------------

    def _writable(self) -> bool:
        """Whether a frame may go straight to the socket: nothing waits before it."""
        return (
            self._write_frame is not None
            and not self._sending
            and not self._replies
            and not self._alerts
            and not self._updates
            and not self.closed.is_set()
        )

    def send_update(
        self, channel: str, symbol: str | None, text: str, frame: bytes, at: float
    ) -> bool:
        """Adds the update's ``frame`` to the batch when it can go straight to the
        socket (``flush`` writes it), else queues ``text`` (``enqueue_update``). True:
        batched (the caller counts it as sent, see ``RealtimeStats.direct``, and must
        have ``flush`` called in this loop turn); False: queued, coalesced or closing."""
        if self._batchable(frame):
            self._batch.append((frame, channel, symbol, text, at))
            self._batch_bytes += len(frame)
            return True
        self.enqueue_update(channel, symbol, text, at)
        return False

    def send_alert(self, text: str, frame: bytes, at: float) -> bool:
        """An alert: batched when it can go straight to the socket, else queued
        (``enqueue_alert``); True and False as for ``send_update``."""
        if self._batchable(frame):
            self._batch.append((frame, protocol.ALERTS, None, text, at))
            self._batch_bytes += len(frame)
            return True
        self.enqueue_alert(text, at)
        return False

    def _batchable(self, frame: bytes) -> bool:
        """Whether ``frame`` may join the batch: the batch has begun (or nothing waits
        before it) and stays within ``direct_write_bytes``. A batch that would outgrow
        it moves to the queue first (where updates coalesce), and so does what follows."""
        if not self._batch:
            return self._writable()
        if self._batch_bytes + len(frame) <= self.limits.direct_write_bytes:
            return True
        self._spill()
        return False

    def flush(self) -> bool:
        """Writes the batch in one write (True); when the socket cannot take it now (or
        something got queued meanwhile) its messages are queued instead, in order, and
        no longer count as sent directly (False). At close they count as dropped."""
        batch = self._batch
        if not batch:
            return False
        write = self._write_frame
        if write is not None and self._writable():
            data = batch[0][0] if len(batch) == 1 else b"".join(item[0] for item in batch)
            if write(data, self.limits.direct_write_bytes):
                self._batch, self._batch_bytes = [], 0
                return True
        self._spill()
        return False

    def _spill(self) -> None:
        """Moves the batch to the queue, in order (see ``flush``)."""
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        for _, channel, symbol, text, at in batch:
            self.stats.sent[channel] -= 1
            self.stats.direct[channel] -= 1
            if self.closed.is_set():
                self.stats.dropped[channel] += 1
            elif channel == protocol.ALERTS:
                self.enqueue_alert(text, at)
            else:
                self.enqueue_update(channel, symbol, text, at)

    def enqueue_update(self, channel: str, symbol: str | None, text: str, at: float) -> None:
        if self.closed.is_set():
            return
        key = (channel, symbol)
        old = self._updates.get(key)
        if old is None and len(self._updates) >= self.limits.max_queue:
            self.request_close(
                protocol.CLOSE_TRY_LATER,
                f"too slow: more than {self.limits.max_queue} updates waiting",
                "queue_full",
            )
            return
        freed = 0 if old is None else len(old[0])
        if not self._fits(len(text) - freed):
            return
        if old is not None:
            self.stats.coalesced[channel] += 1
        self._updates[key] = (text, channel, at)  # an existing key keeps its place
        self._bytes += len(text) - freed
        self._wake.set()

    def enqueue_alert(self, text: str, at: float) -> None:
        if self.closed.is_set():
            return
        if len(self._alerts) >= self.limits.max_queued_alerts:
            self.request_close(
                protocol.CLOSE_TRY_LATER,
                f"too slow: more than {self.limits.max_queued_alerts} alerts waiting",
                "alerts_full",
            )
            return
        if not self._fits(len(text)):
            return
        self._alerts.append((text, protocol.ALERTS, at))
        self._bytes += len(text)
        self._wake.set()

    def reply(self, text: str) -> None:
        """Queues an answer that is never coalesced (an error)."""
        self.reply_keyed(("error", next(self._reply_ids)), text)

    def reply_keyed(self, key: tuple[Any, ...], text: str) -> None:
        """Queues an answer; one already waiting under ``key`` is replaced in place
        (keys: ``("snapshot", channel)``, ``("pong",)``). More than
        ``max_queued_replies`` waiting, or the byte bound → close 1013."""
        if self.closed.is_set():
            return
        old = self._replies.get(key)
        if old is None and len(self._replies) >= self.limits.max_queued_replies:
            self.request_close(
                protocol.CLOSE_TRY_LATER,
                f"too slow: more than {self.limits.max_queued_replies} replies waiting",
                "replies_full",
            )
            return
        freed = 0 if old is None else len(old[0])
        if not self._fits(len(text) - freed):
            return
        if old is not None:
            self.stats.coalesced["control"] += 1
        self._replies[key] = (text, "", None)
        self._bytes += len(text) - freed
        self._wake.set()

    def take_message_token(self, now: float) -> bool:
        """Counts one client message against the connection's bucket (``now``: a
        monotonic clock, seconds). False: over ``message_rate``/``message_burst``."""
        new_tat, decision = gcra(self._message_tat, round(now * MICROS), self._message_family)
        if new_tat is not None:
            self._message_tat = new_tat
        return decision.allowed

    def request_close(self, code: int, reason: str, cause: str) -> None:
        """Asks the route to close with ``code``; the first request wins."""
        if self.closed.is_set():
            return
        self.close_code, self.close_reason, self.close_cause = code, reason, cause
        self.closed.set()

    def note_bad_message(self, now: float) -> None:
        """Counts an invalid message; too many within the window → close 1008."""
        self._bad.append(now)
        while self._bad and now - self._bad[0] > self.limits.bad_message_window:
            self._bad.popleft()
        if len(self._bad) >= self.limits.max_bad_messages:
            self.request_close(protocol.CLOSE_POLICY, "too many invalid messages", "abuse")

    def pong(self, nonce: Any) -> None:
        if nonce == self._awaited_nonce:
            self._awaited_nonce = None
            self._pong.set()

    def discard_queued(self) -> None:
        """At close: counts what will never be sent as dropped."""
        for _, channel, _ in itertools.chain(self._alerts, self._updates.values()):
            self.stats.dropped[channel] += 1
        for _, channel, _, _, _ in self._batch:
            self.stats.sent[channel] -= 1
            self.stats.direct[channel] -= 1
            self.stats.dropped[channel] += 1
        self._batch, self._batch_bytes = [], 0
        self._replies.clear()
        self._alerts.clear()
        self._updates.clear()
        self._heartbeat = None
        self._bytes = 0

    # -- tasks ------------------------------------------------------------------------

    def _next(self) -> Queued | None:
        item: Queued | None
        if self._replies:
            item = self._replies.pop(next(iter(self._replies)))
        elif self._alerts:
            item = self._alerts.popleft()
        elif self._updates:
            item = self._updates.pop(next(iter(self._updates)))
        else:
            item, self._heartbeat = self._heartbeat, None
            return item
        self._bytes -= len(item[0])
        return item

    async def run_sender(self) -> None:
        """Sends queued messages one at a time until cancelled or closed."""
        timeout = self.limits.send_timeout
        while not self.closed.is_set():
            item = self._next()
            if item is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            text, channel, published_at = item
            self._sending = True
            try:
                async with asyncio.timeout(timeout):
                    await self.ws.send(text)
            except TimeoutError:
                self.request_close(
                    protocol.CLOSE_TRY_LATER,
                    f"too slow: a send took over {timeout:g} s",
                    "send_timeout",
                )
                return
            finally:
                self._sending = False
            self.stats.sent[channel or "control"] += 1
            if published_at is not None:
                self.stats.record_latency(channel, max(0.0, self.clock() - published_at))

    async def run_heartbeat(self) -> None:
        """A heartbeat every ``heartbeat_seconds``; no pong within ``pong_timeout`` → 1011."""
        while not self.closed.is_set():
            await asyncio.sleep(self.limits.heartbeat_seconds)
            nonce = next(self._nonces)
            self._awaited_nonce = nonce
            self._pong.clear()
            message = {"type": "heartbeat", "nonce": nonce, "server_time": self.server_clock()}
            self._heartbeat = (protocol.dumps(message), "", None)
            self._wake.set()
            try:
                async with asyncio.timeout(self.limits.pong_timeout):
                    await self._pong.wait()
            except TimeoutError:
                self.request_close(
                    protocol.CLOSE_HEARTBEAT,
                    f"no pong within {self.limits.pong_timeout:g} s",
                    "heartbeat_timeout",
                )
                return


def token_bucket(name: str, rate: float, burst: int) -> Family:
    """A GCRA family of ``rate`` per second sustained and ``burst`` at once."""
    if rate <= 0 or burst < 1:
        raise ValueError(f"{name}: rate must be > 0 and burst >= 1 (got {rate}, {burst})")
    interval = max(1, round(MICROS / rate))
    return Family(name, rate, burst, interval, interval * burst)
