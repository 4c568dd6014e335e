"""Metrics and spans of a cache hit, a miss, a stale serve, an exchange call and an
exchange failure — read from the app's registry and from an in-memory span exporter
on an explicit tracer provider; and what /metrics serves."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.errors import MarketDataError
from app.observability import tracing
from app.observability.tracing import provider_from_env
from app.services.alerts.engine import MarketFacts
from app.services.alerts.rules import validate_rule
from tests.conftest import ManualClock, eventually, exchange_settings, make_settings, state_of
from tests.integration.test_alert_store import make_alert
from tests.support.markets import CountingMarket
from tools.fake_bybit import TICKERS_PATH, FakeBybit

OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    yield exporter
    tracing.use(None)
    if RedisInstrumentor().is_instrumented_by_opentelemetry:
        RedisInstrumentor().uninstrument()


def traced_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


async def started(app) -> AsyncIterator[QuartTestApp]:
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


@pytest_asyncio.fixture
async def traced_app(
    clock: ManualClock, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[QuartTestApp, CountingMarket]]:
    market = CountingMarket(clock)
    app = create_app(make_settings(), market, clock, tracer_provider=traced_provider(spans))
    async for test_app in started(app):
        yield test_app, market


def sample(test_app: QuartTestApp, name: str, **labels: str) -> float:
    registry = state_of(test_app).metrics.registry
    return registry.get_sample_value(name, labels) or 0.0


def named(exporter: InMemorySpanExporter, name: str) -> list[ReadableSpan]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def cache_spans(exporter: InMemorySpanExporter, family: str) -> list[ReadableSpan]:
    return [
        span
        for span in exporter.get_finished_spans()
        if span.name.startswith("cache get") and span.attributes["cache.family"] == family
    ]


async def test_cache_hit(traced_app, spans: InMemorySpanExporter) -> None:
    test_app, _ = traced_app
    requests = ("virtuoso_cache_requests_total", {"family": "dash:desktop", "outcome": "hit"})
    l1_hits = {"tier": "l1", "family": "dash:desktop", "result": "hit"}
    before = sample(test_app, requests[0], **requests[1])
    before_l1 = sample(test_app, "virtuoso_cache_operations_total", **l1_hits)
    spans.clear()
    response = await test_app.test_client().get("/api/dashboard/data")
    assert response.status_code == 200
    assert sample(test_app, requests[0], **requests[1]) == before + 1
    assert sample(test_app, "virtuoso_cache_operations_total", **l1_hits) == before_l1 + 1
    timing = sample(
        test_app, "virtuoso_cache_operation_duration_seconds_count", tier="l1", operation="get"
    )
    assert timing > 0
    [lookup] = cache_spans(spans, "dash:desktop")
    assert lookup.attributes["cache.tier"] == "l1"
    assert lookup.attributes["db.system.name"] == "in-process"
    assert lookup.attributes["cache.hit"] is True
    [server] = named(spans, "GET /api/dashboard/data")
    assert server.attributes["http.route"] == "/api/dashboard/data"
    assert lookup.parent is not None and lookup.parent.span_id == server.context.span_id
    # OpenTelemetry's per-message ASGI spans are left out
    assert not [s for s in spans.get_finished_spans() if s.name.endswith((" send", " receive"))]
    count = sample(
        test_app,
        "virtuoso_http_request_duration_seconds_count",
        route="/api/dashboard/data",
        method="GET",
        status="200",
    )
    assert count >= 1


async def test_cache_miss_computes_once(traced_app, spans: InMemorySpanExporter) -> None:
    test_app, _ = traced_app
    before = sample(test_app, "virtuoso_cache_requests_total", family="candles", outcome="miss")
    computed = sample(test_app, "virtuoso_cache_computations_total", family="candles")
    spans.clear()
    response = await test_app.test_client().get("/api/market/candles/ETHUSDT?timeframe=4h")
    assert response.status_code == 200
    after = sample(test_app, "virtuoso_cache_requests_total", family="candles", outcome="miss")
    assert after == before + 1
    assert sample(test_app, "virtuoso_cache_computations_total", family="candles") == computed + 1
    lookups = cache_spans(spans, "candles")
    assert lookups and all(span.attributes["cache.hit"] is False for span in lookups)
    [server] = named(spans, "GET /api/market/candles/<symbol>")  # the template, not the path
    assert server.attributes["http.route"] == "/api/market/candles/<symbol>"


async def test_stale_serve(traced_app, clock: ManualClock, spans: InMemorySpanExporter) -> None:
    test_app, market = traced_app
    market.fail_tickers = True  # no new snapshot: the copy ages into its grace period
    clock.advance(25)  # dash:desktop: ttl 20 s, then grace
    before = sample(
        test_app, "virtuoso_cache_requests_total", family="dash:desktop", outcome="stale"
    )
    spans.clear()
    response = await test_app.test_client().get("/api/dashboard/data")
    assert response.status_code == 200 and response.headers["X-Cache"] == "l1 stale"
    after = sample(
        test_app, "virtuoso_cache_requests_total", family="dash:desktop", outcome="stale"
    )
    assert after == before + 1
    l1_stale = {"tier": "l1", "family": "dash:desktop", "result": "stale"}
    assert sample(test_app, "virtuoso_cache_operations_total", **l1_stale) >= 1
    [lookup, *_] = cache_spans(spans, "dash:desktop")
    assert lookup.attributes["cache.result"] == "stale"
    assert lookup.attributes["cache.hit"] is True


@pytest_asyncio.fixture
async def bybit_app(
    clock: ManualClock, spans: InMemorySpanExporter
) -> AsyncIterator[tuple[QuartTestApp, FakeBybit]]:
    async with FakeBybit() as fake:
        settings = exchange_settings(fake.base_url, "BTCUSDT,ETHUSDT,SOLUSDT")
        app = create_app(settings, None, clock, tracer_provider=traced_provider(spans))
        async for test_app in started(app):
            yield test_app, fake


async def test_exchange_call_and_failure(bybit_app, spans: InMemorySpanExporter) -> None:
    test_app, fake = bybit_app
    labels = {"exchange": "bybit", "endpoint": "tickers"}
    ok = sample(test_app, "virtuoso_exchange_requests_total", **labels, outcome="ok")
    assert ok >= 1  # the first snapshot's batch call
    latency = sample(test_app, "virtuoso_exchange_request_duration_seconds_count", **labels)
    assert latency >= ok
    # Every call that reached the exchange also has its wait in the rate limiter (often 0).
    waits = sample(test_app, "virtuoso_exchange_ratelimit_wait_seconds_count", **labels)
    assert waits == latency
    calls = named(spans, "exchange tickers")
    assert calls and calls[0].attributes["exchange.outcome"] == "ok"
    assert calls[0].attributes["exchange.ratelimit_wait_seconds"] >= 0
    waits = named(spans, "exchange ratelimit wait")
    assert any(w.parent and w.parent.span_id == calls[0].context.span_id for w in waits)
    assert calls[0].attributes["exchange.name"] == "bybit"
    refresh = named(spans, "pipeline.refresh")[0]
    children = {
        s.name
        for s in spans.get_finished_spans()
        if s.parent and s.parent.span_id == refresh.context.span_id
    }
    assert {"market.fetch", "analysis", "views.build", "views.publish"} <= children

    spans.clear()
    errors = sample(test_app, "virtuoso_exchange_requests_total", **labels, outcome="error")
    fake.http_error_next(503, times=3, path=TICKERS_PATH)  # the call and its two retries
    state = state_of(test_app)
    with pytest.raises(MarketDataError):
        await state.pipeline.refresh(force=True)
    assert sample(test_app, "virtuoso_exchange_requests_total", **labels, outcome="error") > errors
    failed = [
        s for s in named(spans, "exchange tickers") if s.status.status_code == StatusCode.ERROR
    ]
    assert failed and failed[0].attributes["exchange.outcome"] == "error"
    assert sample(test_app, "virtuoso_pipeline_refreshes_total", outcome="error") >= 1
    assert sample(test_app, "virtuoso_breaker_state", breaker="bybit:tickers") in (0, 1, 2)


async def test_metrics_endpoint_speaks_openmetrics_with_exemplars(traced_app) -> None:
    test_app, _ = traced_app
    client = test_app.test_client()
    await client.get("/api/dashboard/data")
    response = await client.get("/metrics", headers={"Accept": OPENMETRICS})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/openmetrics-text")
    text = await response.get_data(as_text=True)
    families = {f.name: f for f in text_string_to_metric_families(text)}
    http = families["virtuoso_http_request_duration_seconds"]
    exemplars = [s.exemplar for s in http.samples if s.exemplar is not None]
    assert exemplars, "no exemplar on the HTTP histogram"
    assert all(len(e.labels["trace_id"]) == 32 for e in exemplars)
    routes = {s.labels["route"] for s in http.samples if "route" in s.labels}
    assert "/api/dashboard/data" in routes
    for name in ("process_cpu_seconds", "virtuoso_cache_requests", "virtuoso_snapshot_age_seconds"):
        assert name in families, name
    classic = await client.get("/metrics")
    assert classic.headers["Content-Type"].startswith("text/plain")


async def test_labels_stay_bounded(traced_app) -> None:
    """Paths never become labels: a thousand symbols requested, one route label."""
    test_app, _ = traced_app
    client = test_app.test_client()
    for n in range(30):
        await client.get(f"/api/confluence/COIN{n}USDT")
        await client.get(f"/no/such/page/{n}")
    registry = state_of(test_app).metrics.registry
    routes = {
        s.labels["route"]
        for family in registry.collect()
        if family.name == "virtuoso_http_request_duration_seconds"
        for s in family.samples
    }
    assert "/api/confluence/<symbol>" in routes and "other" in routes
    assert not any("COIN" in route or "/no/such" in route for route in routes)


def test_tracer_provider_follows_the_otel_variables() -> None:
    assert provider_from_env({}) is None
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}
    assert provider_from_env(endpoint | {"OTEL_SDK_DISABLED": "true"}) is None
    assert provider_from_env(endpoint | {"OTEL_TRACES_EXPORTER": "none"}) is None
    provider = provider_from_env(endpoint | {"OTEL_SERVICE_NAME": "virtuoso-test"})
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "virtuoso-test"
    provider.shutdown()


async def test_no_tracing_without_an_endpoint(clock: ManualClock) -> None:
    app = create_app(make_settings(), CountingMarket(clock), clock)
    async for test_app in started(app):
        assert tracing.current_provider() is None
        response = await test_app.test_client().get("/api/dashboard/data")
        assert response.status_code == 200


async def test_shared_tier_lookups_and_redis_commands_are_spans(
    memcached, redis, clock: ManualClock, spans: InMemorySpanExporter
) -> None:
    settings = make_settings(
        VIRTUOSO_MEMCACHED_URL=memcached.address, VIRTUOSO_REDIS_URL=f"redis://{redis.address}/0"
    )
    app = create_app(settings, CountingMarket(clock), clock, tracer_provider=traced_provider(spans))
    async for test_app in started(app):
        state_of(test_app).runtime.cache.l1.clear()  # the next read goes to Memcached
        spans.clear()
        response = await test_app.test_client().get("/api/dashboard/data")
        assert response.headers["X-Cache"] == "memcached"
        [lookup] = [
            s for s in cache_spans(spans, "dash:desktop") if s.name == "cache get memcached"
        ]
        assert lookup.attributes["db.system.name"] == "memcached"
        assert lookup.attributes["cache.hit"] is True
        await test_app.test_client().put("/api/session/watchlist", json={"watchlist": ["BTCUSDT"]})
        redis_spans = [
            s for s in spans.get_finished_spans() if s.attributes.get("db.system") == "redis"
        ]
        assert redis_spans, "no span for the session write to Redis"
        timing = sample(
            test_app,
            "virtuoso_cache_operation_duration_seconds_count",
            tier="memcached",
            operation="get",
        )
        assert timing >= 1


async def test_refused_deliveries_are_counted(traced_app, clock: ManualClock) -> None:
    """Rules' webhooks to internal addresses, queued in the app's own outbox: its worker
    refuses each before any connection (the destination policy), and
    ``virtuoso_alert_deliveries_total{outcome="refused"}`` counts them."""
    test_app, _ = traced_app
    alerts = state_of(test_app).alerts
    labels = {"channel_type": "webhook", "outcome": "refused"}
    before = sample(test_app, "virtuoso_alert_deliveries_total", **labels)
    for url in ("http://127.0.0.1:9/hook", "http://[::1]:9/x", "http://169.254.169.254/"):
        await alerts.outbox.enqueue(make_alert(int(clock() * 1000)), (), url)
    await eventually(
        lambda: sample(test_app, "virtuoso_alert_deliveries_total", **labels) == before + 3
    )


async def test_alert_templates_that_failed_to_render_are_counted(traced_app) -> None:
    """The serving role (here with its collector embedded) reports its alert engine's
    template failures: each alert sent with the default message is one more."""
    test_app, _ = traced_app
    engine = state_of(test_app).alerts.engine
    rule = validate_rule(
        {"kind": "price_above", "threshold": 100, "cooldown_seconds": 0, "template": "{{ price }}"},
        ("BTCUSDT",),
    )
    # A template that fails only on real values (it divides by zero at 101.5).
    broken = rule.model_copy(update={"template": "{{ values.price / (values.price - 101.5) }}"})
    before = sample(test_app, "virtuoso_alert_template_failures_total")
    state = None
    for price in (101.5, 90.0, 101.5):
        _, state = engine.evaluate([broken], [MarketFacts("BTCUSDT", price, 0.0)], state)
    assert sample(test_app, "virtuoso_alert_template_failures_total") == before + 2
    response = await test_app.test_client().get("/metrics")
    assert "virtuoso_alert_template_failures_total" in (await response.get_data(as_text=True))
