"""The collecting role as a process of its own (``virtuoso collect``): the only process
that talks to the exchange.

It refreshes on schedule (source → snapshot → analysis → views, serialized once),
publishes the views into the shared tiers, announces them (the cache's invalidation
bus) and the live updates (the realtime channel, already serialized), evaluates the
alert rules on each snapshot and delivers what fires; it answers the servers' requests
and reports its status every second (``app.services.collector_desk``). Several
collectors may run: their refreshes are coordinated by the Redis refresh lock, so one
refresh per interval happens whichever runs it. With ``monitoring_bind`` it serves its
Prometheus metrics there.

Several collectors may run for availability: one leads through a fenced Redis lease
(``app.backends.lease``) and alone refreshes, answers and reports; the others stand by
and the first to win the lease after the leader dies (its lease expires within
``collector_lease_seconds``, a setting) or resigns (a clean stop) takes over.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass

from prometheus_client import start_http_server

from app.backends.lease import LeaderLease
from app.backends.local_channel import Channel, connect
from app.backends.locks import LockLease
from app.cache.policy import load_policy
from app.cache.runtime import CacheRuntime, build_cache
from app.cache.stats import CacheStats
from app.errors import ConfigError
from app.main import collector, collector_telemetry, sections, telemetry
from app.main.server import bounded
from app.main.sources import make_source
from app.market.sources.base import MarketSource, data_quality_of
from app.observability.metrics import Metrics
from app.realtime.broadcaster import Broadcaster
from app.services.alerts.service import AlertService
from app.services.alerts.store_proxy import ProxyAlertStore
from app.services.catalogue import check_policy_fits_refresh
from app.services.collector_desk import CollectorDesk
from app.services.collector_link import LocalCollector
from app.services.collector_wire import CollectorChannels
from app.services.live_updates import LiveUpdates
from app.services.pipeline import Pipeline
from app.services.view_cache import ViewCache
from app.services.wire_channel import ChannelCollectorEnd, ChannelLivePublisher, ChannelViews
from app.services.wire_redis import RedisCollectorEnd
from app.settings import Settings, parse_bind

log = logging.getLogger(__name__)

HANG_UP_SECONDS = 0.5  # how long a stopping child looks for its server's hang-up


@dataclass(slots=True)
class Collector:
    """One collector's running parts (built by ``build_collector`` or
    ``build_child_collector``). With a ``lease`` it campaigns and works only while it
    leads; without (a server's child on the local channel), it works from the start."""

    runtime: CacheRuntime
    pipeline: Pipeline
    alerts: AlertService
    desk: CollectorDesk
    metrics: Metrics
    broadcaster: Broadcaster | None = None
    lease: LeaderLease | None = None
    _candidacy: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Connects the tiers and the live-update publisher, then campaigns for the lead
        (or leads at once without a lease): the refresher and the desk (requests and
        status) run while leading."""
        await self.runtime.start()
        if self.broadcaster is not None:
            await self.broadcaster.start()
        if self.lease is None:
            await self._work()
        else:
            self._candidacy = asyncio.create_task(self.lease.run(self._lead), name="candidacy")

    async def _work(self) -> None:
        await self.pipeline.start()
        await self.desk.start()
        if self.alerts.delivery_worker is not None:  # only the leader delivers, and
            # takes over what the last one was sending when it died
            self.alerts.delivery_worker.start(release_claims=self.lease is not None)

    async def _stop_delivering(self) -> None:
        if self.alerts.delivery_worker is not None:
            await self.alerts.delivery_worker.stop()

    async def _lead(self, term: LockLease) -> None:
        log.info("collector %s leads (term %d)", self.runtime.replica_id, term.fence)
        try:
            await self._work()
            await asyncio.Event().wait()  # until the term ends (this task is cancelled)
        finally:
            log.info("collector %s stands by (term %d over)", self.runtime.replica_id, term.fence)
            await self._stop_delivering()
            await self.desk.stop()
            await self.pipeline.halt()

    async def stop(self) -> None:
        """Resigns the lead (a standby takes over at once), then stops every part, each
        step bounded."""
        if self.lease is not None:
            await bounded("leadership", self.lease.resign())
        if self._candidacy is not None:
            await bounded("candidacy", asyncio.gather(self._candidacy, return_exceptions=True))
        await bounded("alert deliveries", self._stop_delivering())
        await bounded("desk", self.desk.stop())
        await bounded("pipeline", self.pipeline.stop())
        if self.broadcaster is not None:
            await bounded("live updates", self.broadcaster.close())
        await bounded("cache tiers", self.runtime.close())


def _parts(
    settings: Settings, source: MarketSource | None, clock: Callable[[], float]
) -> tuple[CacheRuntime, Metrics, MarketSource]:
    """The tiers, the metrics and the market source of a collector. Raises ConfigError
    when the cache policy does not fit the refresh interval."""
    policy = load_policy(settings.cache_policy_path)
    check_policy_fits_refresh(policy, settings.refresh_seconds)
    metrics = Metrics()
    stats = CacheStats(timing_listeners=[telemetry.cache_timer(metrics)])
    runtime = build_cache(sections.cache_config(settings), policy, clock, stats)
    market = source or make_source(
        settings, observers=[collector_telemetry.ExchangeMetrics(metrics, settings.exchange)]
    )
    collector_telemetry.start_at_zero(metrics, market)
    return runtime, metrics, market


class LeaderOnlyViews:
    """The pipeline's ``publish`` while this collector leads: once its term is over by
    its own clock (it stops acting before its lease can have expired), a refresh still in
    flight publishes nothing, so a deposed leader cannot overwrite the views of the one
    that took over. ``skipped``: snapshots not published for that reason."""

    def __init__(self, lease: LeaderLease) -> None:
        self.lease = lease
        self.views: ViewCache | None = None  # set once the pipeline's view cache exists
        self.skipped = 0

    async def __call__(self, bodies: dict[str, bytes], generated_at_ms: int) -> None:
        if self.views is None or not self.lease.is_leader:
            self.skipped += 1
            log.info("not leading: a snapshot's views were not published")
            return
        await self.views.publish(bodies, generated_at_ms)


def build_collector(
    settings: Settings, source: MarketSource | None = None, clock: Callable[[], float] = time.time
) -> Collector:
    """The collector of ``settings`` that meets the servers in Redis (``source``: tests
    pass their own). Raises ConfigError without Redis or when the cache policy does not
    fit the refresh interval."""
    if settings.redis_url is None:
        raise ConfigError(
            "virtuoso collect needs VIRTUOSO_REDIS_URL: it publishes to the servers through Redis"
        )
    runtime, metrics, market = _parts(settings, source, clock)
    assert runtime.redis is not None and runtime.redis_guard is not None
    assert runtime.locks is not None
    namespace = runtime.cache.policy.namespace
    broadcaster = Broadcaster(
        runtime.replica_id,
        runtime.redis,
        runtime.redis_guard,
        server_clock=clock,
        keyspace=runtime.keyspace,
    )
    lease = LeaderLease(
        runtime.locks,
        "collector",
        namespace=namespace,
        ttl_seconds=settings.collector_lease_seconds,
    )
    leading_views = LeaderOnlyViews(lease)
    alerts, pipeline, views = collector.snapshot_flow(
        settings,
        market,
        runtime,
        LiveUpdates(broadcaster, per_second=settings.live_updates_per_second),
        metrics,
        clock,
        publish=leading_views,
    )
    leading_views.views = views
    link = LocalCollector(pipeline)
    desk = CollectorDesk(
        RedisCollectorEnd(runtime.redis, runtime.redis_guard, CollectorChannels(namespace)),
        link,
        runtime.replica_id,
        clock,
    )
    _process_metrics(metrics, link, lambda: lease.is_leader, market, alerts)
    return Collector(runtime, pipeline, alerts, desk, metrics, broadcaster, lease)


def build_child_collector(
    settings: Settings,
    channel: Channel,
    source: MarketSource | None = None,
    clock: Callable[[], float] = time.time,
) -> Collector:
    """A server's collector child on the local ``channel``: views, live updates, alerts,
    replies and status reports go to the server, the alert store is the server's.
    Raises ConfigError when the cache policy does not fit the refresh interval."""
    runtime, metrics, market = _parts(settings, source, clock)
    alerts, pipeline, _ = collector.snapshot_flow(
        settings,
        market,
        runtime,
        LiveUpdates(ChannelLivePublisher(channel), per_second=settings.live_updates_per_second),
        metrics,
        clock,
        store=ProxyAlertStore(channel.call),
        publish=ChannelViews(channel),
    )
    desk = CollectorDesk(
        ChannelCollectorEnd(channel), LocalCollector(pipeline), runtime.replica_id, clock
    )
    _process_metrics(metrics, desk.link, lambda: True, market, alerts)  # a child always leads
    return Collector(runtime, pipeline, alerts, desk, metrics)


def _process_metrics(
    metrics: Metrics,
    link: LocalCollector,
    leading: Callable[[], bool],
    market: MarketSource,
    alerts: AlertService,
) -> None:
    """The collector's scrape-time metrics: leadership, its refreshes, its source's
    bad-data counts, its failed alert templates (refused deliveries are counted as they
    happen, in ``virtuoso_alert_deliveries_total{outcome="refused"}``)."""
    metrics.registry.register(
        collector_telemetry.CollectorProcessMetrics(
            lambda: link.status,
            leading,
            lambda: data_quality_of(market),
            template_failures=lambda: alerts.engine.template_failures,
        )
    )


async def run_collector(
    settings: Settings, stop: asyncio.Event, channel_path: str | None = None
) -> None:
    """Runs the collector of ``settings`` until ``stop`` is set — or, as a server's child
    on the local channel at ``channel_path``, until that channel closes (then it removes
    the socket its dead server left). Raises ConfigError, and OSError when the channel
    cannot be reached."""
    channel = None if channel_path is None else await connect(channel_path)
    if channel is None:
        parts = build_collector(settings)
    else:
        parts = build_child_collector(settings, channel)
        watch = asyncio.create_task(_stop_with(channel, stop), name="channel-watch")
    collector.announce_source(settings, parts.runtime.tiers)
    metrics_server = None
    if settings.monitoring_bind is not None:
        host, port = parse_bind(settings.monitoring_bind)
        metrics_server, _ = start_http_server(port, host, registry=parts.metrics.registry)
        log.info("collector metrics on http://%s/metrics", settings.monitoring_bind)
    await parts.start()
    log.info("collecting (replica %s)", parts.runtime.replica_id)
    try:
        await stop.wait()
    finally:
        await parts.stop()
        # The server hung up (killed: the kernel closed its end and sent us SIGTERM): no
        # one else will remove its socket. A server stopping us cleanly removes it itself.
        server_gone = channel is not None and await _hung_up(channel)
        if channel is not None:
            watch.cancel()
            await channel.close()
        if metrics_server is not None:
            metrics_server.shutdown()
        if channel_path is not None and server_gone:
            _remove_socket(channel_path)


async def _hung_up(channel: Channel) -> bool:
    """True when the server closed its end of the channel, seen within a moment (a killed
    server's end is closed by the kernel as the SIGTERM is sent, not always read yet)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(channel.closed.wait(), HANG_UP_SECONDS)
    return channel.closed.is_set()


def _remove_socket(path: str) -> None:
    """Removes the socket of a server that died without removing it (killed: the child
    got SIGTERM from the kernel) and its private directory, if empty; nothing else."""
    with contextlib.suppress(OSError):
        os.unlink(path)
    with contextlib.suppress(OSError):
        os.rmdir(os.path.dirname(path))
    log.info("the server is gone; removed its socket %s", path)


async def _stop_with(channel: Channel, stop: asyncio.Event) -> None:
    """Sets ``stop`` when the channel closes (the server went away)."""
    await channel.closed.wait()
    if not stop.is_set():
        log.warning("the server's channel closed; stopping")
        stop.set()
