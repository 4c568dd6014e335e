"""HTTP observability around the Quart app: the request-duration histogram (by route
template, method and status, with the trace id as exemplar) and OpenTelemetry's ASGI
middleware for server spans. WebSocket connections skip both: ``/ws`` has its own
metrics, and a span lasting a connection's life would tell nothing."""

from __future__ import annotations

import time
from typing import Any, cast

from opentelemetry import trace
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from quart import Quart, request

from app.observability.metrics import Metrics
from app.observability.tracing import current_trace_id

# Where the route template of a request is left in its ASGI scope (set by the app,
# read by the middleware once the response is sent). "other": no route matched.
ROUTE_SCOPE_KEY = "virtuoso.route"
UNMATCHED_ROUTE = "other"
# No spans for scrapes and probes: they would drown the traces that matter.
UNTRACED_URLS = "/metrics,/health"

Asgi = Any  # an ASGI callable


class HttpMetricsMiddleware:
    def __init__(self, app: Asgi, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        started = time.perf_counter()
        status = 500  # what the client sees if the app fails before answering

        async def send_noting_status(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_noting_status)
        finally:
            self.metrics.observe_http(
                scope.get(ROUTE_SCOPE_KEY, UNMATCHED_ROUTE),
                scope.get("method", "GET"),
                status,
                time.perf_counter() - started,
                current_trace_id(),
            )


def install_http_observability(
    app: Quart, metrics: Metrics, tracer_provider: trace.TracerProvider | None
) -> None:
    """Wraps ``app.asgi_app``: spans (when tracing is on) outside, metrics inside, so
    the metrics see the request's span and record its trace id as exemplar."""
    inner = app.asgi_app
    http: Asgi = HttpMetricsMiddleware(inner, metrics)
    if tracer_provider is not None:
        http = OpenTelemetryMiddleware(
            http,
            excluded_urls=UNTRACED_URLS,
            exclude_spans=["receive", "send"],
            tracer_provider=tracer_provider,
        )

    # Any: Quart types scopes as hypercorn's TypedDicts, the middlewares as plain dicts.
    async def asgi_app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            await http(scope, receive, send)
        else:
            await inner(scope, receive, send)

    app.asgi_app = asgi_app  # type: ignore[method-assign]

    @app.before_request
    async def note_route() -> None:
        route = request.url_rule.rule if request.url_rule is not None else UNMATCHED_ROUTE
        # ASGI allows extra scope keys; the TypedDict lists only the standard ones.
        cast(dict, request.scope)[ROUTE_SCOPE_KEY] = route
        span = trace.get_current_span()
        if span.is_recording():
            span.update_name(f"{request.method} {route}")
            span.set_attribute("http.route", route)
