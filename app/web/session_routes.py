"""The user's session: a signed cookie naming server-side data (Redis or in-process).
Holds the watchlist and view preferences the dashboards use."""

from __future__ import annotations

import orjson
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, request
from quart_schema import document_response, tag, validate_request

from app.backends.errors import TierUnavailable
from app.services.sessions import MAX_WATCHLIST, validate_watchlist
from app.state import ServiceState, service_state
from app.web.errors import json_error

sessions = Blueprint("sessions", __name__)

COOKIE = "virtuoso_session"


class Watchlist(BaseModel):
    model_config = ConfigDict(extra="forbid")
    watchlist: list[str] = Field(max_length=MAX_WATCHLIST)


class StoredWatchlist(Watchlist):
    model_config = ConfigDict(extra="forbid")
    unserved: list[str] = Field(
        default_factory=list,
        description="symbols of the watchlist this service does not serve now (e.g. "
        "delisted): kept, so a later save with them still works, and shown marked",
    )


@sessions.get("/api/session/watchlist")
@tag(["session"])
@document_response(StoredWatchlist)
async def get_watchlist() -> Response:
    """This session's watchlist (empty for a new session)."""
    state = service_state()
    session_id, is_new = _session_id(state)
    try:
        data = {} if is_new else await state.sessions.load(session_id)
    except TierUnavailable:
        return _store_down()
    return _with_cookie(state, _shown(state, data.get("watchlist", [])), session_id)


@sessions.put("/api/session/watchlist")
@tag(["session"])
@validate_request(Watchlist)
@document_response(StoredWatchlist)
async def put_watchlist(data: Watchlist) -> Response:
    """Replaces the watchlist: served symbols (any spelling) and those already in it
    that are no longer served (kept, listed in ``unserved``), at most 50."""
    state = service_state()
    session_id, is_new = _session_id(state)
    try:
        stored = {} if is_new else await state.sessions.load(session_id)
    except TierUnavailable:
        return _store_down()
    served = set(state.known_symbols) - set(state.unserved_symbols)
    allowed = served | set(stored.get("watchlist", []))
    try:
        watchlist = validate_watchlist(data.watchlist, allowed)
    except ValueError as error:
        return json_error(400, "invalid_watchlist", str(error))
    try:
        await state.sessions.save(session_id, stored | {"watchlist": watchlist})
    except TierUnavailable:
        return _store_down()
    return _with_cookie(state, _shown(state, watchlist), session_id)


def _shown(state: ServiceState, watchlist: list[str]) -> dict:
    """The body: the watchlist and which of it is not served now (not collected, or
    delisted / unserved by the exchange)."""
    served = set(state.known_symbols) - set(state.unserved_symbols)
    return {"watchlist": watchlist, "unserved": [s for s in watchlist if s not in served]}


def _session_id(state: ServiceState) -> tuple[str, bool]:
    session_id = state.cookies.unsign(request.cookies.get(COOKIE))
    return (session_id, False) if session_id else (state.cookies.new_id(), True)


def _with_cookie(state: ServiceState, body: dict, session_id: str) -> Response:
    response = Response(
        orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"}
    )
    response.set_cookie(
        COOKIE,
        state.cookies.sign(session_id),
        max_age=state.cookies.max_age_seconds,
        httponly=True,
        samesite="Lax",
        secure=client_uses_https(state),
    )
    return response


def client_uses_https(state: ServiceState) -> bool:
    """Whether the client's own connection is HTTPS. Behind trusted proxies that is what
    the nearest one says in X-Forwarded-Proto (nginx sets it: the last entry); without
    them a client could claim anything there, so only the request's scheme counts."""
    hops = state.settings.trusted_proxy_hops
    forwarded = ",".join(request.headers.getlist("X-Forwarded-Proto"))
    if hops and forwarded.strip():
        return forwarded.split(",")[-1].strip().lower() == "https"
    return request.scheme == "https"


def _store_down() -> Response:
    return json_error(
        503,
        "session_store_unavailable",
        "sessions cannot be read or saved right now; nothing was changed",
        headers={"Retry-After": "5"},
    )
