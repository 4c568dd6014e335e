"""A lean WebSocket reader for fan-out measurements: many clients on one event loop at a
few µs per frame.

``bench/loadgen/ws.py`` reads through the ``websockets`` library (a frame parser,
queues, futures: tens of µs of Python per frame). With 1,000 clients each receiving
the same update, that is tens of milliseconds of the load generator's own queueing in
every latency it reports — as much as the server's whole fan-out once that is fast.
These clients are plain ``asyncio.Protocol`` objects that do the opening handshake,
send one subscribe, answer heartbeats and parse server frames in place (server
frames are unmasked, RFC 6455 §5.1); client frames are built and masked by wsproto.
They only read: a stalled client comes from ``bench/loadgen/ws.py``.

Measurement as in ``ws.py``: a window opens once every client is subscribed; an
update or alert counts when its ``published_at`` falls inside; latency is receive
time − ``published_at``; reach is received / (distinct (channel, seq) × clients).
Per message, the first and the last client's latency are kept too (``first_ms``,
``last_ms``): how long the message took to reach anyone, and its spread over clients.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import os
import struct
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import urlsplit

import orjson
from wsproto.frame_protocol import FrameProtocol, Opcode

from bench.loadgen.stats import raise_nofile_limit
from bench.loadgen.ws import _parse, _pong

HANDSHAKE_TIMEOUT_S = 10.0
SUBSCRIBE_TIMEOUT_S = 10.0
CONNECT_CONCURRENCY = 100


def _client_frame(payload: bytes, opcode: Opcode = Opcode.TEXT) -> bytes:
    """A masked client frame (wsproto picks the mask)."""
    protocol = FrameProtocol(client=True, extensions=[])
    if opcode is Opcode.CLOSE:
        return bytes(protocol.close(1000))
    if opcode is Opcode.PONG:
        return bytes(protocol.pong(payload))
    return bytes(protocol.send_data(payload.decode(), fin=True))


@dataclass
class RawResult:
    connected: int = 0
    failed: int = 0
    received: int = 0  # updates/alerts of the window, all clients
    outside: int = 0
    distinct: set[tuple[Any, Any]] = field(default_factory=set)
    latencies_ms: list[float] = field(default_factory=list)
    first_ms: dict[tuple[Any, Any], float] = field(default_factory=dict)  # per message
    last_ms: dict[tuple[Any, Any], float] = field(default_factory=dict)  # per message
    close_codes: Counter[int] = field(default_factory=Counter)


class _Run:
    def __init__(self, clients: int, channels: int) -> None:
        self.result = RawResult()
        self.channels = channels
        self.pending = clients
        self.all_ready = asyncio.Event()
        if clients == 0:
            self.all_ready.set()
        self.win_start = math.inf
        self.win_end = math.inf

    def ready(self) -> None:
        self.pending -= 1
        if self.pending == 0:
            self.all_ready.set()


class RawClient(asyncio.Protocol):
    """One reading client (see the module docstring)."""

    def __init__(self, run: _Run, host: str, path: str, subscribe: bytes) -> None:
        self.run = run
        self.host = host
        self.path = path
        self.subscribe = subscribe
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.upgraded = False
        self.snapshots = 0
        self.subscribed = False
        self.opened: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop's transports are not asyncio.Transport subclasses, but behave as one.
        self.transport = cast(asyncio.Transport, transport)
        key = base64.b64encode(os.urandom(16)).decode()
        self.transport.write(
            f"GET {self.path} HTTP/1.1\r\nHost: {self.host}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\nUser-Agent: virtuoso-bench-raw\r\n\r\n".encode()
        )

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            ok = self.buffer.startswith(b"HTTP/1.1 101")
            del self.buffer[: end + 4]
            if not self.opened.done():
                self.opened.set_result(ok)
            if not ok:
                self._abort()
                return
            self.upgraded = True
            assert self.transport is not None
            self.transport.write(_client_frame(self.subscribe))
        self._frames()

    def _frames(self) -> None:
        buf = self.buffer
        at = 0
        now = time.time()
        while len(buf) - at >= 2:
            opcode, length = buf[at] & 0x0F, buf[at + 1] & 0x7F
            head = 2
            if length == 126:
                if len(buf) - at < 4:
                    break
                (length,) = struct.unpack_from("!H", buf, at + 2)
                head = 4
            elif length == 127:
                if len(buf) - at < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, at + 2)
                head = 10
            if len(buf) - at < head + length:
                break
            payload = bytes(buf[at + head : at + head + length])
            at += head + length
            if opcode in (1, 2):
                self._message(payload, now)
            elif opcode == 8:
                code = struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005
                self.run.result.close_codes[code] += 1
                self._abort()
                return
            elif opcode == 9 and self.transport is not None:
                self.transport.write(_client_frame(payload, Opcode.PONG))
        del buf[:at]

    def _message(self, raw: bytes, now: float) -> None:
        message = _parse(raw)
        kind = message.get("type")
        run, result = self.run, self.run.result
        if kind == "update" or kind == "alert":
            published = message.get("published_at")
            at = published if published is not None else now
            if run.win_start <= at < run.win_end:
                result.received += 1
                key = (message.get("channel"), message.get("seq"))
                result.distinct.add(key)
                if published is not None:
                    ms = (now - published) * 1000.0
                    result.latencies_ms.append(ms)
                    if ms < result.first_ms.get(key, math.inf):
                        result.first_ms[key] = ms
                    if ms > result.last_ms.get(key, -math.inf):
                        result.last_ms[key] = ms
            else:
                result.outside += 1
        elif kind == "heartbeat" and self.transport is not None:
            self.transport.write(_client_frame(_pong(message.get("nonce"))))
        elif kind == "snapshot":
            self.snapshots += 1
            if self.snapshots >= run.channels:
                self.mark_subscribed()

    def mark_subscribed(self) -> None:
        if not self.subscribed:
            self.subscribed = True
            self.run.ready()

    def _abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        """Sends a close frame and drops the connection (the bench needs no reply)."""
        if self.transport is not None and not self.transport.is_closing():
            with contextlib.suppress(Exception):
                self.transport.write(_client_frame(b"", Opcode.CLOSE))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_result(False)
        if not self.lost.done():
            self.lost.set_result(None)


async def raw_fanout(
    url: str,
    clients: int,
    channels: list[str],
    duration_s: float,
    *,
    grace_s: float = 1.0,
    on_window: Callable[[], None] | None = None,
    client: type[RawClient] = RawClient,
) -> RawResult:
    """``clients`` lean readers subscribed to every symbol of ``channels``, kept for a
    window of ``duration_s`` (+ ``grace_s``), then closed. Failed connects are counted
    (``failed``), never raised. ``on_window``: called when the window opens (every
    client subscribed, or its wait over). ``client``: the reader class (a subclass
    measuring something else overrides ``_message``)."""
    raise_nofile_limit(clients + 256)
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    subscribe = orjson.dumps({"type": "subscribe", "channels": channels})
    run = _Run(clients, len(set(channels)))
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)
    opened: list[RawClient] = []

    async def one() -> None:
        reader = client(run, f"{host}:{port}", parts.path or "/", subscribe)
        try:
            async with gate, asyncio.timeout(HANDSHAKE_TIMEOUT_S):
                await loop.create_connection(lambda: reader, host, port)
                ok = await reader.opened
        except (OSError, TimeoutError):
            ok = False
        if not ok:
            run.result.failed += 1
            reader.mark_subscribed()
            reader.close()
            return
        opened.append(reader)
        loop.call_later(SUBSCRIBE_TIMEOUT_S, reader.mark_subscribed)

    connects = [asyncio.create_task(one()) for _ in range(clients)]
    try:
        await asyncio.gather(*connects)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(run.all_ready.wait(), SUBSCRIBE_TIMEOUT_S + 5)
        run.result.connected = len(opened)
        run.win_start = time.time()
        run.win_end = run.win_start + duration_s
        if on_window is not None:
            on_window()
        await asyncio.sleep(duration_s + grace_s)
        run.win_start = run.win_end = math.inf
    finally:
        for client in opened:
            client.close()
        lost = [c.lost for c in opened]
        if lost:
            await asyncio.wait(lost, timeout=2)
    return run.result
