"""The service's WebSocket stream under hypercorn: a close frame for malformed frames
(RFC 6455 §7.1.7, §8.1), no compression, control frames rate-limited, and nothing fed
to an application that has finished.

hypercorn 0.18 hands the bytes of a WebSocket to wsproto, which turns a frame it cannot
accept (a text frame that is not UTF-8, a control frame above 125 bytes or
fragmented, an unmasked client frame, reserved bits, an unknown opcode, a close frame
with an invalid code or reason) into a ``CloseConnection`` event with the right code
(1007 for invalid UTF-8, 1002 for the rest) *without* sending anything or changing its
state (it stays OPEN). hypercorn's ``WSStream._handle_events`` answers a
``CloseConnection`` only when the state is REMOTE_CLOSING (the peer's own close), so on
a malformed frame it drops the TCP connection without a close frame: the client sees
1006. The application cannot help: it only receives decoded messages, and the stream
is already closed when it hears of it (``websocket.disconnect``); no ``Config`` option
changes this.

A second fault of the same stream: frames that keep arriving after the application
has finished (a client closed for abuse that goes on sending) are still put on the
application's receive queue (``max_app_queue_size``, 10), which nobody reads any more
(Quart stops reading when the handler returns). The 11th put blocks the connection's
read loop forever, and so does the final ``websocket.disconnect``: the socket, its
buffers and tasks stay until the server stops — one leak per hostile connection.

Two more faults of the kind "a frame the application never sees costs the server
without bound": hypercorn always accepts ``permessage-deflate``, and wsproto inflates a
whole compressed frame before hypercorn's size check — a 64 KB frame inflating to
64 MB costs that much memory (a "deflate bomb") before the 1009 close; and hypercorn
answers ping frames itself, so a ping flood escapes the application's message rate
limit. The stream therefore never negotiates an extension (the client's
``Sec-WebSocket-Extensions`` is ignored, RFC 6455 §9.1: the server may decline), and
answers at most ``PING_BURST`` pings at once, then ``PING_RATE`` a second, closing
with 1008 past that.

Last, a fan-out cost: an application message reaches the socket through Quart (which
yields to the event loop before every send), hypercorn's ``app_send``, wsproto's framing
and the connection's send lock — 31–36 µs of CPU per client and frame measured
(``bench/ws_fanout.py``), and a task wake-up and loop turns per client. A server
frame is the same bytes for every client (no mask, no extension), so the stream also
offers the application a *frame writer* under the scope extension ``FRAME_WRITER``
(HTTP/1.1 only): ``write(frames, max_buffered)`` writes already-built frames
(``protocol.frame``, one or several back to back) to the socket at once and returns
True, or returns False — and writes nothing — when it cannot now (the stream is not
open, a send is under way, or the socket already holds more than ``max_buffered``
bytes): the caller then sends through the ordinary path, which waits for a slow client.

``install()`` therefore swaps in a subclass of ``WSStream`` (for the HTTP/1.1 and HTTP/2
protocols: ``hypercorn.protocol.h11``/``h2`` import ``WSStream`` by name) whose
``_handle_events`` is hypercorn's own plus one branch — when wsproto reports a failure
it sends the close frame with wsproto's code, then closes the stream — and whose
``app_send`` stops feeding the application once it has finished (what is queued is
dropped, what follows is discarded; RFC 6455 §1.4 has an endpoint that sent its close
discard what comes before the peer's). It is the one place the service reaches into
hypercorn; it refuses (with a warning, and the old behaviour) any hypercorn other than
the 0.18 series it was written against.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import logging
import time
from collections.abc import Callable
from typing import Any, cast

from hypercorn.asyncio.tcp_server import TCPServer
from hypercorn.protocol import h2, h11
from hypercorn.protocol.events import Request, StreamClosed
from hypercorn.protocol.ws_stream import ASGIWebsocketState, FrameTooLargeError, WSStream
from hypercorn.typing import AppWrapper, ASGIReceiveCallable, ASGISendCallable, Scope
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

log = logging.getLogger(__name__)

EXTENSIONS_HEADER = b"sec-websocket-extensions"
FRAME_WRITER = "virtuoso.websocket.frame_writer"  # scope extension: a FrameWriter

# (an already-built frame, the most bytes the socket may hold before it) -> written
FrameWriter = Callable[[bytes, int], bool]

SUPPORTED_SERIES = "0.18."
PING_BURST = 20  # ping frames answered at once …
PING_RATE = 5.0  # … then this many a second; past that: close 1008

# Short fixed reasons: wsproto's own text (a codec message) says nothing more useful.
REASONS = {
    1002: "malformed frame",
    1007: "text frame is not valid UTF-8",
    1008: "too many ping frames",
}


class FailingWSStream(WSStream):
    """hypercorn's WebSocket stream that fails a connection with a close frame, takes
    no extension and limits ping frames (see the module docstring)."""

    _ping_tokens: float = float(PING_BURST)
    _ping_at: float | None = None
    _server: TCPServer | None = None
    _server_known = False  # _server looked up

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.app = _WithFrameWriter(self.app, self.write_frame_nowait)

    def write_frame_nowait(self, frame: bytes, max_buffered: int) -> bool:
        """Writes a whole frame to the socket without waiting; False (nothing written)
        when the stream is not open, a send holds the connection, or the socket's buffer
        already holds more than ``max_buffered`` bytes."""
        if (
            self.closed
            or self.state != ASGIWebsocketState.CONNECTED
            or self.connection.state != ConnectionState.OPEN
        ):
            return False
        server = self._tcp_server()
        if server is None or server.send_lock.locked():
            return False
        transport = server.writer.transport
        if transport.is_closing() or transport.get_write_buffer_size() > max_buffered:
            return False
        transport.write(frame)
        return True

    def _tcp_server(self) -> TCPServer | None:
        """The connection's server under HTTP/1.1 (the stream's ``send`` is the h11
        protocol's, whose ``send`` is the server's); None under HTTP/2 (frames there
        go through h2's framing)."""
        if not self._server_known:
            protocol = getattr(self.send, "__self__", None)
            server = getattr(getattr(protocol, "send", None), "__self__", None)
            if isinstance(protocol, h11.H11Protocol) and isinstance(server, TCPServer):
                self._server = server
            self._server_known = True
        return self._server

    async def handle(self, event: Any) -> None:
        if isinstance(event, Request):  # no permessage-deflate (nor any extension)
            headers = [(n, v) for n, v in event.headers if n.lower() != EXTENSIONS_HEADER]
            event = dataclasses.replace(event, headers=headers)
        await super().handle(event)

    def _ping_allowed(self) -> bool:
        """A token bucket: ``PING_BURST`` at once, refilled at ``PING_RATE`` a second."""
        now = time.monotonic()
        if self._ping_at is not None:
            elapsed = now - self._ping_at
            self._ping_tokens = min(PING_BURST, self._ping_tokens + elapsed * PING_RATE)
        self._ping_at = now
        if self._ping_tokens < 1:
            return False
        self._ping_tokens -= 1
        return True

    async def app_send(self, message: Any) -> None:
        if message is None:  # the application has finished: nobody reads its queue
            self._stop_feeding_app()
        await super().app_send(message)

    def _stop_feeding_app(self) -> None:
        queue = getattr(self.app_put, "__self__", None)  # hypercorn's asyncio app queue
        self.app_put = _discard
        if isinstance(queue, asyncio.Queue):
            while not queue.empty():  # wakes a put blocked on the full queue
                queue.get_nowait()

    async def _handle_events(self) -> None:
        # hypercorn 0.18's loop, verbatim but for the first branch.
        for event in self.connection.events():
            if isinstance(event, CloseConnection) and self._failed_locally():
                await self._fail(event.code)
                return
            if isinstance(event, Message):
                try:
                    self.buffer.extend(event)
                except FrameTooLargeError:
                    await self._send_wsproto_event(
                        CloseConnection(code=CloseReason.MESSAGE_TOO_BIG)
                    )
                    break
                if event.message_finished:
                    await self.app_put(self.buffer.to_message())  # type: ignore[misc]
                    self.buffer.clear()
            elif isinstance(event, Ping):
                if not self._ping_allowed():
                    await self._fail(1008)
                    return
                await self._send_wsproto_event(event.response())
            elif isinstance(event, CloseConnection):
                if self.connection.state == ConnectionState.REMOTE_CLOSING:
                    await self._send_wsproto_event(event.response())
                await self.send(StreamClosed(stream_id=self.stream_id))

    def _failed_locally(self) -> bool:
        """A peer's close frame moves wsproto to REMOTE_CLOSING before the event; a
        parse failure leaves it OPEN."""
        return self.connection.state == ConnectionState.OPEN

    async def _fail(self, code: int) -> None:
        await self._send_wsproto_event(
            CloseConnection(code=code, reason=REASONS.get(code, "protocol error"))
        )
        await self.send(StreamClosed(stream_id=self.stream_id))


class _WithFrameWriter:
    """hypercorn's app wrapper, adding the stream's frame writer to an HTTP/1.1
    WebSocket scope's extensions before the application sees it."""

    def __init__(self, app: AppWrapper, writer: FrameWriter) -> None:
        self.app = app
        self.writer = writer

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., Any],
        call_soon: Callable[..., Any],
    ) -> None:
        if scope.get("http_version") == "1.1":  # under HTTP/2, h2 frames the data
            # ASGI allows extra extension keys; the TypedDict lists only the standard ones.
            extensions = cast(dict[str, Any], scope).setdefault("extensions", {})
            extensions[FRAME_WRITER] = self.writer
        await self.app(scope, receive, send, sync_spawn, call_soon)


def frame_writer(scope: Any) -> FrameWriter | None:
    """The frame writer a WebSocket scope carries (``FailingWSStream``), if any."""
    writer = (scope.get("extensions") or {}).get(FRAME_WRITER)
    return writer if callable(writer) else None


async def _discard(_event: Any) -> None:
    """What is received after the application finished goes nowhere."""


def install() -> bool:
    """Makes hypercorn's HTTP/1.1 and HTTP/2 WebSockets use ``FailingWSStream``.
    Idempotent. False (and a warning) on a hypercorn outside the supported series."""
    if h11.WSStream is FailingWSStream and h2.WSStream is FailingWSStream:
        return True
    version = importlib.metadata.version("hypercorn")
    if not version.startswith(SUPPORTED_SERIES):
        log.warning(
            "hypercorn %s: malformed WebSocket frames drop the connection without a close "
            "frame (1006); the fix is written for %sx",
            version,
            SUPPORTED_SERIES,
        )
        return False
    h11.WSStream = FailingWSStream  # type: ignore[misc]
    h2.WSStream = FailingWSStream  # type: ignore[misc]
    return True
