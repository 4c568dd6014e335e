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
        "uptime_seconds": round(state.clock() - state.started_at, 1),
        "pipeline": _pipeline_status(state),
    }
    return _json(200, body)


@health.get("/health/ready")
@tag(["operations"])
@document_response(schemas.Readiness)
@document_response(schemas.Readiness, 503)
async def readiness() -> Response:
    """200 once the hot views are warm and the dashboard data is servable, else 503."""
    state = service_state()
    reason = await not_ready_reason(state)
    body = {"ready": reason is None, "reason": reason, "pipeline": _pipeline_status(state)}
    return _json(200 if reason is None else 503, body)


async def not_ready_reason(state: ServiceState) -> str | None:
    status = state.pipeline.status
    if not state.warmed:
        return f"cache not warm yet: {status.last_error or 'first snapshot in progress'}"
    entry = await state.views.peek(READINESS_VIEW)
    now = state.now_ms()
    if entry is None or not (entry.is_fresh(now) or entry.in_grace(now)):
        age = "missing" if entry is None else f"{entry.age_ms(now) / 1000:.0f}s old"
        detail = f" (last error: {status.last_error})" if status.last_error else ""
        return f"market data is stale: {age}{detail}"
    return None


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
