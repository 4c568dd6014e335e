"""The Quart WebSocket route of the live updates (``/ws`` by default).

Per connection: check the ``Origin`` (a foreign browser page: HTTP 403), identify the
client, count the handshake in its bucket (too many: HTTP 429 with Retry-After) — both
refused before the upgrade, with a JSON body — then accept, take a slot (over a
limit: close 1008 or 1013 with the reason), then three tasks — receive loop, sender,
heartbeat — until the connection asks to close (slow, silent, abusive, shutdown) or the
client leaves (Quart cancels the handler: the CancelledError is re-raised after
clean-up). The slot and subscriptions are always released. Closing a stuck client is
bounded by ``close_timeout``: its close frame then stays in the socket's buffer.

hypercorn: set ``websocket_max_message_size`` above ``WsLimits.max_message_bytes``
(e.g. 64 KiB against 4 KiB) so an oversized message gets an ``error`` answer and only
a huge one is closed by hypercorn itself (1009). Registering the route also installs
``hypercorn_stream`` (a malformed frame gets a close frame, 1007 or 1002, not a dropped
connection).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable
from typing import Any

import orjson
from quart import Quart, Response, websocket

from app.realtime import hypercorn_stream
from app.realtime.admission import Rejected
from app.realtime.broadcaster import Broadcaster
from app.realtime.connection import Connection
from app.realtime.origin import OriginPolicy

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
    origins: OriginPolicy | None = None,
    allowed_origins: Iterable[str] = (),
) -> None:
    """Adds the route. ``identify(headers, remote_addr) -> client id`` defaults to the
    broadcaster's (its rate limiter's, else bearer token or IP). ``manage_lifecycle``:
    start the broadcaster before serving and close it (clients get 1001) after.
    ``origins``: the Origin check; by default the page's own origin and
    ``allowed_origins``, trusting forwarded headers as the broadcaster's rate limiter
    trusts ``X-Forwarded-For``."""
    identify = identify or broadcaster.identify
    if origins is None:
        limits = broadcaster.rate_limiter.limits if broadcaster.rate_limiter else None
        origins = OriginPolicy(
            allowed_origins,
            trust_forwarded=limits is not None and limits.trust_forwarded_for,
            proxy_hops=limits.proxy_hops if limits is not None else 1,
        )
    hypercorn_stream.install()

    async def realtime_websocket() -> Response | None:
        # Quart types its ``websocket`` LocalProxy as Websocket, hiding the proxy's method.
        ws = websocket._get_current_object()  # type: ignore[attr-defined]
        refusal = origins.refusal(ws.headers, ws.scheme)
        if refusal is not None:
            broadcaster.stats.disconnects["rejected_origin"] += 1
            return refuse(403, "origin_not_allowed", refusal)
        client_id = identify(ws.headers, ws.remote_addr)
        limited = await broadcaster.admit_handshake(client_id)
        if limited is not None:
            retry = str(limited.retry_after_seconds)
            message = f"too many WebSocket handshakes from this client; retry in {retry} s"
            return refuse(429, "rate_limited", message, {"Retry-After": retry})
        await ws.accept()
        try:
            writer = hypercorn_stream.frame_writer(ws.scope)
            conn = await broadcaster.connect(ws, client_id, writer)
        except Rejected as rejected:
            await _close(ws, rejected.code, rejected.reason, broadcaster.limits.close_timeout)
            return None
        await serve(broadcaster, conn)
        return None

    app.add_websocket(path, "realtime_websocket", realtime_websocket)
    if manage_lifecycle:
        app.before_serving(broadcaster.start)
        app.after_serving(broadcaster.close)


def refuse(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    """A handshake refused before the upgrade: the service's JSON error body."""
    body = orjson.dumps({"error": code, "message": message})
    return Response(body, status=status, content_type="application/json", headers=headers)


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
        try:
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:  # Quart may cancel us while we wait here too: release regardless
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
