"""``GET /metrics``: the app's Prometheus metrics, in OpenMetrics (with exemplars)
when the scraper asks for it, else in the classic text format."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from quart import Blueprint, Response, request
from quart_schema import hide


def metrics_blueprint(registry: CollectorRegistry) -> Blueprint:
    """The ``/metrics`` route exposing ``registry`` (never cached by a proxy)."""
    endpoint = Blueprint("metrics", __name__)

    @endpoint.get("/metrics")
    @hide
    async def metrics() -> Response:
        encoder, content_type = choose_encoder(request.headers.get("Accept", ""))
        body = encoder(registry)
        return Response(body, content_type=content_type, headers={"Cache-Control": "no-store"})

    return endpoint
