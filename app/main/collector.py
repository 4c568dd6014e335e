"""The collecting role's parts: the refresher (snapshot → analysis → views → cache)
with its listeners (the alert rules, the live updates, the metrics), coordinated across
collectors through Redis. ``app.main.embedded`` runs them inside the serving process;
``app.main.collector_process`` as a process of its own (``virtuoso collect``). Nothing
here needs the Quart app.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from app.cache.runtime import CacheRuntime
from app.main import collector_telemetry, telemetry
from app.main.alerting import build_alert_service, build_digest_store
from app.market.sources.base import MarketSource
from app.observability.metrics import Metrics
from app.services.alerts.apprise_sender import AppriseSend
from app.services.alerts.destinations import DestinationPolicy
from app.services.alerts.digest_scheduler import DigestScheduler, DigestSink
from app.services.alerts.evaluation import AlertEvaluation
from app.services.alerts.outbox_worker import OutboxWorker
from app.services.alerts.service import AlertService
from app.services.alerts.store import AlertStore
from app.services.analysis import Analysis, AnalysisSettings
from app.services.collector_link import LocalCollector
from app.services.coordination import RefreshCoordinator
from app.services.live_updates import LiveUpdates
from app.services.pipeline import (
    CriticalAlerts,
    Pipeline,
    PipelineSettings,
    Publish,
    RefreshListener,
    SnapshotListener,
)
from app.services.snapshot import Snapshot
from app.services.view_cache import ViewCache
from app.services.views import ViewSettings
from app.settings import Settings

log = logging.getLogger(__name__)

TICK_ALERT_SECONDS = 1.0
"""Between refreshes, the alert rules run on streamed prices at most this often."""


def pipeline_settings(settings: Settings) -> PipelineSettings:
    """The refresher's section, with the analysis's and the views' inside."""
    confluence = settings.confluence
    return PipelineSettings(
        symbols=settings.symbols,
        refresh_seconds=settings.refresh_seconds,
        candle_limits=settings.candle_limits,
        order_book_depth=settings.order_book_depth,
        analysis=AnalysisSettings(
            weights=confluence.as_weights(),
            movers_count=settings.movers.count,
            movers_min_quote_volume=settings.movers.min_quote_volume,
        ),
        views=ViewSettings(
            long_threshold=confluence.long_threshold,
            short_threshold=confluence.short_threshold,
            timeframes=tuple(confluence.timeframes),
            mobile_symbols=settings.mobile.symbols,
        ),
        single_flight=settings.optimized("single_flight"),
        refresh_ahead=settings.optimized("refresh_ahead"),
        views_per_second=settings.live_updates_per_second,
        derivatives_seconds=settings.derivatives_refresh_seconds,
    )


def build_pipeline(
    settings: Settings,
    source: MarketSource,
    runtime: CacheRuntime,
    clock: Callable[[], float],
    *,
    listeners: Sequence[SnapshotListener],
    tick_listeners: Sequence[SnapshotListener] = (),
    on_refresh: Sequence[RefreshListener],
    critical_alerts: CriticalAlerts,
    publish: Publish | None = None,
) -> tuple[Pipeline, ViewCache]:
    """The refresher and the view cache it publishes to (which calls it back for cold
    reads), coordinated across replicas when Redis is there; with ``publish``, the views
    go there instead (a collector child's server)."""
    namespace = runtime.cache.policy.namespace
    views: ViewCache
    pipeline = Pipeline(
        pipeline_settings(settings),
        source,
        publish or (lambda bodies, generated_at_ms: views.publish(bodies, generated_at_ms)),
        _coordinator(settings, runtime),
        clock,
        listeners=listeners,
        tick_listeners=tick_listeners,
        on_refresh=on_refresh,
        critical_alerts=critical_alerts,
    )
    views = ViewCache(runtime.cache, runtime.coherence, LocalCollector(pipeline), namespace)
    return pipeline, views


