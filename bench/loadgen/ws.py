"""WebSocket fan-out load on ``/ws``: many reading clients, and clients that stop reading.

Protocol (JSON text frames): the client sends ``{"type": "subscribe", "channels": [...],
"symbols": [...]}``; the server answers one ``snapshot`` per channel, then sends
``update`` (and ``alert``) messages with ``channel``, ``seq`` and ``published_at``
(epoch seconds on the server's clock when it published the message) and a
``heartbeat`` every 15 s, which must be answered ``{"type": "pong", "nonce": n}``.
The server closes too-slow clients with 1013, silent ones with 1011, abusive ones with
1008 and everyone with 1001 when it shuts down.

Measurement: once every client is connected and subscribed, a window of ``duration_s``
opens. A message counts for the window when its ``published_at`` (its receive time
when it has none) falls inside; messages published inside but still travelling when the
window closes are awaited for ``grace_s``. *Reach* is the share of the window's
messages that reached the reading clients: received / (distinct (channel, seq) seen by
any reader × readers); below 1 means the server dropped or coalesced updates for some
clients, or closed them. Latency is receive time − ``published_at`` (same machine, same
clock), for every message of the window at every client.

Lean: ``recv(decode=False)`` (no UTF-8 decoding), and for updates only the part of the
frame before ``"data"`` is parsed when the server puts ``data`` last; no compression,
no client pings (the server's heartbeats are answered).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from bench.loadgen.stats import LatencySummary, cpu_seconds, raise_nofile_limit

OPEN_TIMEOUT_S = 10.0  # TCP connect + opening handshake of one client
SUBSCRIBE_TIMEOUT_S = 10.0  # a client without its snapshots by then counts as subscribed
CLOSE_TIMEOUT_S = 2.0  # closing handshake of one client, then the TCP connection is cut
DRAIN_S = 2.0  # at the end, how long a stalled client reads to find the server's close
STALLED_RCVBUF = 4096  # bytes of socket receive buffer of a stalled client
ABNORMAL_CLOSURE = 1006  # the connection ended without a close frame

_UPDATE_PREFIXES = (b'{"type":"update"', b'{"type":"alert"')
_DATA_KEY = b',"data":'
_PUBLISHED_KEY = b',"published_at":'


@dataclass
class WsResult:
    clients: int  # reading clients asked for
    channels: list[str] = field(default_factory=list)
    connected: int = 0  # reading clients connected and subscribed
    failed_to_connect: int = 0  # reading clients whose connection failed
    connect_errors: dict[str, int] = field(default_factory=dict)  # all clients: name → count
    messages_received: int = 0  # updates/alerts of the window, all reading clients
    messages_outside_window: int = 0  # before the window opened or after it closed
    snapshots_received: int = 0
    distinct_messages: int = 0  # distinct (channel, seq) of the window seen by any reader
    expected: int = 0  # distinct_messages × connected reading clients
    reach: float | None = None  # messages_received / expected; None when expected is 0
    latencies_ms: list[float] = field(default_factory=list)  # the window's messages
    close_codes: dict[int, int] = field(default_factory=dict)  # readers closed by the server
    pongs_sent: int = 0
    stalled_clients: int = 0  # asked for
    stalled_connected: int = 0  # the others failed to connect (see connect_errors)
    stalled_messages_received: int = 0  # before they stalled, plus what the end drained
    stalled_close_codes: dict[int, int] = field(default_factory=dict)  # closed by server
    stalled_open_at_end: int = 0  # stalled clients the server had not closed
    connect_s: float = 0.0  # until every client was connected and subscribed
    duration_s: float = 0.0  # the window (grace included)
    loadgen_cpu_seconds: float = 0.0  # this process, during the window (grace included)
    total_cpu_seconds: float = 0.0  # this process, the whole call (connects, closes)

    def summary(self) -> dict[str, Any]:
        """Everything but the raw latencies, JSON-able (string keys), plus the latency
        summary and ``loadgen_cpu_share`` (window CPU seconds per second: 1.0 = a core)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "latencies_ms":
                continue
            if name in ("close_codes", "stalled_close_codes"):
                value = {str(k): v for k, v in sorted(value.items())}
            elif isinstance(value, float):
                value = round(value, 4 if name == "reach" else 3)
            elif isinstance(value, dict | list):
                value = type(value)(value)
            out[name] = value
        out["loadgen_cpu_share"] = (
            round(self.loadgen_cpu_seconds / self.duration_s, 3) if self.duration_s else None
        )
        out["latency_ms"] = LatencySummary.from_ms(self.latencies_ms)
        return out


