"""The embedded service, the default (``virtuoso serve``): the collecting and the
serving role in one process, around one ServiceState.

``create_app`` chooses every part from the settings and wires them, listeners as
constructor arguments: the pipeline tells the alert service and the live updates of
each snapshot; the alert service tells the live updates and the metrics of each alert.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from app.cache.policy import load_policy
from app.main import collector, collector_telemetry, server
from app.main.sources import make_source
from app.market.sources.base import MarketSource, data_quality_of
from app.realtime.broadcaster import Broadcaster
from app.services.catalogue import check_policy_fits_refresh
from app.services.live_updates import LiveUpdates
from app.settings import Settings

log = logging.getLogger(__name__)


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
    check_policy_fits_refresh(policy, settings.refresh_seconds)
    app, runtime, limiter, metrics = server.serving_shell(settings, policy, clock)
    exchange_metrics = collector_telemetry.ExchangeMetrics(metrics, settings.exchange)
    market = source or make_source(settings, observers=[exchange_metrics])
    collector_telemetry.start_at_zero(metrics, market)

    def parts(broadcaster: Broadcaster) -> server.StateParts:
        live = LiveUpdates(broadcaster, per_second=settings.live_updates_per_second)
        alerts, pipeline, views = collector.snapshot_flow(
            settings, market, runtime, live, metrics, clock
        )
        return server.StateParts(views.collector, views, alerts, pipeline)

    state = server.serving_state(settings, runtime, limiter, metrics, clock, parts)
    pipeline = state.pipeline
    assert pipeline is not None  # the embedded service refreshes in this process

    async def start() -> None:
        collector.announce_source(settings, runtime.tiers)
        await pipeline.start()
        if state.alerts.delivery_worker is not None:
            state.alerts.delivery_worker.start()

    async def stop() -> None:
        if state.alerts.delivery_worker is not None:
            await state.alerts.delivery_worker.stop()
        await pipeline.stop()

    poller = server.finish_app(
        app, settings, state, tracer_provider, lambda: data_quality_of(market)
    )
    server.run_with_app(app, state, poller, start=("pipeline", start), stop=("pipeline", stop))
    return app
