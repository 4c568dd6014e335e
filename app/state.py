"""What the parts of one process share: the serving settings, the link to the collector,
the view cache, the alert service, the realtime broadcaster and the metrics, kept on the
Quart app under :data:`EXTENSION`.

A leaf: the composition roots (``app.main``) build the state; routes read it through
:func:`service_state`. The types it holds are imported only for type checking, so
importing this module imports no other part of ``app``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, cast

from quart import current_app

if TYPE_CHECKING:
    from app.cache.adaptive import AdaptiveTtl
    from app.cache.runtime import CacheRuntime
    from app.observability.metrics import Metrics
    from app.realtime.broadcaster import Broadcaster
    from app.resilience.rate_limit import RateLimiter
    from app.services.alerts.service import AlertService
    from app.services.collector_link import CollectorLink
    from app.services.pipeline import Pipeline
    from app.services.sessions import SessionCookies, SessionStore
    from app.services.view_cache import ViewCache
    from app.services.warming import Warmer

EXTENSION = "virtuoso"  # the key of the ServiceState in ``app.extensions``


@dataclass(frozen=True, slots=True)
class ServingSettings:
    """The settings the routes read: the exchange's name (``simulated`` or a ccxt id),
    the configured symbols, the refresh interval (seconds, for pages and Retry-After),
    the derivatives' read interval (seconds, for pages: when they are stale),
    the confluence signal thresholds (score points, for pages), the bearer tokens (None:
    their endpoints are disabled), whether /health shows details to anyone, the proxy
    hops trusted for client addresses (None: the rate-limit file says) and whether
    views are served as stored bytes (``serialize_once``, an optimisation the benchmark
    can switch off)."""

    exchange: str
    symbols: tuple[str, ...]
    refresh_seconds: float
    long_threshold: float
    short_threshold: float
    admin_token: str | None = None
    api_token: str | None = None
    public_details: bool = False
    trusted_proxy_hops: int | None = None
    serialize_once: bool = True
    derivatives_refresh_seconds: float = 60.0


@dataclass(slots=True)
class ServiceState:
    """One process's service: built once by a composition root, then only read (but for
    ``warmed``, set when the hot views are first in the cache)."""

    settings: ServingSettings
    collector: CollectorLink
    views: ViewCache
    runtime: CacheRuntime
    sessions: SessionStore
    cookies: SessionCookies
    warmer: Warmer
    adaptive: AdaptiveTtl
    alerts: AlertService
    metrics: Metrics
    broadcaster: Broadcaster
    rate_limiter: RateLimiter
    # The refresher when it runs in this process (the embedded service), else None.
    pipeline: Pipeline | None = None
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)  # epoch seconds
    warmed: bool = False

    def now_ms(self) -> int:
        """The state's clock in epoch milliseconds."""
        return int(self.clock() * 1000)

    @property
    def known_symbols(self) -> list[str]:
        """The symbols collected: those the exchange lists once the source started,
        else the configured ones."""
        collected = self.collector.symbols()
        return list(self.settings.symbols) if collected is None else collected

    @property
    def unserved_symbols(self) -> dict[str, str]:
        """Collected symbols the exchange does not list or serve now → why (as this
        replica last saw it)."""
        return {issue["symbol"]: issue["reason"] for issue in self.collector.status.delisted}


def service_state() -> ServiceState:
    """The state of the app handling the current request or WebSocket."""
    return cast("ServiceState", current_app.extensions[EXTENSION])
