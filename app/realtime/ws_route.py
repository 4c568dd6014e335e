"""The Quart WebSocket route of the live updates (``/ws`` by default).

Per connection: accept, identify the client, take a slot (over a limit: close 1008 or
1013 with the reason), then three tasks — receive loop, sender, heartbeat — until the
connection asks to close (slow, silent, abusive, shutdown) or the client leaves (Quart
cancels the handler: the CancelledError is re-raised after clean-up). The slot and
subscriptions are always released. Closing a stuck client is bounded by
``close_timeout``: its close frame then stays in the socket's buffer.

hypercorn: set ``websocket_max_message_size`` above ``WsLimits.max_message_bytes``
(e.g. 64 KiB against 4 KiB) so an oversized message gets an ``error`` answer and only
a huge one is closed by hypercorn itself (1009).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from quart import Quart, websocket

from app.realtime.broadcaster import Broadcaster, Rejected
from app.realtime.connection import Connection

log = logging.getLogger(__name__)

HYPERCORN_MAX_MESSAGE_BYTES = 64 * 1024

Identify = Callable[[Any, str | None], str]


def register_ws(
    app: Quart,
    broadcaster: Broadcaster,
    path: str = "/ws",
    identify: Identify | None = None,
    *,
    manage_lifecycle: bool = True,
) -> None:
    """Adds the route. ``identify(headers, remote_addr) -> client id`` defaults to the
    broadcaster's (its rate limiter's, else bearer token or IP). ``manage_lifecycle``:
    start the broadcaster before serving and close it (clients get 1001) after."""
    identify = identify or broadcaster.identify

    async def realtime_websocket() -> None:
        ws = websocket._get_current_object()
        client_id = identify(ws.headers, ws.remote_addr)
        await ws.accept()
        try:
            conn = await broadcaster.connect(ws, client_id)
        except Rejected as rejected:
            await _close(ws, rejected.code, rejected.reason, broadcaster.limits.close_timeout)
            return
        await serve(broadcaster, conn)

    app.add_websocket(path, "realtime_websocket", realtime_websocket)
    if manage_lifecycle:
        app.before_serving(broadcaster.start)
        app.after_serving(broadcaster.close)


async def serve(broadcaster: Broadcaster, conn: Connection) -> None:
    """Runs one accepted, registered connection to its end."""
    tasks = [
        asyncio.create_task(_guarded(conn, _receive(broadcaster, conn)), name="ws-receive"),
        asyncio.create_task(_guarded(conn, conn.run_sender()), name="ws-send"),
        asyncio.create_task(_guarded(conn, conn.run_heartbeat()), name="ws-heartbeat"),
    ]
    try:
        await conn.closed.wait()
    finally:  # also when Quart cancels us: the client left
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        broadcaster.release(conn)
    assert conn.close_code is not None
    await _close(conn.ws, conn.close_code, conn.close_reason, broadcaster.limits.close_timeout)


async def _receive(broadcaster: Broadcaster, conn: Connection) -> None:
    while True:
        raw = await conn.ws.receive()
        broadcaster.handle_message(conn, raw)


async def _guarded(conn: Connection, work: Any) -> None:
    try:
        await work
    except asyncio.CancelledError:
        raise
    except Exception:
        log.exception("realtime connection %s failed", conn)
        conn.request_close(1011, "internal error", "error")


async def _close(ws: Any, code: int, reason: str, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await ws.close(code, reason)
