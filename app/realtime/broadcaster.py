"""Live updates of this replica's WebSocket clients: wires the hub, the broker and
admission, and answers the clients' messages.

* ``hub.py``: subscriptions per channel and symbol, the kept snapshot values, delivery
  to connections (no Redis);
* ``broker.py``: sequence numbers and Redis pub/sub across replicas (no clients);
* ``admission.py``: handshake buckets and the connection caps (one path).

``publish`` serializes an update once (``protocol.update_parts``) and hands it to the
broker, which hands every message, this replica's or another's, to the hub. The
broadcaster receives already-built updates: what a snapshot tells the clients is
decided by the service's live-update projection, which calls ``publish``.

Hostile clients: every client message takes a token from its connection's bucket
(over: error ``rate_limited``, counted as an invalid message).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Container, Iterable
from typing import Any

from redis.asyncio import Redis

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.tasks import cancel_and_wait
from app.realtime import protocol
from app.realtime.admission import Admission, Rejected, with_rate_limits
from app.realtime.broker import Broker
from app.realtime.connection import Connection, RealtimeStats, WsLimits
from app.realtime.hub import Hub
from app.realtime.hypercorn_stream import FrameWriter
from app.resilience.rate_limit import Decision, RateLimiter

__all__ = ["Broadcaster", "Rejected", "WsLimits"]

log = logging.getLogger(__name__)

SEED_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between seeding attempts

RecentAlerts = Callable[[], Awaitable[list[dict[str, Any]]]]


class Broadcaster:
    """Live updates of this replica's WebSocket clients (see the module docstring).

    ``redis``/``guard``: the process's Redis client and guard, for the broker (None:
    this replica alone) in ``keyspace`` (the deployment's namespace; required with
    ``redis``). ``clock``: wall time of publish and send
    (delivery latency); ``server_clock``: what "server_time" reports, the clock of the
    data's ``generated_at``. With a ``rate_limiter``, its file's ``websocket`` section
    sets the per-client limits of ``limits`` (connections, handshakes, messages;
    handshakes unlimited when the file says ``enabled: false``). ``known_symbols``:
    the symbols a subscription may name (any, without it). ``on_latency``: told each
    delivery's publish → send time (channel, seconds), e.g. a histogram's observe;
    ``on_data_age`` each update's data age when fanned out (channel, seconds).
    """

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
        keyspace: Keyspace | None = None,
        server_clock: Callable[[], float] | None = None,
        on_latency: Callable[[str, float], None] | None = None,
        on_data_age: Callable[[str, float], None] | None = None,
    ) -> None:
        self.replica_id = replica_id
        if rate_limiter is not None:
            limits = with_rate_limits(limits, rate_limiter.limits)
        self.limits = limits
        self.stats = RealtimeStats(on_latency=on_latency, on_data_age=on_data_age)
        self.stats.latencies = type(self.stats.latencies)(maxlen=limits.latency_samples)
        self._clock = clock
        self._server_clock = server_clock or clock
        self._known_symbols = known_symbols
        self.admission = Admission(limits, self.stats, rate_limiter)
        self.hub = Hub(self.stats, limits.max_subscriptions, clock)
        self.broker = Broker(self.hub.deliver, self.stats, redis, guard, keyspace=keyspace)
        self.connections: set[Connection] = set()
        self._idle = asyncio.Event()  # set while no connection is open
        self._idle.set()
        self._recent_alerts: RecentAlerts | None = None
        self._seeding: asyncio.Task[None] | None = None
        self.alerts_seeded = asyncio.Event()
        self.seed_retry_seconds = SEED_RETRY_SECONDS

    @property
    def rate_limiter(self) -> RateLimiter | None:
        """The HTTP rate limiter this broadcaster shares (its client identity, its
        trusted-proxy setting), if any."""
        return self.admission.rate_limiter

    # -- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Starts listening to the other replicas and seeding the alerts snapshot."""
        self.broker.start()
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
            self.hub.seed_alerts(alerts)
            self.alerts_seeded.set()
            self.hub.resend_alerts_snapshots()
            return

    def seed_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        """Keeps these alerts for the alerts snapshot (see ``Hub.seed_alerts``)."""
        self.hub.seed_alerts(alerts)

    def kept_alerts(self) -> list[dict[str, Any]]:
        """The alerts the snapshot carries (their data), newest first."""
        return self.hub.kept_alerts()

    async def wait_ready(self, seconds: float) -> bool:
        """True once this replica listens to Redis (at once without Redis)."""
        return await self.broker.wait_ready(seconds)

    async def close(self) -> None:
        """Closes every client (1001) and stops listening; bounded."""
        for conn in list(self.connections):
            conn.request_close(protocol.CLOSE_GOING_AWAY, "server shutting down", "shutdown")
        await cancel_and_wait([self._seeding])
        await self.broker.close()
        await self.wait_released(self.limits.close_timeout + 1)

    # -- publishing ---------------------------------------------------------------------

    async def publish(
        self, channel: str, symbol: str | None, data: Any, generated_at_ms: int
    ) -> int:
        """Publishes to every replica's subscribers; returns the message's seq. Raises
        ValueError for an unknown channel."""
        if channel not in protocol.CHANNELS:
            raise ValueError(f"unknown channel {channel!r}")
        published_at = self._clock()
        head, tail = protocol.update_parts(channel, symbol, generated_at_ms, data, published_at)
        self.stats.published[channel] += 1
        return await self.broker.publish(channel, head, tail, published_at)

    async def publish_alert(self, alert: dict[str, Any], generated_at_ms: int) -> int:
        """An alert (channel "alerts"; its "symbol" key, if any, is the symbol)."""
        return await self.publish(protocol.ALERTS, alert.get("symbol"), alert, generated_at_ms)

    # -- connections --------------------------------------------------------------------

    def identify(self, headers: Any, remote_addr: str | None) -> str:
        """The client id of a handshake (see ``Admission.identify``)."""
        return self.admission.identify(headers, remote_addr)

    async def admit_handshake(self, client_id: str) -> Decision | None:
        """None when the handshake may proceed, else the refusal (``Admission``)."""
        return await self.admission.admit_handshake(client_id)

    async def connect(
        self, ws: Any, client_id: str, write_frame: FrameWriter | None = None
    ) -> Connection:
        """Registers a client; raises Rejected when over a connection limit.
        ``write_frame``: its stream's frame writer (``hypercorn_stream.frame_writer``),
        for the direct writes of the fan-out; None: every message through its queue."""
        self.admission.acquire(client_id, len(self.connections))
        conn = Connection(
            ws,
            client_id,
            self.limits,
            self.stats,
            self._clock,
            server_clock=self._server_clock,
            write_frame=write_frame,
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
        self.hub.drop(conn)
        conn.discard_queued()
        self.admission.release(conn.client_id)
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
                self.hub.subscribe(conn, message.channels, message.symbols)
            elif message.type == "unsubscribe":
                for channel in message.channels:
                    self.hub.unsubscribe(conn, channel, message.symbols)
            elif message.type == "resync":
                self.hub.resync(conn, message.channels)
            elif message.type == "pong":
                conn.pong(message.nonce)
            else:
                pong = protocol.dumps({"type": "pong", "server_time": self._server_clock()})
                conn.reply_keyed(("pong",), pong)
        except protocol.ProtocolError as exc:
            conn.reply(protocol.error(exc.code, exc.message))
            conn.note_bad_message(time.monotonic())

    def snapshot(self) -> dict[str, Any]:
        """Metrics and state, for /health or Prometheus."""
        redis = self.broker.snapshot()
        return {
            "replica_id": self.replica_id,
            "redis": None if redis is None else {**redis, "replica_id": self.replica_id},
            **self.stats.as_dict(),
        }

    async def wait_released(self, seconds: float) -> None:
        """Waits (at most ``seconds``) until every connection is released."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._idle.wait()
