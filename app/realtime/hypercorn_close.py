"""A close frame for malformed WebSocket frames (RFC 6455 §7.1.7, §8.1), under hypercorn.

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
import importlib.metadata
import logging
from typing import Any

from hypercorn.protocol import h2, h11
from hypercorn.protocol.events import StreamClosed
from hypercorn.protocol.ws_stream import FrameTooLargeError, WSStream
from wsproto.connection import ConnectionState
from wsproto.events import CloseConnection, Message, Ping
from wsproto.frame_protocol import CloseReason

log = logging.getLogger(__name__)

SUPPORTED_SERIES = "0.18."

# Short fixed reasons: wsproto's own text (a codec message) says nothing more useful.
REASONS = {1002: "malformed frame", 1007: "text frame is not valid UTF-8"}


class FailingWSStream(WSStream):
    """hypercorn's WebSocket stream that fails a connection with a close frame."""

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
