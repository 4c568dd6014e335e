"""Liveness (``/health``) and readiness (``/health/ready``: warm, fresh data present).

Anyone may ask both, but only the *details* — backend addresses, replica name,
breakers by server, the last exchange error's text — are operational secrets: they are
shown on the monitoring listener, to a caller with the admin token, or to everyone when
``VIRTUOSO_PUBLIC_DETAILS`` is on. Everyone else gets the verdict and public facts.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import orjson
from quart import Blueprint, Response, request
from quart_schema import document_response, tag

from app.market.listing import DELISTED, NOT_LISTED
from app.services.catalogue import READINESS_VIEW
from app.state import ServiceState, service_state
from app.web import schemas
from app.web.auth import ADMIN_TOKEN
from app.web.listeners import is_monitoring_request

health = Blueprint("health", __name__)

TOKEN_FAMILY = "admin"  # the rate-limit family a token shown to /health counts against


@health.get("/health")
@tag(["operations"])
@document_response(schemas.Health)
async def liveness() -> Response:
    """The process answers; says which exchange and cache tiers it runs on (with
    details: the replica, every breaker by name, the last error)."""
    state = service_state()
    details = await shows_details(state)
    listing = listing_reasons(state)
    body = {
        "status": "degraded" if listing else "ok",
        "reasons": listing,
        "exchange": state.settings.exchange,
        "simulated": state.settings.exchange == "simulated",
        "cache": cache_summary(state),
        "uptime_seconds": round(state.clock() - state.started_at, 1),
        "pipeline": _pipeline_status(state, details),
        "details": details,
    }
    if details:
        body["replica"] = state.runtime.replica_id
        body["breakers"] = {name: b["state"] for name, b in breakers(state).items()}
    return _json(200, body)


async def shows_details(state: ServiceState) -> bool:
    """Whether this request may see operational details (see the module docstring).
    A token presented here counts against the client's ``admin`` rate limit, as on the
    operator endpoints: over it, no details, so /health is no token-guessing oracle."""
    if state.settings.public_details or is_monitoring_request():
        return True
    if "Authorization" not in request.headers or not await _may_try_token(state):
        return False
    return ADMIN_TOKEN.is_met()


async def _may_try_token(state: ServiceState) -> bool:
    limiter = state.rate_limiter
    family = None if limiter is None else limiter.families.get(TOKEN_FAMILY)
    if limiter is None or family is None or not limiter.limits.enabled:
        return True
    # The caller's address, not its token: a right guess must not earn a fresh bucket.
    forwarded = {"X-Forwarded-For": request.headers.get("X-Forwarded-For")}
    client = limiter.identify(forwarded, request.remote_addr)
    decision = await limiter.check(client, family)
    return decision is None or decision.allowed


@health.get("/health/ready")
@tag(["operations"])
@document_response(schemas.Readiness)
@document_response(schemas.Readiness, 503)
async def readiness() -> Response:
    """200 while data can be served: ``status`` ``ok``, or ``degraded`` (stale data, an
    open breaker, a cache tier down) with the reasons; 503 ``unavailable`` when nothing
    can be served (not warm yet, or data older than its max_stale)."""
    state = service_state()
    details = await shows_details(state)
    status, reasons = await readiness_verdict(state, details)
    body = {
        "ready": status != "unavailable",
        "status": status,
        "reasons": reasons,
        "pipeline": _pipeline_status(state, details),
    }
    return _json(503 if status == "unavailable" else 200, body)


async def readiness_verdict(state: ServiceState, details: bool = True) -> tuple[str, list[str]]:
    """``(ok | degraded | unavailable, reasons)``. A breaker that is not closed —
    open, or half-open while it probes — is a backend that has not answered again
    yet: degraded. ``details`` adds the last error's text and backend addresses."""
    status = state.collector.status
    last_error = f" (last error: {status.last_error})" if status.last_error and details else ""
    if not state.warmed:
        waiting = f"cache not warm yet{last_error or ': first snapshot in progress'}"
        return "unavailable", [waiting, *state.collector.problems()]
    entry = await state.views.peek(READINESS_VIEW)
    now = state.now_ms()
    if entry is None or not entry.usable_if_error(now):
        return "unavailable", [f"no market data young enough to serve{last_error}"]
    reasons = []
    if not entry.is_fresh(now):
        reasons.append(f"market data is stale: {entry.age_ms(now) / 1000:.0f}s old{last_error}")
    not_closed = {
        (name if details else public_breaker_name(name)): b["state"]
        for name, b in breakers(state).items()
        if b["state"] != "closed"
    }
    reasons += [
        f"circuit {name} is {'open' if s == 'open' else 'half-open (probing)'}"
        for name, s in not_closed.items()
    ]
    reasons += [
        f"cache tier {tier} is down" for tier, up in cache_summary(state)["tiers"].items() if not up
    ]
    reasons += listing_reasons(state)
    reasons += state.collector.problems()
    return ("degraded" if reasons else "ok"), reasons


def listing_reasons(state: ServiceState) -> list[str]:
    """One reason per pair that was served and no longer is (delisted, or no data
    served): ``"SOLUSDT no longer listed: bybit no longer lists it (since
    2026-11-30T16:02:00Z)"``. Configured pairs never listed since start-up are named in
    ``pipeline.unlisted_symbols`` only. The reasons are the service's own words: no
    exchange error text, no address."""
    reasons = []
    for issue in state.collector.status.delisted:
        if issue["status"] == NOT_LISTED:
            continue
        label = "no longer listed" if issue["status"] == DELISTED else "no longer served"
        since = datetime.fromtimestamp(issue["since"] / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        reasons.append(f"{issue['symbol']} {label}: {issue['reason']} (since {since})")
    return reasons


def public_breaker_name(name: str) -> str:
    """A breaker's name without a server address: ``memcached:10.0.0.5:11211`` →
    ``memcached``; exchange operations (``bybit:tickers``) and ``redis`` unchanged."""
    family = name.partition(":")[0]
    return family if family == "memcached" else name


def breakers(state: ServiceState) -> dict[str, dict]:
    """Every circuit breaker of this process: exchange operations, Memcached servers, Redis."""
    found: dict[str, dict] = dict(state.collector.exchange_breakers())
    runtime = state.runtime
    if runtime.memcached is not None:
        found |= {
            f"memcached:{name}": b.snapshot() for name, b in runtime.memcached.breakers.items()
        }
    if runtime.redis_guard is not None:
        found["redis"] = runtime.redis_guard.breaker.snapshot()
    return found


def cache_summary(state: ServiceState) -> dict:
    runtime = state.runtime
    tiers = {"l1": True}
    if runtime.memcached is not None:
        tiers["memcached"] = runtime.memcached.available
    if runtime.backup is not None:
        tiers["redis"] = runtime.backup.available
    return {"tiers": tiers, "embedded": len(tiers) == 1}


def _pipeline_status(state: ServiceState, details: bool) -> dict:
    status = dataclasses.asdict(state.collector.status)
    if not details:  # the exchange's error text can name hosts and URLs
        status["last_error"] = None if status["last_error"] is None else "hidden"
    # the newest data published: streamed ticks rebuild the views between refreshes
    last = state.collector.status.data_at_ms or state.collector.status.last_success_ms
    status["data_age_ms"] = None if last is None else state.now_ms() - last
    return status


def _json(status: int, body: dict) -> Response:
    return Response(
        orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