def _parse(raw: bytes) -> dict[str, Any]:
    """The message, or for an update with ``data`` after its header only the header
    (``published_at`` looked for after ``data`` too); falls back to a full parse."""
    if raw.startswith(_UPDATE_PREFIXES):
        cut = raw.find(_DATA_KEY)
        if cut > 0:
            try:
                head = orjson.loads(raw[:cut] + b"}")
            except orjson.JSONDecodeError:
                head = None
            if head is not None and "seq" in head:
                if "published_at" in head:
                    return head
                at = raw.rfind(_PUBLISHED_KEY)
                if at > cut and raw.endswith(b"}"):
                    try:
                        value = orjson.loads(raw[at + len(_PUBLISHED_KEY) : -1])
                    except orjson.JSONDecodeError:
                        value = None
                    if isinstance(value, int | float) and not isinstance(value, bool):
                        head["published_at"] = value
                        return head
                elif at < 0:  # no published_at anywhere
                    return head
    return orjson.loads(raw)


def _pong(nonce: Any) -> bytes:
    return b'{"type":"pong","nonce":' + orjson.dumps(nonce) + b"}"


def _server_close_code(exc: ConnectionClosed, stopping: bool) -> int | None:
    """The close code when the server closed (or the connection was lost), else None."""
    if exc.rcvd is not None and (exc.sent is None or exc.rcvd_then_sent):
        return exc.rcvd.code
    if exc.rcvd is None and exc.sent is None and not stopping:
        return ABNORMAL_CLOSURE
    return None


class _Client:
    __slots__ = ("received", "snapshots", "subscribed", "timer", "ws")

    def __init__(self) -> None:
        self.ws: ClientConnection | None = None
        self.subscribed = False
        self.snapshots = 0
        self.received = 0
        self.timer: asyncio.TimerHandle | None = None


