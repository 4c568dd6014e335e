"""The embedded service, the default (``virtuoso serve``): the collecting and the
serving role in one process, around one ServiceState.

``create_app`` chooses every part from the settings and wires them, listeners as
constructor arguments: the pipeline tells the alert service and the live updates of
each snapshot; the alert service tells the live updates and the metrics of each alert.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from app.cache.adaptive import AdaptiveTtl
from app.cache.policy import load_policy
from app.cache.runtime import CacheRuntime, build_cache
from app.cache.stats import CacheStats
from app.main import collector, sections, server, telemetry
from app.main.poller import BackendPoller
from app.main.sources import make_source
from app.market.sources.base import MarketSource
from app.observability.metrics import Metrics
from app.observability.tracing import provider_from_env
from app.resilience.rate_limit import RateLimiter
from app.services.alerts.evaluation import AlertEvaluation
from app.services.alerts.service import AlertService
from app.services.live_updates import LiveUpdates
from app.services.pipeline import Pipeline
from app.services.view_cache import ViewCache
from app.services.warming import Warmer
from app.settings import Settings
from app.state import EXTENSION, ServiceState
from app.web.listeners import install_listener_split

log = logging.getLogger(__name__)

# A shutdown step waiting on a backend that is down (a lock release, a pool close)
# must not hold the process: each step gets this long, then shutdown moves on.
SHUTDOWN_STEP_SECONDS = 3.0


def create_app(
    settings: Settings,
    source: MarketSource | None = None,
    clock: Callable[[], float] = time.time,
    tracer_provider: TracerProvider | None = None,
) -> Quart:
    """The whole service as one Quart app. ``source`` defaults to what the settings
    name, its exchange calls observed in the metrics; tests pass their own.
    ``tracer_provider`` defaults to the one the ``OTEL_*`` variables describe (none
    without an OTLP endpoint); tests pass one with an in-memory exporter. Raises
    ConfigError when the cache policy does not fit."""
    policy = load_policy(settings.cache_policy_path)
    collector.check_policy_fits_refresh(policy, settings.refresh_seconds)
    metrics = Metrics()
    stats = CacheStats(timing_listeners=[telemetry.cache_timer(metrics)])
    runtime = build_cache(sections.cache_config(settings), policy, clock, stats)
    app = server.new_app()
    # The request hooks run in the order installed: the listener split first (a 404
    # costs nothing), then the rate limits; after the routes, the telemetry middleware,
    # error mapping, security headers and request guards.
    install_listener_split(app, monitoring=settings.monitoring_bind is not None)
    limiter = server.install_limits(app, settings, runtime)
    exchange_metrics = telemetry.ExchangeMetrics(metrics, settings.exchange)
    source = source or make_source(settings, observers=[exchange_metrics])
    state = _build_state(settings, source, runtime, limiter, metrics, clock)
    app.extensions[EXTENSION] = state
    timeframes = tuple(settings.confluence.timeframes)
    server.install_routes(app, state, settings.allowed_origins, timeframes)
    poller = telemetry.install_telemetry(app, state, tracer_provider or provider_from_env())
    server.install_response_hooks(app)
    _run_with_app(app, settings, state, poller)
    return app


def _build_state(
    settings: Settings,
    source: MarketSource,
    runtime: CacheRuntime,
    limiter: RateLimiter,
    metrics: Metrics,
    clock: Callable[[], float],
) -> ServiceState:
    state: ServiceState  # built last; the broadcaster reads its symbols when it runs
    broadcaster = server.build_broadcaster(
        runtime,
        limiter,
        lambda: state.known_symbols,
        clock,
        on_latency=telemetry.ws_latency_observer(metrics),
    )
    alerts, pipeline, views = _snapshot_flow(
        settings, source, runtime, LiveUpdates(broadcaster), metrics, clock
    )
    session_store, cookies = server.build_sessions(settings, runtime)
    state = ServiceState(
        settings=sections.serving_settings(settings),
        collector=views.collector,
        pipeline=pipeline,
        views=views,
        runtime=runtime,
        sessions=session_store,
        cookies=cookies,
        warmer=Warmer(views),
        adaptive=AdaptiveTtl(runtime.cache, clock),
        alerts=alerts,
        metrics=metrics,
        broadcaster=broadcaster,
        rate_limiter=limiter,
        clock=clock,
        started_at=clock(),
    )
    return state


def _snapshot_flow(
    settings: Settings,
    source: MarketSource,
    runtime: CacheRuntime,
    live: LiveUpdates,
    metrics: Metrics,
    clock: Callable[[], float],
) -> tuple[AlertService, Pipeline, ViewCache]:
    """Who hears of what: each snapshot goes to the alert rules, then to the live
    clients; each alert to the live clients, then to the metrics; each refresh to the
    metrics. The alert service and the pipeline need each other (alerts rebuild the
    dashboards, dashboards show the critical alerts): the alert service reaches the
    pipeline through ``republish``, bound once the pipeline exists."""
    pipeline: Pipeline

    async def republish(fresh_within: float | None = None) -> bool:
        return await pipeline.republish(fresh_within)

    alerts = server.build_alert_service(
        settings,
        runtime,
        republish,
        announce=(live.announce_alert, telemetry.alert_counter(metrics)),
        clock=clock,
    )
    pipeline, views = collector.build_pipeline(
        settings,
        source,
        runtime,
        clock,
        listeners=(AlertEvaluation(alerts).on_snapshot, live.on_snapshot),
        on_refresh=(telemetry.refresh_observer(metrics),),
        critical_alerts=alerts.critical_alerts,
    )
    return alerts, pipeline, views


def _run_with_app(
    app: Quart,
    settings: Settings,
    state: ServiceState,
    poller: BackendPoller,
) -> None:
    """Starts the backends, the pipeline and the background loops (warming, adaptive
    TTLs, the backend metrics) when the app starts serving; stops them, each step
    bounded, when it stops."""
    background: list[asyncio.Task[None]] = []
    pipeline = state.pipeline
    assert pipeline is not None  # the embedded service refreshes in this process

    @app.before_serving
    async def start() -> None:
        collector.announce_source(settings, state.runtime.tiers)
        await state.runtime.start()
        await state.alerts.webhooks.start()
        await pipeline.start()
        background.append(
            asyncio.create_task(collector.warm_until_done(state), name="cache-warming")
        )
        background.append(asyncio.create_task(server.tune_ttls(state), name="adaptive-ttl"))
        background.append(asyncio.create_task(poller.run(), name="backend-metrics"))

    @app.after_serving
    async def stop() -> None:
        for task in background:
            task.cancel()
        await _bounded("background tasks", asyncio.gather(*background, return_exceptions=True))
        await _bounded("pipeline", pipeline.stop())
        await _bounded("webhooks", state.alerts.webhooks.close())
        await _bounded("cache tiers", state.runtime.close())


async def _bounded(step: str, awaitable: Awaitable[object]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await awaitable
    except TimeoutError:
        log.warning("shutdown: %s took over %.0f s; moving on", step, SHUTDOWN_STEP_SECONDS)
