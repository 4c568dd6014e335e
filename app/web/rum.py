"""``POST /api/rum``: page-load timings beaconed by the dashboards' pages (real user
monitoring), fed into the ``virtuoso_page_load_seconds`` histogram of the app's metrics."""

from __future__ import annotations

from typing import Annotated, Literal

from prometheus_client import Histogram
from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response, abort, request
from quart_schema import tag, validate_request

from app.web.request_guards import no_content

MAX_BODY_BYTES = 1024  # a valid beacon is about 120 bytes

# Finite milliseconds up to two minutes; strict: no booleans, no numeric strings.
Milliseconds = Annotated[float, Field(ge=0, le=120_000, allow_inf_nan=False, strict=True)]


class RumBeacon(BaseModel):
    model_config = ConfigDict(extra="forbid")

    device: Literal["desktop", "mobile"]
    page: Literal["/", "/mobile"]
    ttfb_ms: Milliseconds
    dom_ready_ms: Milliseconds
    first_data_ms: Milliseconds


def rum_blueprint(page_load: Histogram) -> Blueprint:
    """``POST /api/rum`` feeding ``page_load`` (seconds, labelled device and phase)."""
    rum = Blueprint("rum", __name__)

    @rum.before_request
    async def limit_body() -> None:
        """A beacon is tiny: a larger declared Content-Length is refused (413) before the
        body is read; a body sent without a length (chunked) is read — bounded by the
        app-wide limit — and refused (413) when it turns out larger."""
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            abort(413)
        if request.content_length is None and request.method == "POST":
            body = await request.get_data(cache=True)  # kept for the validation that follows
            if len(body) > MAX_BODY_BYTES:
                abort(413)

    @rum.post("/api/rum")
    @tag(["operations"])
    @no_content
    @validate_request(RumBeacon)
    async def record(data: RumBeacon) -> Response:
        """Records one page load's timings; 204, or 400 for a malformed beacon."""
        for phase, ms in (
            ("ttfb", data.ttfb_ms),
            ("dom_ready", data.dom_ready_ms),
            ("first_data", data.first_data_ms),
        ):
            page_load.labels(device=data.device, phase=phase).observe(ms / 1000)
        return Response(status=204)

    return rum