class _Fanout:
    def __init__(
        self,
        url: str,
        channels: list[str],
        symbols: list[str] | None,
        result: WsResult,
        connect_concurrency: int,
        pending: int,
    ) -> None:
        self.url = url
        self.result = result
        subscribe: dict[str, Any] = {"type": "subscribe", "channels": channels}
        if symbols is not None:
            subscribe["symbols"] = symbols
        self.subscribe = orjson.dumps(subscribe)
        self.channel_count = len(set(channels))
        self.gate = asyncio.Semaphore(max(1, connect_concurrency))
        self.pending = pending
        self.all_ready = asyncio.Event()
        if pending == 0:
            self.all_ready.set()
        self.win_start = math.inf
        self.win_end = math.inf
        self.stopping = False
        self.distinct: set[tuple[Any, Any]] = set()
        self.close_codes: Counter[int] = Counter()
        self.stalled_close_codes: Counter[int] = Counter()
        self.connect_errors: Counter[str] = Counter()
        self.readers: list[_Client] = []
        self.stalled: list[_Client] = []

    # -- connecting ---------------------------------------------------------------------

    def ready(self, client: _Client) -> None:
        if client.subscribed:
            return
        client.subscribed = True
        if client.timer is not None:
            client.timer.cancel()
            client.timer = None
        self.pending -= 1
        if self.pending == 0:
            self.all_ready.set()

    async def _stalled_socket(self) -> socket.socket:
        """A connected socket with a small receive buffer: once its reader stops, the TCP
        window closes quickly and the server's sends back up."""
        parts = urlsplit(self.url)
        port = parts.port or (443 if parts.scheme == "wss" else 80)
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        family, type_, proto, _, address = infos[0]
        sock = socket.socket(family, type_, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, STALLED_RCVBUF)
            sock.setblocking(False)
            await loop.sock_connect(sock, address)
        except BaseException:
            sock.close()
            raise
        return sock

    async def open(self, client: _Client, stalled: bool) -> bool:
        options: dict[str, Any] = {
            "compression": None,
            "proxy": None,
            "ping_interval": None,
            "open_timeout": OPEN_TIMEOUT_S,
            "close_timeout": CLOSE_TIMEOUT_S,
            "max_size": None,
            "user_agent_header": "virtuoso-bench-loadgen",
        }
        sock: socket.socket | None = None
        try:
            async with self.gate:
                if stalled:
                    async with asyncio.timeout(OPEN_TIMEOUT_S):
                        sock = await self._stalled_socket()
                    options["sock"] = sock
                    options["max_queue"] = 1  # stop reading the socket at once
                client.ws = await connect(self.url, **options)
                await client.ws.send(self.subscribe, text=True)
        except Exception as exc:
            if not stalled:
                self.result.failed_to_connect += 1
            self.connect_errors[type(exc).__name__] += 1
            if client.ws is not None:
                client.ws.transport.abort()
                client.ws = None
            elif sock is not None:
                sock.close()
            self.ready(client)
            return False
        return True

    # -- reading ------------------------------------------------------------------------

    async def reader(self, client: _Client) -> None:
        if not await self.open(client, stalled=False):
            return
        self.readers.append(client)
        client.timer = asyncio.get_running_loop().call_later(
            SUBSCRIBE_TIMEOUT_S, self.ready, client
        )
        ws = client.ws
        assert ws is not None
        result = self.result
        latencies = result.latencies_ms
        distinct = self.distinct
        clock = time.time
        try:
            while True:
                raw = await ws.recv(decode=False)
                now = clock()
                message = _parse(raw)
                kind = message.get("type")
                if kind == "update" or kind == "alert":
                    published = message.get("published_at")
                    at = published if published is not None else now
                    if self.win_start <= at < self.win_end:
                        result.messages_received += 1
                        distinct.add((message.get("channel"), message.get("seq")))
                        if published is not None:
                            latencies.append((now - published) * 1000.0)
                    else:
                        result.messages_outside_window += 1
                    if not client.subscribed:
                        self.ready(client)
                elif kind == "heartbeat":
                    await ws.send(_pong(message.get("nonce")), text=True)
                    result.pongs_sent += 1
                elif kind == "snapshot":
                    result.snapshots_received += 1
                    client.snapshots += 1
                    if client.snapshots >= self.channel_count:
                        self.ready(client)
        except ConnectionClosed as exc:
            code = _server_close_code(exc, self.stopping)
            if code is not None:
                self.close_codes[code] += 1
        finally:
            self.ready(client)

    async def staller(self, client: _Client, stall_after_s: float) -> None:
        """Subscribes, reads (answering heartbeats) for ``stall_after_s``, then stops
        reading; :meth:`drain` finds out at the end whether the server closed it."""
        if not await self.open(client, stalled=True):
            return
        self.stalled.append(client)
        self.ready(client)
        ws = client.ws
        assert ws is not None
        try:
            async with asyncio.timeout(stall_after_s):
                while True:
                    message = _parse(await ws.recv(decode=False))
                    if message.get("type") == "heartbeat":
                        await ws.send(_pong(message.get("nonce")), text=True)
                    elif message.get("type") in ("update", "alert"):
                        client.received += 1
        except TimeoutError:
            pass  # stalled from now on
        except ConnectionClosed as exc:
            self._stalled_closed(client, exc)

    def _stalled_closed(self, client: _Client, exc: ConnectionClosed) -> None:
        code = _server_close_code(exc, stopping=False)
        self.stalled_close_codes[code if code is not None else ABNORMAL_CLOSURE] += 1
        client.ws = None

    async def drain(self, client: _Client) -> None:
        """Reads what a stalled client left unread, up to the server's close (if any)."""
        ws = client.ws
        if ws is None:
            return
        try:
            async with asyncio.timeout(DRAIN_S):
                while True:
                    message = await ws.recv(decode=False)
                    if message.startswith(_UPDATE_PREFIXES):
                        client.received += 1
        except TimeoutError:
            self.result.stalled_open_at_end += 1
        except ConnectionClosed as exc:
            self._stalled_closed(client, exc)

    # -- closing ------------------------------------------------------------------------

    @staticmethod
    async def _sink(ws: ClientConnection) -> None:
        """Reads and forgets until the connection is closed (so a close can complete)."""
        try:
            while True:
                await ws.recv(decode=False)
        except ConnectionClosed:
            pass

    async def close_all(self) -> None:
        sinks = [asyncio.create_task(self._sink(c.ws)) for c in self.stalled if c.ws is not None]
        open_ws = [c.ws for c in self.readers + self.stalled if c.ws is not None]
        closes = [asyncio.create_task(ws.close()) for ws in open_ws]
        if closes:
            _, late = await asyncio.wait(closes, timeout=CLOSE_TIMEOUT_S + 2)
            for task in late:
                task.cancel()
            for ws in open_ws:
                if ws.transport is not None and not ws.transport.is_closing():
                    ws.transport.abort()
            for task in closes:
                if not task.cancelled() and task.done():
                    task.exception()  # retrieved: a failed close is no result
        if sinks:
            _, late = await asyncio.wait(sinks, timeout=1)
            for task in late:
                task.cancel()


