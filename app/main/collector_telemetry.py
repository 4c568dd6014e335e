"""The collector's instruments: each refresh's duration, and each exchange call by
outcome with its time and its wait in the client-side rate limiter."""

from __future__ import annotations

from app.market.sources.base import MarketSource
from app.market.sources.guarded import FAMILIES as EXCHANGE_FAMILIES
from app.market.sources.guarded import GuardedSource
from app.observability.metrics import Metrics
from app.services.pipeline import RefreshListener

EXCHANGE_OUTCOMES = ("ok", "error", "timeout", "rate_limited", "rejected")


def refresh_observer(metrics: Metrics) -> RefreshListener:
    """The pipeline's refresh listener: each refresh's seconds by outcome."""

    def observe(outcome: str, seconds: float) -> None:
        metrics.refresh_duration.labels(outcome).observe(seconds)

    return observe


class ExchangeMetrics:
    """A GuardedSource's call observer: counts its calls by outcome and observes, apart,
    the exchange's time per request and the wait in the client-side rate limiter."""

    def __init__(self, metrics: Metrics, exchange: str) -> None:
        self.metrics = metrics
        self.exchange = exchange

    def call(self, family: str, outcome: str, seconds: float | None) -> None:
        self.metrics.exchange_requests.labels(self.exchange, family, outcome).inc()
        if seconds is not None:
            self.metrics.exchange_duration.labels(self.exchange, family).observe(seconds)

    def ratelimit_wait(self, family: str, seconds: float) -> None:
        self.metrics.exchange_ratelimit_wait.labels(self.exchange, family).observe(seconds)


def start_at_zero(metrics: Metrics, source: MarketSource) -> None:
    """Creates the refresh and exchange label sets at zero (a rate over nothing yet is
    0, not "no data"); the exchange's only for a guarded (real) source."""
    for outcome in ("ok", "error", "skipped"):
        metrics.refresh_duration.labels(outcome)
    if isinstance(source, GuardedSource):
        exchange = source.name
        for endpoint in EXCHANGE_FAMILIES:
            metrics.exchange_duration.labels(exchange, endpoint)
            metrics.exchange_ratelimit_wait.labels(exchange, endpoint)
            for outcome in EXCHANGE_OUTCOMES:
                metrics.exchange_requests.labels(exchange, endpoint, outcome)
