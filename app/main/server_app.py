"""The serving role alone (``virtuoso serve`` with ``VIRTUOSO_COLLECTOR=external``): HTTP
and WebSocket only, the collector a separate ``virtuoso collect`` service met in Redis.

The views come from the tiers the collector publishes to; live updates and alerts come
over the realtime channel; cold reads that need the exchange are requests to the
collector (``app.services.remote_collector``); alert and session writes go to Redis.
This module and everything it imports load neither ccxt, numpy, TA-Lib nor the
analytics (``tests/integration/test_serving_imports.py`` checks it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart

from app.cache.policy import load_policy
from app.errors import ConfigError
from app.main import server
from app.main.alerting import build_alert_service
from app.main.supervisor import CollectorChild
from app.realtime.broadcaster import Broadcaster
from app.services.collector_wire import CollectorChannels
from app.services.remote_collector import RemoteCollector
from app.services.view_cache import ViewCache
from app.services.wire_redis import RedisServerEnd
from app.settings import Settings

log = logging.getLogger(__name__)


def create_server_app(
    settings: Settings,
    clock: Callable[[], float] = time.time,
    tracer_provider: TracerProvider | None = None,
    child: CollectorChild | None = None,
) -> Quart:
    """The serving role as a Quart app whose collector runs elsewhere: in ``child``, a
    process it starts, keeps running and stops, or in a service of its own. Raises
    ConfigError without Redis (the servers and the collector meet there)."""
    policy = load_policy(settings.cache_policy_path)
    app, runtime, limiter, metrics = server.serving_shell(settings, policy, clock)
    if runtime.redis is None or runtime.redis_guard is None:
        raise ConfigError("an external collector needs VIRTUOSO_REDIS_URL")
    namespace = runtime.cache.policy.namespace
    end = RedisServerEnd(
        runtime.redis, runtime.redis_guard, CollectorChannels(namespace), runtime.replica_id
    )
    remote = RemoteCollector(end, runtime.replica_id, clock)

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

    async def start() -> None:
        log.info(
            "serving only; market data from the collector (%s), cache tiers: %s",
            settings.exchange,
            ", ".join(runtime.tiers),
        )
        await remote.start()
        if child is not None:
            child.start()

    async def stop() -> None:
        if child is not None:
            await child.stop()
        await remote.close()

    poller = server.finish_app(app, settings, state, tracer_provider)
    server.run_with_app(
        app, state, poller, start=("collector link", start), stop=("collector link", stop)
    )
    return app
