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
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from app.cache.policy import load_policy
from app.errors import ConfigError
from app.main import server
from app.main.alerting import build_alert_service
from app.main.child_host import ChildHost
from app.main.collectors import CollectorLinkMetrics
from app.main.supervisor import CollectorChild
from app.realtime.broadcaster import Broadcaster
from app.services.catalogue import check_policy_fits_refresh
from app.services.collector_wire import CollectorChannels, ServerEnd
from app.services.remote_collector import RemoteCollector
from app.services.view_cache import ViewCache
from app.services.wire_channel import ChannelServerEnd
from app.services.wire_redis import RedisServerEnd
from app.settings import Settings

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
    namespace = runtime.cache.policy.namespace
    end: ServerEnd
    if runtime.redis is not None and runtime.redis_guard is not None:
        channels = CollectorChannels(namespace)
        end = RedisServerEnd(runtime.redis, runtime.redis_guard, channels, runtime.replica_id)
    elif child_flags is not None:
        end = ChannelServerEnd()
    else:
        raise ConfigError("an external collector needs VIRTUOSO_REDIS_URL")
    child: CollectorChild | None = None  # built once the host's socket path is known
    remote = RemoteCollector(
        end, runtime.replica_id, clock, more_problems=(lambda: child_problems(child),)
    )

    def parts(broadcaster: Broadcaster) -> server.StateParts:
        async def announce(alert: dict[str, Any], generated_at_ms: int) -> None:
            await broadcaster.publish_alert(alert, generated_at_ms)

        # Announces status changes made here; the collector announces the alerts it fires.
        alerts = build_alert_service(
            settings, runtime, remote.republish, announce=(announce,), clock=clock
        )
        views = ViewCache(runtime.cache, runtime.coherence, remote, namespace)
        return server.StateParts(remote, views, alerts)

    state = server.serving_state(settings, runtime, limiter, metrics, clock, parts)
    host = None
    if isinstance(end, ChannelServerEnd):
        store, coherence = state.alerts.store, runtime.coherence
        host = ChildHost(
            end, state.views, state.broadcaster, store, coherence, lambda: child_pid(child)
        )
    if child_flags is not None:
        channel_flags = [] if host is None else ["--channel", host.path]
        child = CollectorChild(
            [*child_flags, *channel_flags],
            replica_id=settings.replica_id,
            monitoring_bind=settings.collector_monitoring_bind,
        )

    async def start() -> None:
        log.info(
            "serving; market data from %s (%s), cache tiers: %s",
            "a collector service" if child is None else "a collector child",
            settings.exchange,
            ", ".join(runtime.tiers),
        )
        await remote.start()
        if host is not None:
            await host.start()
        if child is not None:
            child.start()

    async def stop() -> None:
        if child is not None:
            await child.stop()
        if host is not None:
            await host.close()
        await remote.close()

    poller = server.finish_app(app, settings, state, tracer_provider)
    metrics.registry.register(CollectorLinkMetrics(remote, clock, lambda: state.started_at))
    server.run_with_app(
        app, state, poller, start=("collector link", start), stop=("collector link", stop)
    )
    return app


def child_pid(child: CollectorChild | None) -> int | None:
    """The running collector child's process id, None without one."""
    return None if child is None else child.pid


def child_problems(child: CollectorChild | None) -> list[str]:
    """The collector child's readiness reasons (it keeps exiting); none without one."""
    return [] if child is None else child.problems()
