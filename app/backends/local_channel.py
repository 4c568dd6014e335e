"""A message channel between two local processes over a Unix socket: the embedded
service's server and its collector child, where there is no Redis between them.

Frames are a 4-byte big-endian length, then a msgpack array ``[kind, id, payload]``
(bytes stay bytes). ``notify(kind, payload)`` sends one-way (``id`` 0); ``call(kind,
payload)`` sends with a fresh id and waits for the other side's answer (``kind``
``"ok"`` or ``"error"``, same id). Handlers are registered by kind; a call's handler
returns the answer's payload or raises (the caller gets ChannelError with its text).
A frame over ``MAX_FRAME_BYTES``, or one that cannot be decoded, ends the channel: the
two ends are our own processes, so a broken frame means a broken peer.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import socket
import struct
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack

from app.backends.tasks import cancel_and_wait

__all__ = ["MAX_FRAME_BYTES", "Channel", "ChannelError", "connect", "listen"]

log = logging.getLogger(__name__)

MAX_FRAME_BYTES = 64 * 1024 * 1024  # every view of a snapshot fits many times over
_LENGTH = struct.Struct(">I")
_PEERCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid

Notified = Callable[[Any], Awaitable[None] | None]
Called = Callable[[Any], Awaitable[Any]]


class ChannelError(Exception):
    """The channel is closed, or the other side could not answer a call (its reason)."""


class Channel:
    """One end of a connected channel (see the module docstring). ``closed`` is set when
    the other side went away or the channel was closed."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._notified: dict[str, Notified] = {}
        self._called: dict[str, Called] = {}
        self._waiting: dict[int, asyncio.Future[Any]] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()
        self._reading: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self.closed = asyncio.Event()

    @property
    def peer_pid(self) -> int | None:
        """The process id of the other end (the kernel's ``SO_PEERCRED``), None where
        the platform does not say."""
        sock = self._writer.get_extra_info("socket")
        option = getattr(socket, "SO_PEERCRED", None)
        if sock is None or option is None:
            return None
        try:
            credentials = sock.getsockopt(socket.SOL_SOCKET, option, _PEERCRED.size)
        except OSError:
            return None
        pid, _uid, _gid = _PEERCRED.unpack(credentials)
        return int(pid)

    def on_notify(self, kind: str, handler: Notified) -> None:
        """``handler(payload)`` for every one-way message of ``kind``."""
        self._notified[kind] = handler

    def on_call(self, kind: str, handler: Called) -> None:
        """``await handler(payload)`` answers every call of ``kind``."""
        self._called[kind] = handler

    def start(self) -> None:
        """Starts reading frames (once)."""
        if self._reading is None:
            self._reading = asyncio.create_task(self._read(), name="channel-read")

    async def notify(self, kind: str, payload: Any) -> None:
        """Sends a one-way message. Raises ChannelError when the channel is closed."""
        await self._send([kind, 0, payload])

    async def call(self, kind: str, payload: Any, seconds: float) -> Any:
        """Sends a call and returns the answer's payload. Raises ChannelError (closed,
        refused with the other side's reason, or no answer within ``seconds``)."""
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[call_id] = future
        try:
            await self._send([kind, call_id, payload])
            async with asyncio.timeout(seconds):
                return await future
        except TimeoutError:
            raise ChannelError(f"no answer to {kind} within {seconds:g}s") from None
        finally:
            self._waiting.pop(call_id, None)

    async def close(self) -> None:
        """Closes the channel; calls still waiting fail with ChannelError."""
        await cancel_and_wait([self._reading])
        self._closed()
        await cancel_and_wait(list(self._tasks))

    async def _send(self, frame: list[Any]) -> None:
        if self.closed.is_set():
            raise ChannelError("the channel is closed")
        data = msgpack.packb(frame, use_bin_type=True)
        if len(data) > MAX_FRAME_BYTES:
            raise ChannelError(f"a {frame[0]} frame of {len(data)} bytes is too large")
        async with self._send_lock:  # frames never interleave
            try:
                self._writer.write(_LENGTH.pack(len(data)) + data)
                await self._writer.drain()
            except (ConnectionError, RuntimeError) as error:
                self._closed()
                raise ChannelError(f"the channel is closed: {error}") from None

    async def _read(self) -> None:
        try:
            while True:
                (length,) = _LENGTH.unpack(await self._reader.readexactly(_LENGTH.size))
                if length > MAX_FRAME_BYTES:
                    raise ValueError(f"a frame of {length} bytes")
                frame = msgpack.unpackb(await self._reader.readexactly(length), raw=False)
                await self._dispatch(frame)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the other side went away
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            log.error("local channel broken (%s); closing it", error)
        finally:
            self._closed()

    async def _dispatch(self, frame: Any) -> None:
        """Answers go to their caller; calls are answered concurrently; one-way messages
        are handled in order, one after the other (a newer set of views must not be
        overtaken by an older one)."""
        kind, call_id, payload = frame
        if kind in ("ok", "error"):
            future = self._waiting.get(call_id)
            if future is not None and not future.done():
                if kind == "ok":
                    future.set_result(payload)
                else:
                    future.set_exception(ChannelError(str(payload)))
            return
        if call_id:
            self._spawn(self._answer(kind, call_id, payload))
            return
        handler = self._notified.get(kind)
        if handler is None:
            log.warning("local channel: no handler for %r", kind)
            return
        try:
            result = handler(payload)
            if result is not None:
                await result
        except Exception:
            log.exception("local channel: handling %s failed", kind)

    async def _answer(self, kind: str, call_id: int, payload: Any) -> None:
        handler = self._called.get(kind)
        try:
            if handler is None:
                raise ChannelError(f"no handler for {kind!r}")
            answer = ["ok", call_id, await handler(payload)]
        except Exception as error:  # the caller gets the reason; this side goes on
            answer = ["error", call_id, str(error) or type(error).__name__]
        with contextlib.suppress(ChannelError):
            await self._send(answer)

    def _spawn(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _closed(self) -> None:
        if self.closed.is_set():
            return
        self.closed.set()
        with contextlib.suppress(Exception):
            self._writer.close()
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ChannelError("the channel is closed"))


async def listen(
    path: str, on_channel: Callable[[Channel], Awaitable[None] | None]
) -> asyncio.Server:
    """Listens on the Unix socket ``path``; each connection becomes a Channel handed to
    ``on_channel``, which registers its handlers (or closes it: refused) before it starts
    reading."""

    async def accepted(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        channel = Channel(reader, writer)
        result = on_channel(channel)
        if result is not None:
            await result
        if not channel.closed.is_set():
            channel.start()

    return await asyncio.start_unix_server(accepted, path=path)


async def connect(path: str) -> Channel:
    """A started Channel to the Unix socket ``path``. Raises OSError."""
    reader, writer = await asyncio.open_unix_connection(path)
    channel = Channel(reader, writer)
    channel.start()
    return channel
