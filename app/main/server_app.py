"""The serving role alone (``virtuoso serve`` with ``VIRTUOSO_COLLECTOR`` ``child`` or
``external``): HTTP and WebSocket only, the collector a child process this server runs
or a separate ``virtuoso collect`` service, met in Redis or, for a child without Redis,
over a local channel (``app.main.child_host``).

The views come from the tiers the collector publishes to; live updates and alerts come
over the realtime channel; cold reads that need the exchange are requests to the
collector (``app.services.remote_collector``); alert and session writes go to Redis.
This module and everything it imports load neither ccxt, numpy, TA-Lib nor the
analytics (``tests/integration/test_serving_imports.py`` checks it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from app.cache.policy import load_policy
from app.cache.runtime import CacheRuntime
from app.errors import ConfigError
from app.main import server
from app.main.alerting import build_alert_service
from app.main.child_host import ChildHost
from app.main.collectors import CollectorLinkMetrics
from app.main.supervisor import CollectorChild
from app.realtime.broadcaster import Broadcaster
from app.services.catalogue import check_policy_fits_refresh
from app.services.collector_wire import CollectorChannels, ServerEnd
from app.services.remote_collector import RemoteCollector, RemoteTimings
from app.services.view_cache import ViewCache
from app.services.wire_channel import ChannelServerEnd
from app.services.wire_redis import RedisServerEnd
from app.settings import Settings
from app.state import ServiceState

log = logging.getLogger(__name__)


def create_server_app(
    settings: Settings,
    clock: Callable[[], float] = time.time,
    tracer_provider: TracerProvider | None = None,
    child_flags: Sequence[str] | None = None,
) -> Quart:
    """The serving role as a Quart app whose collector runs elsewhere: as a child process
    it starts with ``child_flags``, keeps running and stops, or (``child_flags`` None) as
    a service of its own. The two meet in Redis when it is configured, else over a local
    channel (a child only). Raises ConfigError for an external collector without Redis,
    and for a child when the cache policy does not fit the refresh interval."""
    policy = load_policy(settings.cache_policy_path)
    if child_flags is not None:  # the child would refuse it, again after each restart
        check_policy_fits_refresh(policy, settings.refresh_seconds)
    app, runtime, limiter, metrics = server.serving_shell(settings, policy, clock)
    side = CollectorSide()
    end = _server_end(runtime, child_flags is not None)
    timings = RemoteTimings(gone_after_seconds=settings.collector_silence_seconds)
    remote = RemoteCollector(
        end, runtime.replica_id, clock, timings=timings, more_problems=(side.problems,)
    )
    side.remote = remote

    def parts(broadcaster: Broadcaster) -> server.StateParts:
        async def announce(alert: dict[str, Any], generated_at_ms: int) -> None:
            await broadcaster.publish_alert(alert, generated_at_ms)

        # Announces status changes made here; the collector announces the alerts it fires.
        alerts = build_alert_service(
            settings, runtime, remote.republish, announce=(announce,), clock=clock
        )
        namespace = runtime.cache.policy.namespace
        views = ViewCache(runtime.cache, runtime.coherence, remote, namespace)
        return server.StateParts(remote, views, alerts)

    state = server.serving_state(settings, runtime, limiter, metrics, clock, parts)
    if child_flags is not None:
        side.add_child(settings, child_flags, end, state)
    poller = server.finish_app(app, settings, state, tracer_provider)
    metrics.registry.register(CollectorLinkMetrics(remote, clock, lambda: state.started_at))
    server.run_with_app(
        app, state, poller, start=("collector link", side.start), stop=("collector link", side.stop)
    )
    log.info(
        "serving; market data from %s (%s), cache tiers: %s",
        "a collector service" if child_flags is None else "a collector child",
        settings.exchange,
        ", ".join(runtime.tiers),
    )
    return app


def _server_end(runtime: CacheRuntime, child: bool) -> ServerEnd:
    """Redis when configured; else the local channel to a child. Raises ConfigError for
    an external collector without Redis."""
    if runtime.redis is not None and runtime.redis_guard is not None:
        channels = CollectorChannels(runtime.cache.policy.namespace)
        return RedisServerEnd(runtime.redis, runtime.redis_guard, channels, runtime.replica_id)
    if child:
        return ChannelServerEnd()
    raise ConfigError("an external collector needs VIRTUOSO_REDIS_URL")


@dataclass(slots=True)
class CollectorSide:
    """How this server reaches its collector: the link (``remote``) and, for a child,
    the supervisor and, without Redis, the local channel's host. Started after the tiers
    and stopped before them (``server.run_with_app``)."""

    remote: RemoteCollector | None = None
    child: CollectorChild | None = None
    host: ChildHost | None = None

    def add_child(
        self, settings: Settings, flags: Sequence[str], end: ServerEnd, state: ServiceState
    ) -> None:
        """Runs the collector as a child started with ``flags`` (and the channel's path
        when ``end`` is the local channel)."""
        if isinstance(end, ChannelServerEnd):
            store, coherence = state.alerts.store, state.runtime.coherence
            self.host = ChildHost(
                end, state.views, state.broadcaster, store, coherence, self.child_pid
            )
        channel_flags = [] if self.host is None else ["--channel", self.host.path]
        self.child = CollectorChild(
            [*flags, *channel_flags],
            replica_id=settings.replica_id,
            monitoring_bind=settings.collector_monitoring_bind,
        )

    def child_pid(self) -> int | None:
        """The running child's process id (None without one)."""
        return None if self.child is None else self.child.pid

    def problems(self) -> list[str]:
        """The child's readiness reasons (it keeps exiting); none without one."""
        return [] if self.child is None else self.child.problems()

    async def start(self) -> None:
        """Listens for replies and reports, then for the child, then starts it."""
        assert self.remote is not None
        await self.remote.start()
        if self.host is not None:
            await self.host.start()
        if self.child is not None:
            self.child.start()

    async def stop(self) -> None:
        """Stops the child, the channel's host and the link."""
        if self.child is not None:
            await self.child.stop()
        if self.host is not None:
            await self.host.close()
        if self.remote is not None:
            await self.remote.close()
