"""The collecting role: the market source, the refresher (snapshot → analysis → views
→ cache) with its listeners, and the warming of the hot views.

Today it runs inside the serving process (``app.main.embedded``); nothing here needs
the Quart app, so it can become a process of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence

from app.cache.layered import NothingToServe
from app.cache.policy import CachePolicy
from app.cache.runtime import CacheRuntime
from app.errors import ConfigError
from app.main.sections import pipeline_settings
from app.market.errors import MarketDataError
from app.market.sources.base import MarketSource
from app.services.catalogue import CATALOGUE
from app.services.collector_link import LocalCollector
from app.services.coordination import RefreshCoordinator
from app.services.pipeline import CriticalAlerts, Pipeline, RefreshListener, SnapshotListener
from app.services.view_cache import ViewCache
from app.settings import Settings
from app.state import ServiceState

log = logging.getLogger(__name__)

WARM_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between warm attempts


def check_policy_fits_refresh(policy: CachePolicy, refresh_seconds: float) -> None:
    """Each view's family is in the policy with the owner the catalogue gives it (a
    snapshot view's family ``pipeline``, an on-demand one's ``on_demand``); and views
    the pipeline owns are rewritten every refresh: a TTL that can drop below 1.5
    refresh intervals would mark them stale between two on-time refreshes. Raises
    ConfigError naming the family."""
    for spec in CATALOGUE:  # the policy has every family: load_policy checks that
        if policy.family(spec.family).owner != spec.owner:
            raise ConfigError(
                f"invalid configuration: cache family {spec.family} must have owner "
                f"{spec.owner} (view {spec.name}), not {policy.family(spec.family).owner}"
            )
    floor = 1.5 * refresh_seconds
    for name in policy.families:
        rules = policy.family(name)
        if rules.owner == "pipeline" and rules.min_ttl < floor:
            raise ConfigError(
                f"invalid configuration: cache family {name} min_ttl {rules.min_ttl} s is "
                f"under 1.5 × refresh_seconds ({floor:g} s); raise it or refresh more often"
            )


def build_pipeline(
    settings: Settings,
    source: MarketSource,
    runtime: CacheRuntime,
    clock: Callable[[], float],
    *,
    listeners: Sequence[SnapshotListener],
    on_refresh: Sequence[RefreshListener],
    critical_alerts: CriticalAlerts,
) -> tuple[Pipeline, ViewCache]:
    """The refresher and the view cache it publishes to (which calls it back for cold
    reads), coordinated across replicas when Redis is there."""
    namespace = runtime.cache.policy.namespace
    views: ViewCache
    pipeline = Pipeline(
        pipeline_settings(settings),
        source,
        lambda bodies, generated_at_ms: views.publish(bodies, generated_at_ms),
        _coordinator(settings, runtime),
        clock,
        listeners=listeners,
        on_refresh=on_refresh,
        critical_alerts=critical_alerts,
    )
    views = ViewCache(runtime.cache, runtime.coherence, LocalCollector(pipeline), namespace)
    return pipeline, views


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
        runtime.cache.policy.namespace,
    )


async def warm_until_done(state: ServiceState) -> None:
    """Readiness waits for this: the hot views computed and stored (retried with a
    doubling wait while the source or the cache cannot give them)."""
    delay, longest = WARM_RETRY_SECONDS
    await state.collector.started.wait()
    while True:
        with contextlib.suppress(NothingToServe, MarketDataError):
            report = await state.warmer.warm(state.known_symbols)
            state.warmed = True
            log.info(
                "cache warm: %d views in %.0f ms", len(report["warmed"]), report["duration_ms"]
            )
            return
        await asyncio.sleep(delay)
        delay = min(longest, delay * 2)


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
