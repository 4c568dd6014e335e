"""Liveness (``/health``) and readiness (``/health/ready``: data present and fresh)."""

from __future__ import annotations

import dataclasses

import orjson
from quart import Blueprint, Response
from quart_schema import document_response, tag

from app.web import schemas
from app.web.state import ServiceState, service_state

health = Blueprint("health", __name__)


@health.get("/health")
@tag(["operations"])
@document_response(schemas.Health)
async def liveness() -> Response:
    """The process answers; says which exchange and cache it runs on."""
    state = service_state()
    body = {
        "status": "ok",
        "exchange": state.settings.exchange,
        "simulated": state.settings.exchange == "simulated",
        "cache": "in-process",
        "uptime_seconds": round(state.clock() - state.started_at, 1),
        "pipeline": _pipeline_status(state),
    }
    return _json(200, body)


@health.get("/health/ready")
@tag(["operations"])
@document_response(schemas.Readiness)
@document_response(schemas.Readiness, 503)
async def readiness() -> Response:
    """200 when a snapshot exists and is younger than stale_after_seconds, else 503."""
    state = service_state()
    reason = not_ready_reason(state)
    body = {"ready": reason is None, "reason": reason, "pipeline": _pipeline_status(state)}
    return _json(200 if reason is None else 503, body)


def not_ready_reason(state: ServiceState) -> str | None:
    status = state.pipeline.status
    if status.last_success_ms is None:
        return f"no market data yet: {status.last_error or 'first snapshot in progress'}"
    age_ms = state.now_ms() - status.last_success_ms
    if age_ms > state.stale_after_ms:
        detail = f" (last error: {status.last_error})" if status.last_error else ""
        return f"market data is stale: {age_ms / 1000:.0f}s old{detail}"
    return None


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
