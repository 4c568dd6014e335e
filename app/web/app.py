"""The Quart application factory: wires the source, cache tiers, pipeline and routes."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart
from quart_schema import Info, QuartSchema

from app.cache.adaptive import AdaptiveTtl
from app.cache.layered import NothingToServe
from app.cache.policy import CachePolicy, load_policy
from app.cache.runtime import CacheRuntime, build_cache
from app.errors import ConfigError
from app.main.sections import cache_config
from app.main.sources import make_source
from app.market.errors import MarketDataError
from app.market.sources.base import MarketSource
from app.observability.install import install_observability
from app.observability.tracing import provider_from_env
from app.realtime.broadcaster import Broadcaster
from app.realtime.protocol import ALERTS_KEPT
from app.realtime.ws_route import register_ws
from app.resilience.rate_limit import RateLimiter, RateLimits, load_rate_limits
from app.services.alerts.engine import AlertEngine
from app.services.alerts.service import AlertService
from app.services.alerts.store import AlertStore, FileAlertStore, RedisAlertStore
from app.services.alerts.webhooks import WebhookSender
from app.services.coordination import RefreshCoordinator
from app.services.live_updates import LiveUpdates
from app.services.pipeline import Pipeline
from app.services.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionCookies,
    SessionStore,
)
from app.services.view_cache import ViewCache
from app.services.warming import Warmer
from app.settings import Settings
from app.web.admin import admin
from app.web.alert_routes import alerts
from app.web.api import api_blueprint
from app.web.docs import serve_docs_locally
from app.web.errors import register_error_handlers
from app.web.health import health
from app.web.listeners import install_listener_split
from app.web.metrics_route import metrics_endpoint
from app.web.pages import pages
from app.web.rate_limit_hooks import install_rate_limits
from app.web.request_guards import install_request_guards
from app.web.rum import rum
from app.web.security import install_security_headers
from app.web.session_routes import sessions
from app.web.state import EXTENSION_KEY, ServiceState

log = logging.getLogger(__name__)

ADAPTIVE_TTL_SECONDS = 60.0
WARM_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between warm attempts


def create_app(
    settings: Settings,
    source: MarketSource | None = None,
    clock: Callable[[], float] = time.time,
    tracer_provider: TracerProvider | None = None,
) -> Quart:
    """``source`` defaults to what the settings name; tests pass their own.
    ``tracer_provider`` defaults to the one the ``OTEL_*`` variables describe (none
    without an OTLP endpoint); tests pass one with an in-memory exporter."""
    app = Quart(__name__)
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(
        app,
        info=Info(title="Virtuoso dashboards API", version="0.1.0"),
        redoc_ui_path=None,  # these two UIs load their scripts from a CDN
        scalar_ui_path=None,
    )
    serve_docs_locally(app)
    state = _build_state(settings, source or make_source(settings), clock)
    app.extensions[EXTENSION_KEY] = state
    install_listener_split(app, settings)  # before the rate limits: a 404 costs nothing
    limiter = install_rate_limits(
        app,
        _rate_limits(settings),
        state.runtime.redis,
        guard=state.runtime.redis_guard,
        token_is_valid=_known_token(settings),
    )
    state.rate_limiter = limiter
    _add_realtime(app, state, limiter)
    for blueprint in (api_blueprint(settings), pages, health, admin, sessions, alerts, rum):
        app.register_blueprint(blueprint)
    app.register_blueprint(metrics_endpoint)
    poller = install_observability(app, state, tracer_provider or provider_from_env())
    register_error_handlers(app)
    install_security_headers(app)
    install_request_guards(app)  # after the blueprints: auth first, strict JSON bodies
    background: list[asyncio.Task[None]] = []

    @app.before_serving
    async def start() -> None:
        _announce(settings, state)
        await state.runtime.start()
        await state.alerts.webhooks.start()
        await state.pipeline.start()
        background.append(asyncio.create_task(_warm_until_done(state), name="cache-warming"))
        background.append(asyncio.create_task(_tune_ttls(state), name="adaptive-ttl"))
        background.append(asyncio.create_task(poller.run(), name="backend-metrics"))

    @app.after_serving
    async def stop() -> None:
        for task in background:
            task.cancel()
        await _bounded("background tasks", asyncio.gather(*background, return_exceptions=True))
        await _bounded("pipeline", state.pipeline.stop())
        await _bounded("webhooks", state.alerts.webhooks.close())
        await _bounded("cache tiers", state.runtime.close())

    return app


# A shutdown step waiting on a backend that is down (a lock release, a pool close)
# must not hold the process: each step gets this long, then shutdown moves on.
SHUTDOWN_STEP_SECONDS = 3.0


async def _bounded(step: str, awaitable: Awaitable[object]) -> None:
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await awaitable
    except TimeoutError:
        log.warning("shutdown: %s took over %.0f s; moving on", step, SHUTDOWN_STEP_SECONDS)


def _rate_limits(settings: Settings) -> RateLimits:
    limits = load_rate_limits(settings.rate_limits)
    hops = settings.trusted_proxy_hops
    if hops is None:
        return limits
    return limits.model_copy(update={"trust_forwarded_for": hops > 0, "proxy_hops": max(1, hops)})


def _build_state(
    settings: Settings, source: MarketSource, clock: Callable[[], float]
) -> ServiceState:
    policy = load_policy(settings.cache_policy_path)
    check_policy_fits_refresh(policy, settings.refresh_seconds)
    runtime = build_cache(cache_config(settings), policy, clock)
    coordinator = None
    if (
        runtime.redis is not None
        and runtime.locks is not None
        and settings.optimized("single_flight")
    ):
        coordinator = RefreshCoordinator(
            runtime.redis,
            runtime.locks,
            settings.refresh_seconds,
            runtime.replica_id,
            policy.namespace,
        )
    views: ViewCache
    pipeline = Pipeline(settings, source, lambda b, t: views.publish(b, t), coordinator, clock)
    views = ViewCache(runtime.cache, runtime.coherence, pipeline, policy.namespace)
    session_store: SessionStore
    if runtime.redis is not None:
        session_store = RedisSessionStore(runtime.redis, guard=runtime.redis_guard)
    else:
        session_store = MemorySessionStore()
    cookies = SessionCookies(settings.secret_key or secrets.token_urlsafe(32))
    return ServiceState(
        settings,
        pipeline,
        views,
        runtime,
        session_store,
        cookies,
        Warmer(views),
        AdaptiveTtl(runtime.cache, clock),
        _alert_service(settings, runtime, pipeline, clock),
        clock,
        clock(),
    )


def _add_realtime(app: Quart, state: ServiceState, limiter: RateLimiter) -> None:
    """``/ws``: live updates of every new snapshot and every alert, fanned out to all
    replicas through Redis when configured."""
    runtime = state.runtime
    broadcaster = Broadcaster(
        runtime.replica_id,
        runtime.redis,
        runtime.redis_guard,
        rate_limiter=limiter,
        known_symbols=lambda: state.known_symbols,
        server_clock=state.clock,
        redis_channel=f"{runtime.cache.policy.namespace}:realtime",
    )
    register_ws(app, broadcaster, allowed_origins=state.settings.allowed_origins)
    live = LiveUpdates(broadcaster)
    state.pipeline.on_snapshot.append(live.on_snapshot)
    state.alerts.announce.append(live.announce_alert)

    async def recent_alerts() -> list[dict]:  # the alerts snapshot's seed, at start
        return await state.alerts.recent_alerts(ALERTS_KEPT)

    broadcaster.seed_alerts_from(recent_alerts)
    state.broadcaster = broadcaster


def _alert_service(
    settings: Settings, runtime: CacheRuntime, pipeline: Pipeline, clock: Callable[[], float]
) -> AlertService:
    """Rules and alerts in Redis when configured, else in a local file; evaluated on
    every snapshot this replica makes."""
    store: AlertStore
    if runtime.redis is not None and runtime.redis_guard is not None:
        prefix = f"{runtime.cache.policy.namespace}:alerts"
        store = RedisAlertStore(runtime.redis, runtime.redis_guard, prefix=prefix)
    else:
        store = FileAlertStore(Path(settings.data_dir) / "alerts.json")
    thresholds = settings.confluence
    engine = AlertEngine(thresholds.long_threshold, thresholds.short_threshold, clock=clock)
    webhooks = WebhookSender(allow=settings.webhook_allow)  # the operator's internal hosts
    service = AlertService(
        store, engine, pipeline, runtime.cache, runtime.coherence, webhooks, clock=clock
    )
    pipeline.on_snapshot.append(service.on_snapshot)
    pipeline.critical_alerts = service.critical_alerts
    return service


def _known_token(settings: Settings) -> Callable[[str], bool]:
    """Only a token this service issued names a client; any other is just its IP."""
    known = [t.encode() for t in (settings.admin_token, settings.api_token) if t]

    def is_known(token: str) -> bool:
        return any(hmac.compare_digest(token.encode(), k) for k in known)

    return is_known


def check_policy_fits_refresh(policy: CachePolicy, refresh_seconds: float) -> None:
    """Views the pipeline owns are rewritten every refresh: a TTL that can drop below
    1.5 refresh intervals would mark them stale between two on-time refreshes."""
    floor = 1.5 * refresh_seconds
    for name in policy.families:
        rules = policy.family(name)
        if rules.owner == "pipeline" and rules.min_ttl < floor:
            raise ConfigError(
                f"invalid configuration: cache family {name} min_ttl {rules.min_ttl} s is "
                f"under 1.5 × refresh_seconds ({floor:g} s); raise it or refresh more often"
            )


async def _warm_until_done(state: ServiceState) -> None:
    """Readiness waits for this: the hot views computed and stored."""
    delay, longest = WARM_RETRY_SECONDS
    await state.pipeline.source_started.wait()
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


async def _tune_ttls(state: ServiceState) -> None:
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


def _announce(settings: Settings, state: ServiceState) -> None:
    tiers = ", ".join(state.runtime.tiers)
    if settings.exchange == "simulated":
        log.warning(
            "market data is SIMULATED (seed %d): set VIRTUOSO_EXCHANGE for a real "
            "exchange; cache tiers: %s",
            settings.seed,
            tiers,
        )
    else:
        log.info(
            "market data from %s%s; cache tiers: %s",
            settings.exchange,
            f" at {settings.exchange_url}" if settings.exchange_url else "",
            tiers,
        )