async def ws_fanout(
    url: str,
    clients: int,
    channels: list[str],
    symbols: list[str] | None,
    duration_s: float,
    connect_concurrency: int = 100,
    stalled_clients: int = 0,
    stall_after_s: float = 0.5,
    *,
    grace_s: float = 1.0,
) -> WsResult:
    """``clients`` reading clients and ``stalled_clients`` that stop reading
    ``stall_after_s`` after subscribing, all subscribed to ``channels`` (``symbols``:
    all of the channels' symbols when None), kept for a window of ``duration_s``
    (+ ``grace_s`` for the window's last messages), then closed (bounded).

    At most ``connect_concurrency`` connections are being opened at a time; a failed
    connect is counted (``failed_to_connect``, ``connect_errors``), never raised.
    """
    if clients < 0 or stalled_clients < 0:
        raise ValueError("client counts cannot be negative")
    if not channels:
        raise ValueError("subscribe to at least one channel")
    raise_nofile_limit(clients + stalled_clients + 256)
    cpu_start = cpu_seconds()
    started = time.perf_counter()
    result = WsResult(clients=clients, channels=list(channels), stalled_clients=stalled_clients)
    run = _Fanout(
        url, list(channels), symbols, result, connect_concurrency, clients + stalled_clients
    )
    tasks = [asyncio.create_task(run.reader(_Client())) for _ in range(clients)]
    stallers = [
        asyncio.create_task(run.staller(_Client(), stall_after_s)) for _ in range(stalled_clients)
    ]
    try:
        # Every client ends its wait within OPEN_TIMEOUT_S + SUBSCRIBE_TIMEOUT_S of its
        # turn; the bound below only guards against a bug.
        turns = math.ceil((clients + stalled_clients) / max(1, connect_concurrency)) + 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(
                run.all_ready.wait(), turns * OPEN_TIMEOUT_S + SUBSCRIBE_TIMEOUT_S + 5
            )
        result.connect_s = time.perf_counter() - started

        window_cpu = cpu_seconds()
        window_started = time.perf_counter()
        run.win_start = time.time()
        run.win_end = run.win_start + duration_s
        await asyncio.sleep(duration_s + grace_s)
        result.duration_s = time.perf_counter() - window_started
        result.loadgen_cpu_seconds = cpu_seconds() - window_cpu
        run.win_start = run.win_end = math.inf  # nothing counts any more
    finally:
        run.stopping = True
        for task in stallers:
            task.cancel()  # those still reading before their stall: they stop here
        if stallers:
            await asyncio.wait(stallers, timeout=1)
        await asyncio.gather(*(run.drain(c) for c in run.stalled))
        await run.close_all()
        everything = tasks + stallers
        _, late = await asyncio.wait(everything, timeout=CLOSE_TIMEOUT_S + 1)
        for task in late:
            task.cancel()
        if late:
            await asyncio.wait(late, timeout=1)

    result.connected = len(run.readers)
    result.stalled_connected = len(run.stalled)
    result.stalled_messages_received = sum(c.received for c in run.stalled)
    result.distinct_messages = len(run.distinct)
    result.expected = result.distinct_messages * result.connected
    result.reach = result.messages_received / result.expected if result.expected else None
    result.close_codes = dict(run.close_codes)
    result.stalled_close_codes = dict(run.stalled_close_codes)
    result.connect_errors = dict(run.connect_errors)
    result.total_cpu_seconds = cpu_seconds() - cpu_start
    return result
