"""The collector's instruments: each refresh's duration, and each exchange call by
outcome with its time and its wait in the client-side rate limiter; in a collector
process of its own, also whether it leads and its refreshes and views, read at scrape
time."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.main.collectors import (
    DataQuality,
    data_quality_family,
    stream_families,
    template_failures_family,
)
from app.market.sources.base import MarketSource
from app.market.sources.guarded import FAMILIES as EXCHANGE_FAMILIES
from app.market.sources.guarded import GuardedSource
from app.observability.metrics import Metrics
from app.services.collector_link import CollectorStatus
from app.services.pipeline import RefreshListener

EXCHANGE_OUTCOMES = ("ok", "error", "timeout", "rate_limited", "rejected")
REFRESH_OUTCOMES = ("ok", "error", "skipped")


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


DELIVERY_OUTCOMES = ("delivered", "retried", "failed", "refused", "postponed", "outbox_full")


def delivery_observer(metrics: Metrics) -> Callable[[str, str, float | None], None]:
    """The outbox's ``DeliveryListener``: each delivery outcome by channel type (a
    scheme name such as ``webhook`` or ``mailto``, never a URL), and the seconds from
    enqueue to delivered."""

    def observe(channel_type: str, outcome: str, seconds: float | None) -> None:
        metrics.alert_deliveries.labels(channel_type, outcome).inc()
        if seconds is not None:
            metrics.alert_delivery_seconds.labels(channel_type).observe(seconds)

    return observe


def start_at_zero(metrics: Metrics, source: MarketSource) -> None:
    """Creates the refresh and exchange label sets at zero (a rate over nothing yet is
    0, not "no data"); the exchange's only for a guarded (real) source."""
    for outcome in ("ok", "error", "skipped"):
        metrics.refresh_duration.labels(outcome)
    for outcome in DELIVERY_OUTCOMES:
        metrics.alert_deliveries.labels("webhook", outcome)
    metrics.alert_delivery_seconds.labels("webhook")
    if isinstance(source, GuardedSource):
        exchange = source.name
        for endpoint in EXCHANGE_FAMILIES:
            metrics.exchange_duration.labels(exchange, endpoint)
            metrics.exchange_ratelimit_wait.labels(exchange, endpoint)
            for outcome in EXCHANGE_OUTCOMES:
                metrics.exchange_requests.labels(exchange, endpoint, outcome)


class CollectorProcessMetrics(Collector):
    """Scrape-time metrics of a ``virtuoso collect`` process, read from what it keeps
    anyway: ``virtuoso_collector_leading`` (1 while it holds the lease and refreshes, 0
    while it stands by: summed over the collectors, 1 when all is well) and its own
    pipeline's ``virtuoso_pipeline_refreshes_total`` by outcome and
    ``virtuoso_views_built_total`` (a serving process reports the collector's copies;
    here they are counted where the refreshes run). ``status`` and ``leading`` are read
    at each scrape; with ``data_quality`` the source's bad-data counts, and with
    ``template_failures`` the alert templates that failed to render (all counted where
    they happen: here)."""

    def __init__(
        self,
        status: Callable[[], CollectorStatus],
        leading: Callable[[], bool],
        data_quality: DataQuality = dict,
        template_failures: Callable[[], int] = lambda: 0,
    ) -> None:
        self.status = status
        self.leading = leading
        self.data_quality = data_quality
        self.template_failures = template_failures

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily(
            "virtuoso_collector_leading",
            "1 while this collector leads (refreshes, calls the exchange), 0 while it stands by",
            value=1 if self.leading() else 0,
        )
        status = self.status()
        refreshes = CounterMetricFamily(
            "virtuoso_pipeline_refreshes",
            "Refreshes by outcome (skipped: another collector refreshed)",
            labels=("outcome",),
        )
        for outcome in REFRESH_OUTCOMES:
            refreshes.add_metric((outcome,), status.refreshes.get(outcome, 0))
        yield refreshes
        yield CounterMetricFamily(
            "virtuoso_views_built", "Views built from snapshots", value=status.views_built
        )
        yield data_quality_family(self.data_quality())
        yield template_failures_family(self.template_failures())
        yield from stream_families(status.streams)
