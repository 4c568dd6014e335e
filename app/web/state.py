"""What the routes share: settings, the pipeline, the view cache of this process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quart import current_app

from app.cache.adaptive import AdaptiveTtl
from app.cache.runtime import CacheRuntime
from app.observability.metrics import Metrics
from app.realtime.broadcaster import Broadcaster
from app.resilience.rate_limit import RateLimiter
from app.services.alerts.service import AlertService
from app.services.pipeline import Pipeline
from app.services.sessions import SessionCookies, SessionStore
from app.services.view_cache import ViewCache
from app.services.warming import Warmer
from app.settings import Settings

EXTENSION_KEY = "virtuoso"


@dataclass(slots=True)
class ServiceState:
    settings: Settings
    pipeline: Pipeline
    views: ViewCache
    runtime: CacheRuntime
    sessions: SessionStore
    cookies: SessionCookies
    warmer: Warmer
    adaptive: AdaptiveTtl
    alerts: AlertService
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)
    warmed: bool = False
    broadcaster: Broadcaster | None = None
    rate_limiter: RateLimiter | None = None
    metrics: Metrics = field(default_factory=Metrics)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def known_symbols(self) -> list[str]:
        collector = self.pipeline.collector
        return list(collector.symbols) if collector else list(self.settings.symbols)

    @property
    def unserved_symbols(self) -> dict[str, str]:
        """Collected symbols the exchange does not list or serve now → why (as this
        replica last saw it)."""
        return {issue["symbol"]: issue["reason"] for issue in self.pipeline.status.delisted}


def service_state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
