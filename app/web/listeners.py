"""The public and the monitoring listener: one app, two sockets.

``virtuoso serve`` serves the app through :class:`ListenerApp` on every socket it
opens. The wrapper names the listener in the ASGI scope (``scope["extensions"]
["virtuoso.listener"]``), so a route can tell where a request came from
(:func:`is_monitoring_request`), and refuses HTTP/2 on a cleartext socket: hypercorn
switches to HTTP/2 on ``Upgrade: h2c`` or the ``PRI *`` preface before the app sees
the request, and no setting of hypercorn 0.18 turns that off, so the 101 (or the
server preface) still goes out, but no request made over that connection is served.

With ``VIRTUOSO_MONITORING_BIND`` set, :func:`install_listener_split` keeps the
operational endpoints (:data:`OPERATIONAL_PATHS`) off the public listener (404, as for
any unknown path) and everything but them and ``/health*`` off the monitoring one.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson
from quart import Quart, abort, has_request_context, has_websocket_context, request, websocket

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

LISTENER_KEY = "virtuoso.listener"
PUBLIC = "public"
MONITORING = "monitoring"

# Served only on the monitoring listener when there is one.
OPERATIONAL_PATHS = frozenset(
    {"/metrics", "/api/cache/metrics", "/api/cache/invalidate", "/api/cache/warm"}
)
HEALTH_PATH = "/health"  # and /health/…: served on both listeners

HTTP2_REFUSED = orjson.dumps(
    {
        "error": "http_version_not_supported",
        "message": "HTTP/2 is not served on a cleartext connection; use HTTP/1.1",
    }
)


class ListenerApp:
    """``app`` as listener ``name`` serves it. The listener that ``owns_lifespan``
    passes the lifespan to the app (its startup and shutdown run once); any other
    answers its own lifespan, its startup completing once ``started`` is set, so it
    opens its socket only after the app has started."""

    def __init__(
        self, app: ASGIApp, name: str, owns_lifespan: bool, started: asyncio.Event
    ) -> None:
        self.app = app
        self.name = name
        self.owns_lifespan = owns_lifespan
        self.started = started

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            if self.owns_lifespan:
                await self.app(scope, receive, self._watch_startup(send))
            else:
                await self._own_lifespan(receive, send)
            return
        if is_cleartext_http2(scope):
            await refuse_http2(scope, receive, send)
            return
        extensions = {**(scope.get("extensions") or {}), LISTENER_KEY: self.name}
        await self.app({**scope, "extensions": extensions}, receive, send)

    def _watch_startup(self, send: Send) -> Send:
        async def watching(message: Message) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                self.started.set()

        return watching

    async def _own_lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.started.wait()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return


def listener_apps(app: ASGIApp, monitoring: bool) -> tuple[ListenerApp, ListenerApp | None]:
    """The public listener's app and, when ``monitoring``, the monitoring one's."""
    started = asyncio.Event()
    public = ListenerApp(app, PUBLIC, owns_lifespan=True, started=started)
    if not monitoring:
        return public, None
    return public, ListenerApp(app, MONITORING, owns_lifespan=False, started=started)


def is_cleartext_http2(scope: Scope) -> bool:
    """HTTP/2 without TLS: only an ``h2c`` upgrade or the ``PRI *`` preface gets there."""
    return scope.get("http_version") == "2" and scope.get("scheme") in ("http", "ws")


async def refuse_http2(scope: Scope, receive: Receive, send: Send) -> None:
    """505 for a request, a refused handshake (403) for a WebSocket."""
    if scope["type"] == "websocket":
        await receive()  # websocket.connect
        await send({"type": "websocket.close", "code": 1002})
        return
    headers = [(b"content-type", b"application/json"), (b"cache-control", b"no-store")]
    await send({"type": "http.response.start", "status": 505, "headers": headers})
    await send({"type": "http.response.body", "body": HTTP2_REFUSED})


def is_monitoring_request() -> bool:
    """Whether the current request or WebSocket came through the monitoring listener."""
    if has_request_context():
        scope = request.scope
    elif has_websocket_context():
        scope = websocket.scope
    else:
        return False
    return (scope.get("extensions") or {}).get(LISTENER_KEY) == MONITORING


def install_listener_split(app: Quart, monitoring: bool) -> None:
    """With a monitoring listener configured (``monitoring``): the operational endpoints
    answer 404 on the public listener, and everything but them and ``/health*`` answers
    404 on the monitoring listener. Without one: nothing changes."""
    if not monitoring:
        return

    @app.before_request
    async def keep_to_listener() -> None:
        if not served_here(request.path, is_monitoring_request()):
            abort(404)

    @app.before_websocket
    async def keep_sockets_public() -> None:
        if is_monitoring_request():
            abort(404)


def served_here(path: str, monitoring: bool) -> bool:
    """Whether ``path`` is served on this listener (``monitoring`` or the public one)."""
    path = re.sub("/{2,}", "/", path).rstrip("/") or "/"
    operational = path in OPERATIONAL_PATHS
    if monitoring:
        return operational or path == HEALTH_PATH or path.startswith(f"{HEALTH_PATH}/")
    return not operational
