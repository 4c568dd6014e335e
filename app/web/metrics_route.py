"""``GET /metrics``: the app's Prometheus metrics, in OpenMetrics (with exemplars)
when the scraper asks for it, else in the classic text format."""

from __future__ import annotations

from prometheus_client.exposition import choose_encoder
from quart import Blueprint, Response, current_app, request
from quart_schema import hide

from app.observability.metrics import EXTENSION_KEY

metrics_endpoint = Blueprint("metrics", __name__)


@metrics_endpoint.get("/metrics")
@hide
async def metrics() -> Response:
    encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
    body = encoder(current_app.extensions[EXTENSION_KEY].registry)
    return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})
