"""The serving role's parts: the Quart app around a ServiceState — routes, HTTP hooks,
rate limits, the ``/ws`` live updates, sessions — and its life cycle (warming, adaptive
TTLs, the backend metrics, a bounded shutdown).

Each function builds or installs one part; ``app.main.embedded`` (collector in the
process) and ``app.main.server_app`` (collector elsewhere) call them in the same order:
``serving_shell`` → the state → ``finish_app`` → ``run_with_app``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry.sdk.trace import TracerProvider
from quart import Quart
from quart_schema import Info, QuartSchema

from app.backends.tasks import cancel_and_wait
from app.cache.adaptive import AdaptiveTtl
from app.cache.layered import NothingToServe
from app.cache.policy import CachePolicy
from app.cache.runtime import CacheRuntime, build_cache
from app.cache.stats import CacheStats
from app.main import alerting, sections, telemetry
from app.main.collectors import DataQuality
from app.main.poller import BackendPoller
from app.market.errors import MarketDataError
from app.observability.metrics import Metrics
from app.observability.tracing import provider_from_env
from app.realtime.broadcaster import Broadcaster
from app.realtime.protocol import ALERTS_KEPT
from app.realtime.ws_route import register_ws
from app.resilience.rate_limit import RateLimiter, RateLimits, load_rate_limits
from app.services.alerts.service import AlertService
from app.services.collector_link import CollectorLink
from app.services.sessions import (
    MemorySessionStore,
    RedisSessionStore,
    SessionCookies,
    SessionStore,
)
from app.services.view_cache import ViewCache
from app.services.warming import Warmer
from app.settings import Settings
from app.state import EXTENSION, ServiceState
from app.web.admin import admin
from app.web.alert_routes import alerts
from app.web.api import api_blueprint
from app.web.channel_routes import channels
from app.web.digest_routes import digest_blueprint
from app.web.docs import serve_docs_locally
from app.web.errors import register_error_handlers
from app.web.health import health
from app.web.listeners import install_listener_split
from app.web.metrics_route import metrics_blueprint
from app.web.pages import pages
from app.web.rate_limit_hooks import install_rate_limits
from app.web.request_guards import install_request_guards
from app.web.rum import rum_blueprint
from app.web.security import install_security_headers
from app.web.session_routes import sessions

if TYPE_CHECKING:  # the pipeline runs only where the collector is in the process
    from app.services.pipeline import Pipeline

log = logging.getLogger(__name__)

ADAPTIVE_TTL_SECONDS = 60.0
# A shutdown step waiting on a backend that is down (a lock release, a pool close)
# must not hold the process: each step gets this long, then shutdown moves on.
SHUTDOWN_STEP_SECONDS = 3.0
WARM_RETRY_SECONDS = (1.0, 30.0)  # first and longest wait between warm attempts
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
        keyspace=runtime.keyspace,
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
    on_data_age: Callable[[str, float], None],
) -> Broadcaster:
    """Live updates of every new snapshot and every alert, fanned out to all replicas
    through Redis when configured; ``on_latency`` is told each delivery's latency and
    ``on_data_age`` each update's data age at fan-out."""
    return Broadcaster(
        runtime.replica_id,
        runtime.redis,
        runtime.redis_guard,
        rate_limiter=limiter,
        known_symbols=known_symbols,
        server_clock=clock,
        keyspace=runtime.keyspace,
        on_latency=on_latency,
        on_data_age=on_data_age,
    )


def build_sessions(
    settings: Settings, runtime: CacheRuntime
) -> tuple[SessionStore, SessionCookies]:
    """Sessions in Redis when configured (shared by the replicas), else in memory; the
    cookies signed with the settings' key (a random one per process without)."""
    store: SessionStore
    if runtime.redis is not None:
        store = RedisSessionStore(
            runtime.redis, keyspace=runtime.keyspace, guard=runtime.redis_guard
        )
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
    app.register_blueprint(channels)
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


def serving_shell(
    settings: Settings, policy: CachePolicy, clock: Callable[[], float]
) -> tuple[Quart, CacheRuntime, RateLimiter, Metrics]:
    """The app, its cache tiers, its rate limiter and its metrics. The request hooks run
    in the order installed: the listener split first (a 404 costs nothing), then the rate
    limits; ``finish_app`` adds the routes, then the telemetry middleware, error mapping,
    security headers and request guards."""
    metrics = Metrics()
    stats = CacheStats(timing_listeners=[telemetry.cache_timer(metrics)])
    runtime = build_cache(sections.cache_config(settings), policy, clock, stats)
    app = new_app()
    install_listener_split(app, monitoring=settings.monitoring_bind is not None)
    limiter = install_limits(app, settings, runtime)
    return app, runtime, limiter, metrics


