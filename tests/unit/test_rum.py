"""``POST /api/rum``: browser page-load beacons into the page-load histogram."""

from __future__ import annotations

import json

import pytest
from quart import Quart
from quart_schema import QuartSchema

from app.observability.metrics import Metrics
from app.web.errors import register_error_handlers
from app.web.rum import rum_blueprint

PHASES = ("ttfb", "dom_ready", "first_data")
VALID = {"device": "mobile", "page": "/mobile", "ttfb_ms": 120, "dom_ready_ms": 640.5,
         "first_data_ms": 900}  # fmt: skip


METRICS = Metrics()
REGISTRY = METRICS.registry


@pytest.fixture
def client():
    app = Quart(__name__)
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(app)
    app.register_blueprint(rum_blueprint(METRICS.page_load))
    register_error_handlers(app)
    return app.test_client()


def count(device: str, phase: str) -> float:
    labels = {"device": device, "phase": phase}
    return REGISTRY.get_sample_value("virtuoso_page_load_seconds_count", labels) or 0.0


def all_counts() -> dict[tuple[str, str], float]:
    return {(d, p): count(d, p) for d in ("desktop", "mobile") for p in PHASES}


async def test_valid_beacon_is_recorded(client) -> None:
    before = all_counts()
    sum_before = (
        REGISTRY.get_sample_value(
            "virtuoso_page_load_seconds_sum", {"device": "mobile", "phase": "ttfb"}
        )
        or 0.0
    )
    response = await client.post("/api/rum", json=VALID)
    assert response.status_code == 204
    after = all_counts()
    for phase in PHASES:
        assert after["mobile", phase] == before["mobile", phase] + 1
        assert after["desktop", phase] == before["desktop", phase]
    sum_after = REGISTRY.get_sample_value(
        "virtuoso_page_load_seconds_sum", {"device": "mobile", "phase": "ttfb"}
    )
    assert sum_after == pytest.approx(sum_before + 0.12)


async def test_bucket_bounds_are_the_kpi_thresholds(client) -> None:
    await client.post("/api/rum", json=VALID | {"device": "desktop", "page": "/"})
    bounds = {
        s.labels["le"]
        for metric in REGISTRY.collect()
        if metric.name == "virtuoso_page_load_seconds"
        for s in metric.samples
        if s.name.endswith("_bucket")
    }
    expected = ("0.05", "0.1", "0.25", "0.3", "0.5", "0.8", "1.0", "1.5", "2.5", "5.0", "10.0")
    assert bounds == {*expected, "+Inf"}


BAD_BEACONS = {
    "extra field": VALID | {"user": "x"},
    "missing field": {k: v for k, v in VALID.items() if k != "first_data_ms"},
    "unknown device": VALID | {"device": "tablet"},
    "unknown page": VALID | {"page": "/admin"},
    "negative": VALID | {"ttfb_ms": -1},
    "over two minutes": VALID | {"dom_ready_ms": 120_000.5},
    "numeric string": VALID | {"ttfb_ms": "120"},
    "boolean": VALID | {"ttfb_ms": True},
    "null": VALID | {"ttfb_ms": None},
    "not an object": [VALID],
}


@pytest.mark.parametrize("body", BAD_BEACONS.values(), ids=BAD_BEACONS.keys())
async def test_bad_beacon_is_400_and_not_recorded(client, body) -> None:
    before = all_counts()
    response = await client.post("/api/rum", json=body)
    assert response.status_code == 400
    problem = await response.get_json()
    assert problem["error"] == "invalid_request"
    assert all_counts() == before


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity", "1e999"])
async def test_non_finite_numbers_are_400(client, literal) -> None:
    raw = json.dumps(VALID).replace('"ttfb_ms": 120', f'"ttfb_ms": {literal}')
    assert literal in raw
    before = all_counts()
    response = await client.post("/api/rum", data=raw, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert all_counts() == before


async def test_not_json_is_400(client) -> None:
    before = all_counts()
    response = await client.post("/api/rum", data="device=mobile")
    assert response.status_code == 400
    assert all_counts() == before


async def test_oversize_body_is_refused(client) -> None:
    before = all_counts()
    body = json.dumps(VALID | {"padding": "x" * 4096})
    headers = {"Content-Type": "application/json", "Content-Length": str(len(body))}
    response = await client.post("/api/rum", data=body, headers=headers)
    assert response.status_code == 413
    assert all_counts() == before
