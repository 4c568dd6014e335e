"""Liveness (``/health``) and readiness (``/health/ready``: warm, fresh data present)."""

from __future__ import annotations

import dataclasses

import orjson
from quart import Blueprint, Response
from quart_schema import document_response, tag

from app.web import schemas
from app.web.state import ServiceState, service_state

health = Blueprint("health", __name__)

READINESS_VIEW = "dashboard:desktop"


@health.get("/health")
@tag(["operations"])
@document_response(schemas.Health)
async def liveness() -> Response:
    """The process answers; says which exchange and cache tiers it runs on."""
    state = service_state()
    body = {
        "status": "ok",
        "exchange": state.settings.exchange,
        "simulated": state.settings.exchange == "simulated",
        "cache": cache_summary(state),
        "replica": state.runtime.replica_id,
        "breakers": {name: b["state"] for name, b in breakers(state).items()},
        "uptime_seconds": round(state.clock() - state.started_at, 1),
        "pipeline": _pipeline_status(state),
    }
    return _json(200, body)


@health.get("/health/ready")
@tag(["operations"])
@document_response(schemas.Readiness)
@document_response(schemas.Readiness, 503)
async def readiness() -> Response:
    """200 while data can be served: ``status`` ``ok``, or ``degraded`` (stale data, an
    open breaker, a cache tier down) with the reasons; 503 ``unavailable`` when nothing
    can be served (not warm yet, or data older than its max_stale)."""
    state = service_state()
    status, reasons = await readiness_verdict(state)
    body = {
        "ready": status != "unavailable",
        "status": status,
        "reasons": reasons,
        "pipeline": _pipeline_status(state),
    }
    return _json(503 if status == "unavailable" else 200, body)


async def readiness_verdict(state: ServiceState) -> tuple[str, list[str]]:
    status = state.pipeline.status
    last_error = f" (last error: {status.last_error})" if status.last_error else ""
    if not state.warmed:
        return "unavailable", [f"cache not warm yet{last_error or ': first snapshot in progress'}"]
    entry = await state.views.peek(READINESS_VIEW)
    now = state.now_ms()
    if entry is None or not entry.usable_if_error(now):
        return "unavailable", [f"no market data young enough to serve{last_error}"]
    reasons = []
    if not entry.is_fresh(now):
        reasons.append(f"market data is stale: {entry.age_ms(now) / 1000:.0f}s old{last_error}")
    reasons += [
        f"circuit {name} is open"
        for name, b in breakers(state).items()
        if b["state"] == "open"  # half-open: the next probe decides
    ]
    reasons += [
        f"cache tier {tier} is down" for tier, up in cache_summary(state)["tiers"].items() if not up
    ]
    return ("degraded" if reasons else "ok"), reasons


def breakers(state: ServiceState) -> dict[str, dict]:
    """Every circuit breaker of this process: exchange operations, Memcached servers, Redis."""
    found: dict[str, dict] = {}
    source_breakers = getattr(state.pipeline.source, "breakers", None)
    if callable(source_breakers):
        exchange = state.pipeline.source.name
        found |= {f"{exchange}:{name}": b.snapshot() for name, b in source_breakers().items()}
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


def _pipeline_status(state: ServiceState) -> dict:
    status = dataclasses.asdict(state.pipeline.status)
    last = state.pipeline.status.last_success_ms
    status["data_age_ms"] = None if last is None else state.now_ms() - last
    return status


def _json(status: int, body: dict) -> Response:
    return Response(
        orjson.dumps(body),
        status=status,
        content_type="application/json",
        headers={"Cache-Control": "no-store"},
    )
