"""Fan-out of live updates to WebSocket clients, across replicas through Redis pub/sub.

``publish`` assigns the channel's next sequence number and serializes the message once.
With Redis, one Lua script does ``INCR virtuoso:realtime:seq:<channel>`` and
``PUBLISH virtuoso:realtime`` atomically (so seq order is publish order on every
replica), and every replica, this one included, delivers what it receives to its own
clients: each client gets each update once. Without Redis, or when the publish fails
(Redis down, breaker open), the message is delivered to this replica's clients only,
with a sequence continuing from the last one seen here.

Delivery only enqueues (see ``connection.py``): the broadcaster never waits for a
client. Subscriptions are indexed per channel and symbol, so a fan-out costs in
proportion to its receivers. Every replica keeps the latest message per
(channel, symbol) it delivered, for the snapshots sent on subscribe and resync. Each
snapshot item, and each channel's whole-channel snapshot, is serialized once per
version and the same string is queued for every client that asks (``_deliver``
invalidates what a message changes): a client asking again and again builds nothing.

Hostile clients: every client message takes a token from its connection's bucket
(over: error ``rate_limited``, counted as an invalid message), and handshakes take one
from their client's bucket (``admit_handshake``; the buckets of at most
``max_handshake_clients`` clients are remembered).

The Redis listener reuses the invalidation bus's loop (``app.cache.pubsub``): bounded
back-off reconnection, PING liveness, clean stop. Pub/sub does not queue: what is
published while a replica's listener reconnects is lost to its clients, who see a
seq gap and may resync.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from typing import Any

import orjson
from redis.asyncio import Redis

from app.backends.errors import TierUnavailable
from app.cache.pubsub import InvalidationBus
from app.backends.guard import OpCounters, RedisGuard
from app.resilience.redis_breaker import redis_guard
from app.realtime import protocol
from app.realtime.connection import Connection, RealtimeStats, WsLimits, token_bucket
from app.resilience.rate_limit import (
    ConnectionLimiter,
    Decision,
    MemoryBuckets,
    RateLimiter,
    RateLimits,
    client_identity,
)

__all__ = ["Broadcaster", "Rejected", "WsLimits"]

log = logging.getLogger(__name__)

REDIS_CHANNEL = "virtuoso:realtime"
SEQ_PREFIX = "virtuoso:realtime:seq:"

# KEYS[1]: the channel's seq counter; ARGV: pub/sub channel, message head, message tail.
PUBLISH_SCRIPT = """
local seq = redis.call('INCR', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2] .. seq .. ARGV[3])
return seq
"""


class Rejected(Exception):
    """A connection over a limit: close it with ``code`` and ``reason``."""

    def __init__(self, code: int, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.cause = code, reason, cause


class _Listener(InvalidationBus):
    """The invalidation bus's robust listener, handing every raw message over."""

    def __init__(self, redis: Redis, replica_id: str, on_raw: Callable[[bytes], None], **kw: Any):
        super().__init__(redis, replica_id, lambda _message: None, **kw)
        self._on_raw = on_raw

    async def _deliver(self, data: bytes) -> None:
        try:
            self._on_raw(data)
        except Exception:
            self.malformed += 1
            log.exception("ignoring an undeliverable realtime message: %.200r", data)


STATUS_RANK = {"pending": 0, "acknowledged": 1, "resolved": 2}
SEED_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between seeding attempts

RecentAlerts = Callable[[], Awaitable[list[dict[str, Any]]]]


