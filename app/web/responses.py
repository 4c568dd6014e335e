"""Serving stored views: ETag, Cache-Control, 304, and a JSON 503 when there is no data."""

from __future__ import annotations

from quart import Response, request

from app.web.errors import json_error
from app.web.state import ServiceState, service_state

# Clients may keep a copy but must revalidate it: the ETag makes that a cheap 304.
CACHE_CONTROL = "public, no-cache"


def serve_view(name: str) -> Response:
    state = service_state()
    view = state.store.get(name)
    if view is None:
        return data_unavailable(state)
    headers = {"ETag": view.etag, "Cache-Control": CACHE_CONTROL}
    if etag_matches(request.headers.get("If-None-Match", ""), view.etag):
        return Response(b"", status=304, headers=headers)
    body = view.body_at(state.now_ms(), state.stale_after_ms)
    return Response(body, status=200, content_type="application/json", headers=headers)


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/"x"`` matches ``"x"``; ``*`` matches any."""
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


def data_unavailable(state: ServiceState) -> Response:
    status = state.pipeline.status
    reason = status.last_error or "the first market snapshot is still being built"
    retry = max(1, int(state.settings.refresh_seconds))
    return json_error(
        503,
        "data_unavailable",
        f"no market data yet: {reason}",
        headers={"Retry-After": str(retry)},
        retry_after_seconds=retry,
    )