def snapshot_flow(
    settings: Settings,
    source: MarketSource,
    runtime: CacheRuntime,
    live: LiveUpdates,
    metrics: Metrics,
    clock: Callable[[], float],
    *,
    store: AlertStore | None = None,
    publish: Publish | None = None,
    digest_sink: DigestSink | None = None,
) -> tuple[AlertService, Pipeline, ViewCache]:
    """Who hears of what: each snapshot goes to the alert rules, then to the live
    clients; each alert to the live clients, then to the metrics; each refresh to the
    metrics. The alert service and the pipeline need each other (alerts rebuild the
    dashboards, dashboards show the critical alerts): the alert service reaches the
    pipeline through ``republish``, bound once the pipeline exists. ``store`` and
    ``publish``: where the alerts are kept and the views go, when not the settings' store
    and the runtime's tiers (a collector child's server). Each snapshot also goes to the
    digests' scheduler, which hands the due digests to ``digest_sink`` (by default, the
    delivery outbox: each digest a message to each of its channels)."""
    pipeline: Pipeline

    async def republish(fresh_within: float | None = None) -> bool:
        return await pipeline.republish(fresh_within)

    alerts = build_alert_service(
        settings,
        runtime,
        republish,
        announce=(live.announce_alert, telemetry.alert_counter(metrics)),
        clock=clock,
        store=store,
    )
    alerts.outbox.listener = collector_telemetry.delivery_observer(metrics)
    # Alerts are delivered where they fire: the outbox's worker runs with the pipeline.
    send = AppriseSend(DestinationPolicy(tuple(settings.webhook_allow)))
    alerts.delivery_worker = OutboxWorker(alerts.outbox, send, clock=clock)
    evaluation = AlertEvaluation(alerts)
    digests = DigestScheduler(
        build_digest_store(settings, runtime),
        digest_sink or alerts.outbox.digest_sink,
        clock,
        count=settings.movers.count,
    )
    pipeline, views = build_pipeline(
        settings,
        source,
        runtime,
        clock,
        listeners=(evaluation.on_snapshot, live.on_snapshot, digests.on_snapshot),
        # streamed tickers: live updates at once, the alert rules once a second at most
        tick_listeners=(
            live.on_snapshot,
            at_most_every(TICK_ALERT_SECONDS, evaluation.on_snapshot),
        ),
        on_refresh=(collector_telemetry.refresh_observer(metrics),),
        critical_alerts=alerts.critical_alerts,
        publish=publish,
    )
    return alerts, pipeline, views


def at_most_every(seconds: float, listener: SnapshotListener) -> SnapshotListener:
    """``listener`` told of a snapshot only when ``seconds`` (monotonic) have passed
    since it was last told (the alert rules read and write their store each time)."""
    told = -float("inf")

    async def throttled(snapshot: Snapshot, analysis: Analysis) -> None:
        nonlocal told
        if time.monotonic() - told < seconds:
            return
        told = time.monotonic()
        await listener(snapshot, analysis)

    throttled.__qualname__ = getattr(listener, "__qualname__", "listener")
    return throttled


def _coordinator(settings: Settings, runtime: CacheRuntime) -> RefreshCoordinator | None:
    """One refresh per interval across the replicas (Redis locks), unless single flight
    is switched off or there is no Redis."""
    if runtime.redis is None or runtime.locks is None or not settings.optimized("single_flight"):
        return None
    return RefreshCoordinator(
        runtime.redis,
        runtime.locks,
        settings.refresh_seconds,
        runtime.replica_id,
        runtime.keyspace,
    )


def announce_source(settings: Settings, tiers: Sequence[str]) -> None:
    """One log line at start: where the market data comes from and the cache tiers."""
    shown = ", ".join(tiers)
    if settings.exchange == "simulated":
        log.warning(
            "market data is SIMULATED (seed %d): set VIRTUOSO_EXCHANGE for a real "
            "exchange; cache tiers: %s",
            settings.seed,
            shown,
        )
    else:
        log.info(
            "market data from %s%s; cache tiers: %s",
            settings.exchange,
            f" at {settings.exchange_url}" if settings.exchange_url else "",
            shown,
        )
