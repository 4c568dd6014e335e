"""The serving role: the Quart app around a ServiceState — routes, HTTP hooks, rate
limits, the ``/ws`` live updates and the alert service the routes write through.

Each function builds or installs one part; ``app.main.embedded`` calls them in order
(the order of the request hooks matters, see there).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path

from quart import Quart
from quart_schema import Info, QuartSchema

from app.cache.runtime import CacheRuntime
from app.realtime.broadcaster import Broadcaster
from app.realtime.protocol import ALERTS_KEPT
from app.realtime.ws_route import register_ws
from app.resilience.rate_limit import RateLimiter, RateLimits, load_rate_limits
from app.services.alerts.engine import AlertEngine
from app.services.alerts.service import AlertService, Announce, Republish
from app.services.alerts.store import AlertStore, FileAlertStore, RedisAlertStore
from app.services.alerts.webhooks import WebhookSender
from app.services.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionCookies,
    SessionStore,
)
from app.settings import Settings
from app.state import ServiceState
from app.web.admin import admin
from app.web.alert_routes import alerts
from app.web.api import api_blueprint
from app.web.docs import serve_docs_locally
from app.web.errors import register_error_handlers
from app.web.health import health
from app.web.metrics_route import metrics_blueprint
from app.web.pages import pages
from app.web.rate_limit_hooks import install_rate_limits
from app.web.request_guards import install_request_guards
from app.web.rum import rum_blueprint
from app.web.security import install_security_headers
from app.web.session_routes import sessions

log = logging.getLogger(__name__)

ADAPTIVE_TTL_SECONDS = 60.0
# The package whose folder holds the templates and static files the routes serve.
WEB_PACKAGE = "app.web"


def new_app() -> Quart:
    """A Quart app with the OpenAPI document and its UI served from this host."""
    app = Quart(WEB_PACKAGE)
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(
        app,
        info=Info(title="Virtuoso dashboards API", version="0.1.0"),
        redoc_ui_path=None,  # these two UIs load their scripts from a CDN
        scalar_ui_path=None,
    )
    serve_docs_locally(app)
    return app


def install_limits(app: Quart, settings: Settings, runtime: CacheRuntime) -> RateLimiter:
    """The rate limits of the settings' file, counted in Redis when configured; a token
    this service issued names the client, anything else is its address."""
    return install_rate_limits(
        app,
        _rate_limits(settings),
        runtime.redis,
        guard=runtime.redis_guard,
        token_is_valid=_known_token(settings),
    )


def _rate_limits(settings: Settings) -> RateLimits:
    limits = load_rate_limits(settings.rate_limits)
    hops = settings.trusted_proxy_hops
    if hops is None:
        return limits
    return limits.model_copy(update={"trust_forwarded_for": hops > 0, "proxy_hops": max(1, hops)})


def _known_token(settings: Settings) -> Callable[[str], bool]:
    """Only a token this service issued names a client; any other is just its IP."""
    known = [t.encode() for t in (settings.admin_token, settings.api_token) if t]

    def is_known(token: str) -> bool:
        return any(hmac.compare_digest(token.encode(), k) for k in known)

    return is_known


def build_broadcaster(
    runtime: CacheRuntime,
    limiter: RateLimiter,
    known_symbols: Callable[[], list[str]],
    clock: Callable[[], float],
    on_latency: Callable[[str, float], None],
) -> Broadcaster:
    """Live updates of every new snapshot and every alert, fanned out to all replicas
    through Redis when configured; ``on_latency`` is told each delivery's latency."""
    return Broadcaster(
        runtime.replica_id,
        runtime.redis,
        runtime.redis_guard,
        rate_limiter=limiter,
        known_symbols=known_symbols,
        server_clock=clock,
        redis_channel=f"{runtime.cache.policy.namespace}:realtime",
        on_latency=on_latency,
    )


def build_alert_service(
    settings: Settings,
    runtime: CacheRuntime,
    republish: Republish,
    announce: Sequence[Announce],
    clock: Callable[[], float],
) -> AlertService:
    """Rules and alerts in Redis when configured, else in a local file; ``republish``
    rebuilds the dashboards when alerts change, ``announce`` is told of each alert."""
    store: AlertStore
    if runtime.redis is not None and runtime.redis_guard is not None:
        prefix = f"{runtime.cache.policy.namespace}:alerts"
        store = RedisAlertStore(runtime.redis, runtime.redis_guard, prefix=prefix)
    else:
        store = FileAlertStore(Path(settings.data_dir) / "alerts.json")
    thresholds = settings.confluence
    engine = AlertEngine(thresholds.long_threshold, thresholds.short_threshold, clock=clock)
    webhooks = WebhookSender(allow=settings.webhook_allow)  # the operator's internal hosts
    return AlertService(
        store,
        engine,
        republish,
        settings.refresh_seconds,
        runtime.cache,
        runtime.coherence,
        webhooks,
        announce=announce,
        clock=clock,
    )


def build_sessions(
    settings: Settings, runtime: CacheRuntime
) -> tuple[SessionStore, SessionCookies]:
    """Sessions in Redis when configured (shared by the replicas), else in memory; the
    cookies signed with the settings' key (a random one per process without)."""
    store: SessionStore
    if runtime.redis is not None:
        store = RedisSessionStore(runtime.redis, guard=runtime.redis_guard)
    else:
        store = MemorySessionStore()
    return store, SessionCookies(settings.secret_key or secrets.token_urlsafe(32))


def install_routes(
    app: Quart,
    state: ServiceState,
    allowed_origins: Sequence[str],
    timeframes: Sequence[str],
) -> None:
    """``/ws`` (opened from the page's own origin or ``allowed_origins``) and every
    blueprint: the API (confluence over ``timeframes``), pages, health, admin, sessions,
    alerts, RUM and ``/metrics``."""
    register_ws(app, state.broadcaster, allowed_origins=allowed_origins)

    async def recent_alerts() -> list[dict[str, object]]:  # the alerts snapshot's seed
        return await state.alerts.recent_alerts(ALERTS_KEPT)

    state.broadcaster.seed_alerts_from(recent_alerts)
    rum = rum_blueprint(state.metrics.page_load)
    for blueprint in (api_blueprint(timeframes), pages, health, admin, sessions, alerts, rum):
        app.register_blueprint(blueprint)
    app.register_blueprint(metrics_blueprint(state.metrics.registry))


def install_response_hooks(app: Quart) -> None:
    """Error mapping, security headers and the request guards (after the blueprints:
    auth first, then strict JSON bodies)."""
    register_error_handlers(app)
    install_security_headers(app)
    install_request_guards(app)


async def tune_ttls(state: ServiceState) -> None:
    """Every minute, moves the adaptive families' TTLs by what the hit ratios say."""
    while True:
        await asyncio.sleep(ADAPTIVE_TTL_SECONDS)
        for decision in state.adaptive.tick():
            log.info(
                "ttl of %s: %.0f s → %.0f s (%s)",
                decision.family,
                decision.old_ttl,
                decision.new_ttl,
                decision.reason,
            )
