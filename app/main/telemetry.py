"""Wires the app's metrics and traces: the /metrics collectors, the hot-path
observations (cache tier timings, WebSocket delivery, alerts) and the HTTP middleware.
The collector's own (refreshes, exchange calls) are ``app.main.collector_telemetry``.
The instruments themselves live in ``app.observability``; this module only connects
them to the parts of the service."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.instrumentation.redis import RedisInstrumentor
from quart import Quart

from app.cache.stats import TimingListener
from app.main.collectors import DataQuality, ServiceCollector
from app.main.poller import BackendPoller
from app.observability import tracing
from app.observability.http import install_http_observability
from app.observability.metrics import Metrics
from app.realtime.protocol import CHANNELS
from app.services.alerts.rules import LEVELS
from app.services.alerts.service import Announce
from app.state import ServiceState


def cache_timer(metrics: Metrics) -> TimingListener:
    """The cache's timing listener: each tier operation's seconds."""

    def observe(tier: str, operation: str, seconds: float) -> None:
        metrics.cache_duration.labels(tier, operation).observe(seconds)

    return observe


def ws_latency_observer(metrics: Metrics) -> Callable[[str, float], None]:
    """The broadcaster's latency listener: each delivery's seconds by channel."""

    def observe(channel: str, seconds: float) -> None:
        metrics.ws_latency.labels(channel).observe(seconds)

    return observe


def ws_data_age_observer(metrics: Metrics) -> Callable[[str, float], None]:
    """The broadcaster's data-age listener: each update's age at fan-out by channel."""

    def observe(channel: str, seconds: float) -> None:
        metrics.ws_data_age.labels(channel).observe(seconds)

    return observe


def alert_counter(metrics: Metrics) -> Announce:
    """The alert service's announcement that counts fired alerts by level."""

    async def alert_fired(alert: dict[str, Any], _generated_at_ms: int) -> None:
        metrics.alerts_triggered.labels(alert["level"]).inc()

    return alert_fired


def install_telemetry(
    app: Quart,
    state: ServiceState,
    tracer_provider: trace.TracerProvider | None,
    data_quality: DataQuality = dict,
) -> BackendPoller:
    """Installs the HTTP middleware, the tracer and the /metrics collectors on ``app``
    (the hot paths are observed through the listeners their constructors were given);
    ``data_quality`` gives the market source's bad-data counts where it runs in this
    process. Returns the backend poller, for the app to run in the background."""
    metrics = state.metrics
    tracing.use(tracer_provider)
    if tracer_provider is not None:
        _instrument_redis(tracer_provider)
    install_http_observability(app, metrics, tracer_provider)
    poller = BackendPoller(state)
    metrics.registry.register(ServiceCollector(state, poller, data_quality))
    _start_at_zero(state, metrics)
    return poller


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
        metrics.ws_data_age.labels(channel)
    for tier in state.runtime.tiers:
        for operation in ("get", "set"):
            metrics.cache_duration.labels(tier, operation)


def _instrument_redis(provider: trace.TracerProvider) -> None:
    """Spans for every Redis command (process-wide: redis-py's client is patched once)."""
    instrumentor = RedisInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument(tracer_provider=provider)
