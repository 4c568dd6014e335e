"""Operator endpoints: cache metrics, invalidation, warming; all need the admin token."""

from __future__ import annotations

import orjson
from pydantic import BaseModel, ConfigDict, Field, model_validator
from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_request

from app.cache.keys import FAMILIES
from app.cache.layered import NothingToServe
from app.state import service_state
from app.web import schemas
from app.web.auth import require_admin
from app.web.errors import json_error
from app.web.health import breakers

admin = Blueprint("admin", __name__)


class InvalidateRequest(BaseModel):
    """Exactly one of ``family`` (a cache family) or ``view`` (a view name)."""

    model_config = ConfigDict(extra="forbid")
    family: str | None = Field(default=None, max_length=64)
    view: str | None = Field(default=None, max_length=128)

    @model_validator(mode="after")
    def _exactly_one(self) -> InvalidateRequest:
        if (self.family is None) == (self.view is None):
            raise ValueError("give exactly one of 'family' or 'view'")
        if self.family is not None and self.family not in FAMILIES:
            raise ValueError(f"unknown family {self.family!r}; valid: {', '.join(FAMILIES)}")
        return self


@admin.get("/api/cache/metrics")
@tag(["operations"])
@document_response(schemas.CacheMetrics)
@require_admin
async def cache_metrics() -> Response:
    """Hits, misses, stale serves, errors and hit ratio per tier and family; tier memory.
    Names backend servers and versions: admin token only."""
    state = service_state()
    runtime = state.runtime
    cache = runtime.cache
    body = cache.stats.summary() | {
        "l1": {
            "bytes": cache.l1.bytes,
            "max_bytes": cache.l1.max_bytes,
            "items": len(cache.l1),
            "items_by_family": cache.l1.items_by_family(),
            "evictions": cache.l1.evictions,
        },
        "memcached": await runtime.memcached.stats() if runtime.memcached else None,
        "redis": await runtime.backup.stats() if runtime.backup else None,
        "adaptive_ttl": state.adaptive.report(),
        "generations": cache.generations.snapshot(),
        "breakers": breakers(state),
        "coherence": {
            "messages_applied": runtime.coherence.applied,
            "bus": runtime.bus.snapshot() if runtime.bus else None,
        },
    }
    return Response(
        orjson.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"}
    )


@admin.post("/api/cache/invalidate")
@tag(["operations"])
@validate_request(InvalidateRequest)
@document_response(schemas.Invalidated)
@require_admin
async def invalidate(data: InvalidateRequest) -> Response:
    """Invalidates a family (or one view) and everything downstream, on every replica."""
    state = service_state()
    coherence = state.runtime.coherence
    if data.family is not None:
        affected = await coherence.invalidate_families([data.family])
    else:
        try:
            key, family = state.views.locate(data.view or "")
        except ValueError as error:
            return json_error(400, "unknown_view", str(error))
        affected = await coherence.invalidate_key(key, family)
    return Response(orjson.dumps({"invalidated": affected}), content_type="application/json")


@admin.post("/api/cache/warm")
@tag(["operations"])
@document_response(schemas.WarmReport)
@document_response(schemas.WarmIncomplete, 503)
@require_admin
async def warm() -> Response:
    """Computes the hot views and puts each into every shared tier (Memcached, Redis),
    read back before answering. 200: every hot view is in every shared tier (``failed``
    lists on-demand views the source could not give); 503 ``warm_incomplete`` with the
    same report: ``not_warmed`` names the views a tier does not hold (it is down or
    refused them); 503 ``data_unavailable``: no hot view could be had."""
    state = service_state()
    try:
        report = await state.warmer.warm(state.known_symbols)
    except NothingToServe as error:
        return json_error(503, "data_unavailable", str(error))
    if report["not_warmed"]:
        tiers = sorted({tier for names in report["not_warmed"].values() for tier in names})
        message = f"{len(report['not_warmed'])} hot views are not in {', '.join(tiers)}"
        return json_error(503, "warm_incomplete", message, **report)
    return Response(orjson.dumps(report), content_type="application/json")
