"""Wires the app's metrics and traces: the /metrics collectors, the hot-path
observations (cache tier timings, exchange calls, refreshes, WebSocket delivery,
alerts) and the HTTP middleware."""

from __future__ import annotations

from opentelemetry import trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from quart import Quart

from app.market.sources.guarded import FAMILIES as EXCHANGE_FAMILIES
from app.market.sources.guarded import GuardedSource
from app.observability import tracing
from app.observability.backends import BackendPoller
from app.observability.collectors import ServiceCollector
from app.observability.http import install_http_observability
from app.observability.metrics import EXTENSION_KEY, Metrics
from app.realtime.protocol import CHANNELS
from app.services.alerts.rules import LEVELS
from app.web.state import ServiceState

EXCHANGE_OUTCOMES = ("ok", "error", "timeout", "rate_limited", "rejected")


def install_observability(
    app: Quart, state: ServiceState, tracer_provider: trace.TracerProvider | None
) -> BackendPoller:
    """Returns the backend poller, for the app to run in the background."""
    metrics = state.metrics
    app.extensions[EXTENSION_KEY] = metrics
    tracing.use(tracer_provider)
    if tracer_provider is not None:
        _instrument_redis(tracer_provider)
    install_http_observability(app, metrics, tracer_provider)
    poller = BackendPoller(state)
    metrics.registry.register(ServiceCollector(state, poller))
    _observe_hot_paths(state, metrics)
    _start_at_zero(state, metrics)
    return poller


def _observe_hot_paths(state: ServiceState, metrics: Metrics) -> None:
    state.runtime.cache.stats.timing_listeners.append(
        lambda tier, operation, seconds: metrics.cache_duration.labels(tier, operation).observe(
            seconds
        )
    )
    state.pipeline.on_refresh.append(
        lambda outcome, seconds: metrics.refresh_duration.labels(outcome).observe(seconds)
    )
    source = state.pipeline.source
    if isinstance(source, GuardedSource):  # the simulated market is in-process: no calls
        observe_exchange(source, metrics)
    if state.broadcaster is not None:
        state.broadcaster.stats.on_latency = lambda channel, seconds: metrics.ws_latency.labels(
            channel
        ).observe(seconds)

    async def alert_fired(alert: dict, _generated_at_ms: int) -> None:
        metrics.alerts_triggered.labels(alert["level"]).inc()

    state.alerts.announce.append(alert_fired)


def observe_exchange(source: GuardedSource, metrics: Metrics) -> None:
    """Counts ``source``'s calls by outcome and observes, apart, the exchange's time per
    request and the wait in the client-side rate limiter before it."""
    exchange = source.name

    def exchange_call(endpoint: str, outcome: str, seconds: float | None) -> None:
        metrics.exchange_requests.labels(exchange, endpoint, outcome).inc()
        if seconds is not None:
            metrics.exchange_duration.labels(exchange, endpoint).observe(seconds)

    def ratelimit_wait(endpoint: str, seconds: float) -> None:
        metrics.exchange_ratelimit_wait.labels(exchange, endpoint).observe(seconds)

    source.on_call.append(exchange_call)
    source.on_ratelimit_wait.append(ratelimit_wait)


def _start_at_zero(state: ServiceState, metrics: Metrics) -> None:
    """Creates every known label set at zero, so a rate over something that has not
    happened yet is 0 rather than "no data" on the boards and in the alert rules."""
    for level in LEVELS:
        metrics.alerts_triggered.labels(level)
    for device in ("desktop", "mobile"):
        for phase in ("ttfb", "dom_ready", "first_data"):
            metrics.page_load.labels(device, phase)
    for channel in CHANNELS:
        metrics.ws_latency.labels(channel)
    for outcome in ("ok", "error", "skipped"):
        metrics.refresh_duration.labels(outcome)
    for tier in state.runtime.tiers:
        for operation in ("get", "set"):
            metrics.cache_duration.labels(tier, operation)
    if isinstance(state.pipeline.source, GuardedSource):
        exchange = state.pipeline.source.name
        for endpoint in EXCHANGE_FAMILIES:
            metrics.exchange_duration.labels(exchange, endpoint)
            metrics.exchange_ratelimit_wait.labels(exchange, endpoint)
            for outcome in EXCHANGE_OUTCOMES:
                metrics.exchange_requests.labels(exchange, endpoint, outcome)


def _instrument_redis(provider: trace.TracerProvider) -> None:
    """Spans for every Redis command (process-wide: redis-py's client is patched once)."""
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