@dataclass(frozen=True, slots=True)
class StateParts:
    """What differs between the roles' states: the link to the collector, the view cache
    reading through it, the alert service, and the pipeline where it runs here."""

    collector: CollectorLink
    views: ViewCache
    alerts: AlertService
    pipeline: Pipeline | None = None


def serving_state(
    settings: Settings,
    runtime: CacheRuntime,
    limiter: RateLimiter,
    metrics: Metrics,
    clock: Callable[[], float],
    parts: Callable[[Broadcaster], StateParts],
) -> ServiceState:
    """The process's state: the broadcaster first (``parts`` gets it, to announce live
    updates and alerts), then the collector's side from ``parts``, then the sessions."""
    state: ServiceState  # built last; the broadcaster reads its symbols when it runs
    broadcaster = build_broadcaster(
        runtime,
        limiter,
        lambda: state.known_symbols,
        clock,
        on_latency=telemetry.ws_latency_observer(metrics),
        on_data_age=telemetry.ws_data_age_observer(metrics),
    )
    made = parts(broadcaster)
    session_store, cookies = build_sessions(settings, runtime)
    state = ServiceState(
        settings=sections.serving_settings(settings),
        collector=made.collector,
        pipeline=made.pipeline,
        views=made.views,
        runtime=runtime,
        sessions=session_store,
        cookies=cookies,
        warmer=Warmer(made.views),
        adaptive=AdaptiveTtl(runtime.cache, clock),
        alerts=made.alerts,
        metrics=metrics,
        broadcaster=broadcaster,
        rate_limiter=limiter,
        clock=clock,
        started_at=clock(),
    )
    return state


def finish_app(
    app: Quart,
    settings: Settings,
    state: ServiceState,
    tracer_provider: TracerProvider | None,
    data_quality: DataQuality = dict,
) -> BackendPoller:
    """Puts ``state`` on ``app``, installs the routes, the telemetry (``tracer_provider``
    defaults to the ``OTEL_*`` variables' one) and the response hooks; returns the
    backend poller for ``run_with_app``."""
    app.extensions[EXTENSION] = state
    timeframes = tuple(settings.confluence.timeframes)
    install_routes(app, state, settings.allowed_origins, timeframes)
    app.register_blueprint(digest_blueprint(alerting.build_digest_store(settings, state.runtime)))
    provider = tracer_provider or provider_from_env()
    poller = telemetry.install_telemetry(app, state, provider, data_quality)
    install_response_hooks(app)
    return poller


Step = tuple[str, Callable[[], Awaitable[object]]]


def run_with_app(
    app: Quart, state: ServiceState, poller: BackendPoller, *, start: Step, stop: Step
) -> None:
    """When the app starts serving: the cache tiers, then ``start`` (the collector's
    side), then the background loops (warming, adaptive TTLs, the backend metrics). When
    it stops: the loops, ``stop`` and the tiers, each step bounded by ``SHUTDOWN_STEP_SECONDS``."""
    background: list[asyncio.Task[None]] = []

    @app.before_serving
    async def started() -> None:
        await state.runtime.start()
        await start[1]()
        background.append(asyncio.create_task(warm_until_done(state), name="cache-warming"))
        background.append(asyncio.create_task(tune_ttls(state), name="adaptive-ttl"))
        background.append(asyncio.create_task(poller.run(), name="backend-metrics"))

    @app.after_serving
    async def stopped() -> None:
        await bounded("background tasks", cancel_and_wait(background))
        await bounded(stop[0], stop[1]())
        await bounded("cache tiers", state.runtime.close())


async def bounded(step: str, awaitable: Awaitable[object]) -> None:
    """Awaits one shutdown step, at most ``SHUTDOWN_STEP_SECONDS`` (a backend that is down
    must not hold the process), then moves on with a warning."""
    try:
        async with asyncio.timeout(SHUTDOWN_STEP_SECONDS):
            await awaitable
    except TimeoutError:
        log.warning("shutdown: %s took over %.0f s; moving on", step, SHUTDOWN_STEP_SECONDS)
