"""Serving cached views: ETag, Cache-Control, 304, zstd for clients that take it,
freshness fields spliced in, and a JSON 503 when there is nothing to serve."""

from __future__ import annotations

import dataclasses

import orjson
from quart import Response, request

from app.cache.codec import zstd_frame
from app.cache.layered import CacheRead, NothingToServe
from app.state import ServiceState, service_state
from app.web.errors import json_error

# Clients may keep a copy but must revalidate it: the ETag makes that a cheap 304.
CACHE_CONTROL = "public, no-cache"


async def serve_view(name: str) -> Response:
    """The view ``name`` as the response to this request: marked stale past its TTL, and
    whenever the collector that makes it is known gone (its status reports stopped),
    however young the copy: a silent feed is never shown as fresh. A JSON 503 when
    there is nothing to serve."""
    state = service_state()
    try:
        read = await state.views.read(name)
    except NothingToServe as error:
        return data_unavailable(state, str(error))
    if not read.stale and state.collector.problems():
        read = dataclasses.replace(read, stale=True)
    reencode = not state.settings.serialize_once
    return view_response(read, state.now_ms(), reencode=reencode)


def view_response(read: CacheRead, now_ms: int, reencode: bool = False) -> Response:
    """``reencode`` (benchmark ablation of serialize-once): decode the stored view and
    encode it again for this request, compressing per request too."""
    entry = read.entry
    etag = stale_etag(entry.etag) if read.stale else entry.etag
    headers = {
        "ETag": etag,
        "Cache-Control": CACHE_CONTROL,
        "Vary": "Accept-Encoding",
        "X-Cache": f"{read.tier}{' stale' if read.stale else ''}",
    }
    if etag_matches(request.headers.get("If-None-Match", ""), etag):
        return Response(b"", status=304, headers=headers)
    wants_zstd = accepts_zstd(request.headers.get("Accept-Encoding", ""))
    if reencode:
        fields = {"age_ms": entry.age_ms(now_ms), "stale": read.stale}
        body = orjson.dumps(fields | orjson.loads(entry.body))
        if entry.compressed is not None and wants_zstd:
            headers["Content-Encoding"] = "zstd"
            body = zstd_frame(body)
        return Response(body, status=200, content_type="application/json", headers=headers)
    head = b'{"age_ms":%d,"stale":%s,' % (entry.age_ms(now_ms), b"true" if read.stale else b"false")
    if entry.compressed is not None and wants_zstd:
        headers["Content-Encoding"] = "zstd"
        body = zstd_frame(head) + entry.compressed  # concatenated zstd frames are one stream
    else:
        body = head + entry.body[1:]
    return Response(body, status=200, content_type="application/json", headers=headers)


def stale_etag(etag: str) -> str:
    """The ETag of a view served stale (``W/"x"`` → ``W/"x-stale"``): a client that
    revalidates the copy it got while the view was fresh gets the body that says
    ``stale: true``, not a 304 that keeps ``stale: false`` on its screen."""
    return etag[:-1] + '-stale"' if etag.endswith('"') else etag + "-stale"


def accepts_zstd(accept_encoding: str) -> bool:
    for item in accept_encoding.split(","):
        coding, _, params = item.strip().partition(";")
        if coding.strip().lower() == "zstd":
            return params.replace(" ", "") not in ("q=0", "q=0.0", "q=0.00", "q=0.000")
    return False


def etag_matches(if_none_match: str, etag: str) -> bool:
    """Weak comparison (RFC 9110 §13.1.2): ``W/"x"`` matches ``"x"``; ``*`` matches any."""
    opaque = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*" or candidate.removeprefix("W/") == opaque:
            return True
    return False


def data_unavailable(state: ServiceState, reason: str | None = None) -> Response:
    status = state.collector.status
    reason = reason or status.last_error or "the first market snapshot is still being built"
    retry = max(1, int(state.settings.refresh_seconds))
    return json_error(
        503,
        "data_unavailable",
        f"no market data to serve: {reason}",
        headers={"Retry-After": str(retry)},
        retry_after_seconds=retry,
    )


def no_store_json(body: dict, status: int = 200) -> Response:
    """``body`` as JSON with ``status``, never cached (the answers of writes and of
    the stores' own lists)."""
    return Response(
        orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )


def store_down(code: str, what: str, cause: str) -> Response:
    """503 ``code``: ``what`` cannot be read or saved now, nothing changed (``cause``:
    the error's words, never a secret); retry in 5 s."""
    return json_error(
        503,
        code,
        f"{what} cannot be read or saved right now, nothing was changed ({cause})",
        headers={"Retry-After": "5"},
    )
