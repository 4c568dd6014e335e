"""Cuts off a send's connections when its time is up.

Apprise's plugins connect through requests (urllib3) and smtplib, whose time-outs hold
for each socket operation, not for the whole send: a receiver that answers one byte
at a time, each within the time-out, or streams a body without end, holds the send —
and one of the few sending threads — for as long as it likes, and a handful of such
receivers stop every delivery. ``cut_off_after`` ends them: each socket the calling
thread connects meanwhile is recorded (through the interpreter's ``socket.connect``
audit event, PEP 578: the plugins' own code is not touched), and when the time is up
each is shut down in both directions, which wakes a blocked read with an error; a
connection attempted after that fails at once (``TimeoutError``).

A TLS socket takes over the file descriptor of the socket that connected (the latter
then reads as closed), so such a descriptor is shut down through a duplicate, and only
while it is still connected to the peer recorded (a descriptor closed and reused by
another connection to the same peer in between would be cut too: that send fails and
is retried).
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

_local = threading.local()
_install_lock = threading.Lock()
_installed = False


class _Connections:
    """The sockets one send connected: (socket, its descriptor, the peer address)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sockets: list[tuple[socket.socket, int, Any]] = []
        self.expired = False
        self.finished = False

    def add(self, sock: socket.socket, address: Any) -> None:
        with self.lock:
            if self.expired:
                raise TimeoutError("the send's time is up")
            self.sockets.append((sock, sock.fileno(), address))

    def cut_off(self) -> None:
        with self.lock:  # held: the send cannot finish (and close) meanwhile
            if self.finished:
                return
            self.expired = True
            for sock, descriptor, address in self.sockets:
                _shut_down(sock, descriptor, address)

    def finish(self) -> None:
        with self.lock:
            self.finished = True
            self.sockets.clear()


def _shut_down(sock: socket.socket, descriptor: int, address: Any) -> None:
    """Shuts the connection down (best effort): through ``sock`` while it still owns
    ``descriptor``, else through a duplicate still connected to ``address``."""
    with contextlib.suppress(OSError):
        if sock.fileno() == descriptor:
            sock.shutdown(socket.SHUT_RDWR)
            return
        if not isinstance(address, tuple) or descriptor < 0:
            return
        with socket.socket(fileno=os.dup(descriptor)) as duplicate:
            if tuple(duplicate.getpeername()[:2]) == tuple(address[:2]):
                duplicate.shutdown(socket.SHUT_RDWR)


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if event == "socket.connect":
        connections = getattr(_local, "connections", None)
        if connections is not None:
            connections.add(args[0], args[1])


def _install() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            sys.addaudithook(_audit)  # for the process's life; idle outside a send
            _installed = True


@contextlib.contextmanager
def cut_off_after(seconds: float) -> Iterator[None]:
    """While the block runs in this thread, its connections are cut off ``seconds``
    after it started (see the module). Blocks do not nest within one thread."""
    _install()
    connections = _Connections()
    _local.connections = connections
    timer = threading.Timer(seconds, connections.cut_off)
    timer.daemon = True
    timer.start()
    try:
        yield
    finally:
        timer.cancel()
        connections.finish()
        _local.connections = None