class Broadcaster:
    """Live updates of this replica's WebSocket clients (see the module docstring).

    With a ``rate_limiter``, its file's ``websocket`` section sets the per-client
    limits of ``limits`` (connections, handshakes, messages; handshakes unlimited when
    the file says ``enabled: false``)."""

    def __init__(
        self,
        replica_id: str,
        redis: Redis | None = None,
        guard: RedisGuard | None = None,
        limits: WsLimits = WsLimits(),  # noqa: B008 (frozen)
        clock: Callable[[], float] = time.time,
        *,
        rate_limiter: RateLimiter | None = None,
        known_symbols: Callable[[], Container[str]] | None = None,
        redis_channel: str = REDIS_CHANNEL,
        server_clock: Callable[[], float] | None = None,
    ) -> None:
        self.replica_id = replica_id
        if rate_limiter is not None:
            limits = with_rate_limits(limits, rate_limiter.limits)
        self.limits = limits
        self.stats = RealtimeStats()
        self.stats.latencies = type(self.stats.latencies)(maxlen=limits.latency_samples)
        self._clock = clock  # wall time of publish and send: delivery latency
        # What "server_time" reports: the clock of the data's generated_at, so pages
        # can tell the data's age whatever their own clock says.
        self._server_clock = server_clock or clock
        self._redis = redis
        self._guard = guard or redis_guard()
        self._rate_limiter = rate_limiter
        self._per_client = ConnectionLimiter(limits.max_connections_per_client)
        self._known_symbols = known_symbols
        self.redis_channel = redis_channel
        self.connections: set[Connection] = set()
        self._idle = asyncio.Event()  # set while no connection is open
        self._idle.set()
        # channel → symbol (None: whole-channel subscribers) → connections
        self._index: dict[str, dict[str | None, set[Connection]]] = {
            c: {} for c in protocol.CHANNELS
        }
        self._latest: dict[str, dict[str | None, dict[str, Any]]] = {
            c: {} for c in protocol.CHANNELS
        }
        self._seq: dict[str, int] = dict.fromkeys(protocol.CHANNELS, 0)
        # Serialized once per version: snapshot items per (channel, symbol) and the
        # whole-channel snapshot per channel; dropped by _deliver when they change.
        self._items: dict[str, dict[str | None, str]] = {c: {} for c in protocol.CHANNELS}
        self._whole: dict[str, str] = {}
        # The alerts channel: alert id → message (see the module docstring).
        self._alerts: dict[str, dict[str, Any]] = {}
        self._recent_alerts: RecentAlerts | None = None
        self._seeding: asyncio.Task[None] | None = None
        self.alerts_seeded = asyncio.Event()
        self.seed_retry_seconds = SEED_RETRY_SECONDS
        self._handshakes = MemoryBuckets(time.monotonic, max(100, limits.max_handshake_clients))
        self._handshake_family = (
            token_bucket("ws_handshake", limits.handshake_rate, limits.handshake_burst)
            if limits.handshake_burst > 0
            else None
        )
        self._counters = OpCounters()
        self._script = redis.register_script(PUBLISH_SCRIPT) if redis is not None else None
        self._listener = (
            _Listener(
                redis, replica_id, self._on_redis_message, channel=redis_channel, guard=self._guard
            )
            if redis is not None
            else None
        )

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The HTTP rate limiter this broadcaster shares (its client identity, its
        trusted-proxy setting), if any."""
        return self._rate_limiter

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if self._listener is not None:
            self._listener.start()
        if self._recent_alerts is not None and self._seeding is None:
            self._seeding = asyncio.create_task(self._seed_alerts(), name="seed-alerts")

    def seed_alerts_from(self, recent_alerts: RecentAlerts) -> None:
        """``recent_alerts()``: the store's newest alerts (``Alert.to_dict()`` shapes,
        at least ``protocol.ALERTS_KEPT`` of them when there are); read by ``start``
        in the background for the alerts snapshot, retried with back-off while it
        raises (the store down); ``alerts_seeded`` is set once it succeeded, and clients
        already subscribed to alerts then get the channel's snapshot again."""
        self._recent_alerts = recent_alerts

    async def _seed_alerts(self) -> None:
        assert self._recent_alerts is not None
        delay, longest = self.seed_retry_seconds
        while True:
            try:
                alerts = await self._recent_alerts()
            except Exception as exc:  # the store down: the snapshot waits for it
                log.warning("alerts snapshot not seeded yet (retry in %.0f s): %s", delay, exc)
                await asyncio.sleep(delay)
                delay = min(longest, delay * 2)
                continue
            self.seed_alerts(alerts)
            self.alerts_seeded.set()
            self._resend_alerts_snapshots()
            return

    def _resend_alerts_snapshots(self) -> None:
        """Clients that subscribed to alerts before the seed get the seeded snapshot."""
        for conn in set().union(*self._index[protocol.ALERTS].values()):
            if protocol.ALERTS in conn.subscriptions:
                self._send_snapshot(conn, protocol.ALERTS, conn.subscriptions[protocol.ALERTS])

    def seed_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        """Keeps these alerts (``Alert.to_dict()`` shapes) for the alerts snapshot, as
        items with seq 0 and ``generated_at`` their latest change (epoch ms); an alert
        already kept from a message keeps that version unless this status is further
        along."""
        for alert in alerts:
            changed = alert.get("resolved_at_ms") or alert.get("acknowledged_at_ms")
            message = {
                "symbol": alert.get("symbol"),
                "seq": 0,
                "generated_at": changed or alert.get("created_at_ms") or 0,
                "data": alert,
            }
            self._keep_alert(message, replace_on_tie=False)

    async def wait_ready(self, seconds: float) -> bool:
        """True once this replica listens to Redis (at once without Redis)."""
        return True if self._listener is None else await self._listener.wait_subscribed(seconds)

    async def close(self) -> None:
        """Closes every client (1001) and stops listening; bounded."""
        for conn in list(self.connections):
            conn.request_close(protocol.CLOSE_GOING_AWAY, "server shutting down", "shutdown")
        if self._seeding is not None:
            self._seeding.cancel()
            await asyncio.gather(self._seeding, return_exceptions=True)
        if self._listener is not None:
            await self._listener.close()
        await self.wait_released(self.limits.close_timeout + 1)

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, channel: str, symbol: str | None, data: Any, generated_at_ms: int
    ) -> int:
        """Publishes to every replica's subscribers; returns the message's seq."""
        if channel not in protocol.CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        published_at = self._clock()
        head, tail = protocol.update_parts(channel, symbol, generated_at_ms, data, published_at)
        self.stats.published[channel] += 1
        script = self._script
        if script is not None:
            assert self._redis is not None
            args = [self.redis_channel, f"{published_at!r} {head}", tail]
            try:
                seq = await self._guard.run(
                    lambda: script(keys=[SEQ_PREFIX + channel], args=args, client=self._redis),
                    "realtime PUBLISH",
                    self._counters,
                )
                return int(seq)
            except TierUnavailable as exc:
                self.stats.publish_fallbacks += 1
                log.debug("realtime publish delivered locally only: %s", exc)
        seq = self._seq[channel] + 1
        self._deliver(head + str(seq) + tail, published_at)
        return seq

    async def publish_alert(self, alert: dict[str, Any], generated_at_ms: int) -> int:
        """An alert (channel "alerts"; its "symbol" key, if any, is the symbol)."""
        return await self.publish(protocol.ALERTS, alert.get("symbol"), alert, generated_at_ms)

    def _on_redis_message(self, data: bytes) -> None:
        stamp, _, text = data.decode().partition(" ")
        self._deliver(text, float(stamp))

    def _deliver(self, text: str, published_at: float) -> None:
        message = orjson.loads(text)
        channel, symbol, seq = message["channel"], message["symbol"], message["seq"]
        self._seq[channel] = max(self._seq[channel], seq)
        if channel == protocol.ALERTS:
            self._keep_alert(message, replace_on_tie=True)
        else:
            self._latest[channel][symbol] = message
            self._items[channel].pop(symbol, None)
            self._whole.pop(channel, None)
        self.stats.delivered[channel] += 1
        by_symbol = self._index[channel]
        if not by_symbol:
            return
        if symbol is None:
            targets: set[Connection] = set().union(*by_symbol.values())
        else:
            targets = by_symbol.get(None, set()) | by_symbol.get(symbol, set())
        if channel == protocol.ALERTS:
            for conn in targets:
                conn.enqueue_alert(text, published_at)
        else:
            for conn in targets:
                conn.enqueue_update(channel, symbol, text, published_at)

    def _keep_alert(self, message: dict[str, Any], *, replace_on_tie: bool) -> None:
        """Keeps an alert message for the snapshot under its alert id (one without an
        id, under its seq), unless the kept version's status is further along (or as
        far, with ``replace_on_tie`` False); then drops the oldest beyond the bound."""
        key = alert_key(message)
        kept = self._alerts.get(key)
        if kept is not None:
            rank, kept_rank = status_rank(message), status_rank(kept)
            if rank < kept_rank or (rank == kept_rank and not replace_on_tie):
                return
        self._alerts[key] = message
        self._items[protocol.ALERTS].pop(key, None)
        self._whole.pop(protocol.ALERTS, None)
        if len(self._alerts) > protocol.ALERTS_KEPT:
            oldest = min(self._alerts, key=lambda k: alert_order(self._alerts[k], k))
            del self._alerts[oldest]
            self._items[protocol.ALERTS].pop(oldest, None)

    def kept_alerts(self) -> list[dict[str, Any]]:
        """The alerts the snapshot carries (their data), newest first."""
        return [self._alerts[key]["data"] for key in self._newest_alert_keys(None)]

    def _newest_alert_keys(self, symbols: list[str] | None) -> list[str]:
        keys = [
            key
            for key, message in self._alerts.items()
            if symbols is None or message["symbol"] in (None, *symbols)  # as fanned out
        ]
        return sorted(keys, key=lambda k: alert_order(self._alerts[k], k), reverse=True)

    # -- connections --------------------------------------------------------------------

    def identify(self, headers: Any, remote_addr: str | None) -> str:
        if self._rate_limiter is not None:
            return self._rate_limiter.identify(headers, remote_addr)
        return client_identity(headers.get("Authorization"), remote_addr)

    async def admit_handshake(self, client_id: str) -> Decision | None:
        """Counts one handshake of ``client_id``: None when allowed (or unlimited), else
        the refusal (its ``retry_after_seconds`` for the Retry-After header)."""
        if self._handshake_family is None:
            return None
        decision = await self._handshakes.hit(client_id, self._handshake_family)
        if decision.allowed:
            return None
        self.stats.disconnects["rejected_handshake_rate"] += 1
        return decision

    async def connect(self, ws: Any, client_id: str) -> Connection:
        """Registers a client; raises Rejected when over a connection limit."""
        if len(self.connections) >= self.limits.max_connections:
            self.stats.disconnects["rejected_server_full"] += 1
            raise Rejected(protocol.CLOSE_TRY_LATER, "server full", "rejected_server_full")
        if self._rate_limiter is not None:
            allowed = await self._rate_limiter.acquire_connection(client_id)
        else:
            allowed = self._per_client.acquire(client_id)
        if not allowed:
            self.stats.disconnects["rejected_per_client"] += 1
            raise Rejected(
                protocol.CLOSE_POLICY,
                "too many connections from this client",
                "rejected_per_client",
            )
        conn = Connection(
            ws, client_id, self.limits, self.stats, self._clock, server_clock=self._server_clock
        )
        self.connections.add(conn)
        self._idle.clear()
        self.stats.connections = len(self.connections)
        self.stats.opened += 1
        return conn

    def release(self, conn: Connection) -> None:
        """Unregisters a client (idempotent) and frees its per-client slot."""
        if conn not in self.connections:
            return
        self.connections.discard(conn)
        if not self.connections:
            self._idle.set()
        for channel in list(conn.subscriptions):
            self._unindex(conn, channel, None)
        conn.discard_queued()
        if self._rate_limiter is not None:
            self._rate_limiter.release_connection(conn.client_id)
        else:
            self._per_client.release(conn.client_id)
        self.stats.connections = len(self.connections)
        self.stats.disconnects[conn.close_cause or "client"] += 1

    def handle_message(self, conn: Connection, raw: str | bytes | None) -> None:
        """One client message (a text or binary frame's payload): answers it (snapshot,
        pong, error) through the connection's queue. Never raises for any input."""
        try:
            if not conn.take_message_token(time.monotonic()):
                raise protocol.ProtocolError(
                    "rate_limited",
                    f"more than {self.limits.message_burst} messages at once or "
                    f"{self.limits.message_rate:g} per second",
                )
            message = protocol.parse_client_message(
                raw, max_bytes=self.limits.max_message_bytes, known_symbols=self._known_symbols
            )
            if message.type == "subscribe":
                self._subscribe(conn, message.channels, message.symbols)
            elif message.type == "unsubscribe":
                for channel in message.channels:
                    self._unindex(conn, channel, message.symbols)
            elif message.type == "resync":
                self._resync(conn, message.channels)
            elif message.type == "pong":
                conn.pong(message.nonce)
            else:
                pong = protocol.dumps({"type": "pong", "server_time": self._server_clock()})
                conn.reply_keyed(("pong",), pong)
        except protocol.ProtocolError as exc:
            conn.reply(protocol.error(exc.code, exc.message))
            conn.note_bad_message(time.monotonic())

    def _subscribe(
        self, conn: Connection, channels: tuple[str, ...], symbols: tuple[str, ...] | None
    ) -> None:
        added: dict[str, set[str] | None] = {}
        count = conn.subscription_count
        for channel in channels:
            current = conn.subscriptions.get(channel, set())
            if current is None:
                continue  # already every symbol
            if symbols is None:
                added[channel] = None
                count += 1 - len(current)
            else:
                fresh = set(symbols) - current
                added[channel] = fresh
                count += len(fresh)
        if count > self.limits.max_subscriptions:
            raise protocol.ProtocolError(
                "too_many_subscriptions",
                f"at most {self.limits.max_subscriptions} subscriptions per connection",
            )
        for channel, wanted in added.items():
            index = self._index[channel]
            if wanted is None:
                self._unindex(conn, channel, None)
                conn.subscriptions[channel] = None
                index.setdefault(None, set()).add(conn)
            else:
                conn.subscriptions.setdefault(channel, set()).update(wanted)  # type: ignore[union-attr]
                for symbol in wanted:
                    index.setdefault(symbol, set()).add(conn)
        for channel in channels:
            self._send_snapshot(conn, channel, added.get(channel, set()))

    def _unindex(self, conn: Connection, channel: str, symbols: tuple[str, ...] | None) -> None:
        """Drops the channel (symbols None) or those symbols of it from the subscription.
        Dropping symbols from a whole-channel subscription does nothing."""
        current = conn.subscriptions.get(channel, set())
        if current is None and symbols is not None:
            return
        keys: list[str | None] = [None] if current is None else list(current)
        if symbols is not None:
            keys = [s for s in symbols if s in current]  # type: ignore[operator]
            current.difference_update(symbols)  # type: ignore[union-attr]
        if symbols is None or not current:
            conn.subscriptions.pop(channel, None)
        index = self._index[channel]
        for key in keys:
            members = index.get(key)
            if members is not None:
                members.discard(conn)
                if not members:
                    del index[key]

    def _resync(self, conn: Connection, channels: tuple[str, ...]) -> None:
        missing = [c for c in channels if c not in conn.subscriptions]
        if missing:
            raise protocol.ProtocolError("not_subscribed", f"not subscribed to {missing}")
        for channel in channels:
            self._send_snapshot(conn, channel, conn.subscriptions[channel])

    def _send_snapshot(self, conn: Connection, channel: str, symbols: set[str] | None) -> None:
        """Queues the channel's snapshot (replacing one still waiting for the channel):
        every symbol (None) or those symbols (sorted), from the serialized items."""
        if symbols is None:
            text = self._whole.get(channel)
            if text is None:
                text = self._whole[channel] = self._snapshot_text(channel, None)
        else:
            text = self._snapshot_text(channel, sorted(symbols))
        conn.reply_keyed(("snapshot", channel), text)

    def _snapshot_text(self, channel: str, symbols: list[str] | None) -> str:
        """The snapshot of every kept value (symbols None) or of those symbols'; the
        alerts channel's: its kept alerts of those symbols, newest first."""
        items = self._items[channel]
        latest: dict[Any, dict[str, Any]]
        if channel == protocol.ALERTS:
            latest = self._alerts
            keys: list[Any] = self._newest_alert_keys(symbols)
        else:
            latest = self._latest[channel]
            keys = list(latest) if symbols is None else [s for s in symbols if s in latest]
        parts = []
        for key in keys:
            part = items.get(key)
            if part is None:
                part = items[key] = protocol.snapshot_item(latest[key])
            parts.append(part)
        return protocol.snapshot_from_items(channel, parts)

    def snapshot(self) -> dict[str, Any]:
        """Metrics and state, for /health or Prometheus."""
        return {
            "replica_id": self.replica_id,
            "redis": None
            if self._listener is None
            else {**self._listener.snapshot(), "published": self._counters.as_dict()},
            **self.stats.as_dict(),
        }

    async def wait_released(self, seconds: float) -> None:
        """Waits (at most ``seconds``) until every connection is released."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()


def alert_key(message: dict[str, Any]) -> str:
    """The alert id of an alert message (``data.id``), else ``#<seq>``."""
    data = message.get("data")
    alert_id = data.get("id") if isinstance(data, dict) else None
    return alert_id if isinstance(alert_id, str) else f"#{message['seq']}"


def status_rank(message: dict[str, Any]) -> int:
    """How far along an alert message's status is (pending 0 … resolved 2; none: 0)."""
    data = message.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    return STATUS_RANK.get(status, 0) if isinstance(status, str) else 0


def alert_order(message: dict[str, Any], key: str) -> tuple[int, str]:
    """Sort key of a kept alert: (created_at_ms, else generated_at; key)."""
    data = message.get("data")
    created = data.get("created_at_ms") if isinstance(data, dict) else None
    if not isinstance(created, int):
        created = message.get("generated_at") or 0
    return created, key


def with_rate_limits(limits: WsLimits, rate_limits: RateLimits) -> WsLimits:
    """``limits`` with the per-client values of the rate-limit file's ``websocket``."""
    ws = rate_limits.websocket
    return dataclasses.replace(
        limits,
        max_connections_per_client=ws.max_connections_per_client,
        handshake_rate=ws.handshake_rate,
        handshake_burst=ws.handshake_burst if rate_limits.enabled else 0,
        message_rate=ws.message_rate,
        message_burst=ws.message_burst,
    )
