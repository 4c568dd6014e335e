"""Scrape-time metrics read from the counters the service keeps anyway (cache
statistics, circuit breakers, rate limiter, WebSocket broadcaster, pipeline) and
from the backend poller: nothing is counted twice and the hot paths pay nothing."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from app.cache.stats import SERVED_OUTCOMES
from app.main.poller import BackendPoller
from app.realtime.protocol import CHANNELS
from app.resilience.breaker import STATE_CODES
from app.services.collector_wire import REQUEST_KINDS
from app.services.remote_collector import RemoteCollector
from app.state import ServiceState
from app.web.health import breakers

# A corrupt entry is a tier error as far as operators are concerned.
LOOKUP_RESULTS = {
    "hit": "hit", "miss": "miss", "stale": "stale", "error": "error", "corrupt": "error",
}  # fmt: skip


# The market source's bad-data counts, {symbol: {kind: count}} (empty where it does not run).
DataQuality = Callable[[], dict[str, dict[str, int]]]


class ServiceCollector(Collector):
    def __init__(
        self, state: ServiceState, poller: BackendPoller, data_quality: DataQuality = dict
    ) -> None:
        self.state = state
        self.poller = poller
        self.data_quality = data_quality

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        yield from self._cache()
        yield from self._tiers()
        yield from self._breakers()
        yield from self._rate_limits()
        yield from self._pipeline()
        yield from self._realtime()
        yield from self._templates()
        yield from self._data_quality()

    # --- cache -------------------------------------------------------------------------

    def _cache(self) -> Iterator[CounterMetricFamily]:
        stats = self.state.runtime.cache.stats
        operations = CounterMetricFamily(
            "virtuoso_cache_operations",
            "Lookups in each cache tier by family and result",
            labels=("tier", "family", "result"),
        )
        merged: Counter[tuple[str, str, str]] = Counter()
        for (tier, family, result), count in stats.lookups.items():
            merged[(tier, family, LOOKUP_RESULTS.get(result, "error"))] += count
        for labels, count in sorted(merged.items()):
            operations.add_metric(labels, count)
        yield operations
        # Every known family is reported, zero until it happens: a rate over a series
        # that does not exist yet would be "no data" rather than 0.
        families = self.state.runtime.cache.policy.families
        requests = CounterMetricFamily(
            "virtuoso_cache_requests",
            "What callers got: hit (fresh, any tier), stale, miss (computed), error",
            labels=("family", "outcome"),
        )
        for family in families:
            for outcome in SERVED_OUTCOMES:
                requests.add_metric((family, outcome), stats.served[(family, outcome)])
        yield requests
        for name, counts, text in (
            ("singleflight_waits", stats.singleflight_waits, "Waits for another's computation"),
            ("invalidations", stats.invalidations, "Invalidations by family"),
            ("computations", stats.computations, "Values computed by family"),
        ):
            metric = CounterMetricFamily(f"virtuoso_cache_{name}", text, labels=("family",))
            for family in families:
                metric.add_metric((family,), counts[family])
            yield metric

    def _tiers(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        l1 = self.state.runtime.cache.l1
        items = GaugeMetricFamily("virtuoso_cache_items", "Items held", labels=("tier",))
        used = GaugeMetricFamily(
            "virtuoso_cache_memory_used_bytes", "Memory used", labels=("tier",)
        )
        limit = GaugeMetricFamily(
            "virtuoso_cache_memory_limit_bytes", "Memory limit", labels=("tier",)
        )
        evictions = CounterMetricFamily(
            "virtuoso_cache_evictions", "Entries evicted for room", labels=("tier",)
        )
        items.add_metric(("l1",), len(l1))
        used.add_metric(("l1",), l1.bytes)
        limit.add_metric(("l1",), l1.max_bytes)
        evictions.add_metric(("l1",), l1.evictions)
        for tier, numbers in sorted(self.poller.tiers.items()):
            items.add_metric((tier,), numbers.items)
            used.add_metric((tier,), numbers.used_bytes)
            if numbers.limit_bytes is not None:
                limit.add_metric((tier,), numbers.limit_bytes)
            evictions.add_metric((tier,), numbers.evictions)
        yield from (items, used, limit, evictions)

    # --- resilience --------------------------------------------------------------------

    def _breakers(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        state = GaugeMetricFamily(
            "virtuoso_breaker_state", "0 closed, 1 open, 2 half-open", labels=("breaker",)
        )
        transitions = CounterMetricFamily(
            "virtuoso_breaker_transitions",
            "Circuit breaker transitions by the state entered",
            labels=("breaker", "state"),
        )
        for name, snapshot in sorted(breakers(self.state).items()):
            state.add_metric((name,), STATE_CODES[snapshot["state"]])
            entered: Counter[str] = Counter()
            for change, count in snapshot["transitions"].items():
                entered[change.split("->")[1]] += count
            for new_state in STATE_CODES:
                transitions.add_metric((name, new_state), entered[new_state])
        yield from (state, transitions)

    def _rate_limits(self) -> Iterator[CounterMetricFamily]:
        rejections = CounterMetricFamily(
            "virtuoso_rate_limit_rejections",
            "Requests answered 429 (and WebSocket connections refused) by route family",
            labels=("family",),
        )
        limiter = self.state.rate_limiter
        if limiter is not None:
            for family, count in sorted(limiter.limited_by_family.items()):
                rejections.add_metric((family,), count)
            rejections.add_metric(("ws",), limiter.connections.rejected)
        yield rejections

    # --- pipeline and realtime ---------------------------------------------------------

    def _pipeline(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        # Before any snapshot, the time since start: a replica that never gets one
        # must still trip the staleness alert.
        generated = self.poller.snapshot_generated_ms() or int(self.state.started_at * 1000)
        yield GaugeMetricFamily(
            "virtuoso_snapshot_age_seconds",
            "Age of the newest market snapshot this replica can serve (since start if none)",
            value=max(0.0, (self.state.now_ms() - generated) / 1000),
        )
        yield GaugeMetricFamily(
            "virtuoso_refresh_interval_seconds",
            "Configured refresh interval",
            value=self.state.settings.refresh_seconds,
        )
        status = self.state.collector.status
        yield CounterMetricFamily(
            "virtuoso_views_built", "Views built from snapshots", value=status.views_built
        )
        refreshes = CounterMetricFamily(
            "virtuoso_pipeline_refreshes",
            "Refreshes by outcome (skipped: another replica refreshed)",
            labels=("outcome",),
        )
        for outcome, count in sorted(status.refreshes.items()):
            refreshes.add_metric((outcome,), count)
        yield refreshes
        yield from stream_families(status.streams)

    def _realtime(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        broadcaster = self.state.broadcaster
        if broadcaster is None:
            return
        stats = broadcaster.stats
        yield GaugeMetricFamily(
            "virtuoso_ws_connections", "Open WebSocket connections", value=stats.connections
        )
        messages = CounterMetricFamily(
            "virtuoso_ws_messages",
            "Messages to WebSocket clients: sent, coalesced (replaced by a newer one), "
            "dropped (lost at close)",
            labels=("channel", "result"),
        )
        for result, counts in (
            ("sent", stats.sent),
            ("coalesced", stats.coalesced),
            ("dropped", stats.dropped),
        ):
            for channel in CHANNELS:
                messages.add_metric((channel, result), counts[channel])
        yield messages
        disconnects = CounterMetricFamily(
            "virtuoso_ws_disconnects", "WebSocket connections closed, by reason", labels=("reason",)
        )
        for reason, count in sorted(stats.disconnects.items()):
            disconnects.add_metric((reason,), count)
        yield disconnects

    def _templates(self) -> Iterator[CounterMetricFamily]:
        yield template_failures_family(self.state.alerts.engine.template_failures)

    def _data_quality(self) -> Iterator[CounterMetricFamily]:
        yield data_quality_family(self.data_quality())  # the source's counts, where it runs


def template_failures_family(failures: int) -> CounterMetricFamily:
    """Alert message templates that failed to render on real values (the alert went out
    with its default message), counted where the rules are evaluated."""
    return CounterMetricFamily(
        "virtuoso_alert_template_failures",
        "Alert message templates that failed to render (the default message was sent)",
        value=failures,
    )


def data_quality_family(counts: dict[str, dict[str, int]]) -> CounterMetricFamily:
    """Bad exchange data cleaned at the source, by symbol (configured: bounded) and kind
    (a fixed set: candles_filled, duplicate_candles, ticker_missing, …), from the source's
    ``{symbol: {kind: count}}``."""
    family = CounterMetricFamily(
        "virtuoso_exchange_data_quality",
        "Exchange data that had to be cleaned or was missing, by symbol and kind",
        labels=("symbol", "kind"),
    )
    for symbol, kinds in sorted(counts.items()):
        for kind, count in sorted(kinds.items()):
            family.add_metric((symbol, kind), count)
    return family


def stream_families(
    streams: dict[str, Any] | None,
) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The exchange streams' state from ``CollectorStatus.streams`` (nothing when the
    source only polls): ``virtuoso_stream_live`` (1 streaming, 0 fallen back to REST),
    ``virtuoso_stream_fallbacks_total`` and ``virtuoso_market_reads_total{by}`` (what
    answered the collector's reads: the feed or REST — REST in steady state is the
    fallback's price)."""
    if not streams:
        return
    yield GaugeMetricFamily(
        "virtuoso_stream_live",
        "1 while the exchange streams are live, 0 while REST polling stands in",
        value=1 if streams.get("mode") == "streaming" else 0,
    )
    yield CounterMetricFamily(
        "virtuoso_stream_fallbacks",
        "Times the exchange streams stopped being live (REST polling took over)",
        value=int(streams.get("fallbacks", 0)),
    )
    reads = CounterMetricFamily(
        "virtuoso_market_reads",
        "Market data reads by what answered them: the stream feed or REST",
        labels=("by",),
    )
    for by, count in sorted((streams.get("answered") or {}).items()):
        reads.add_metric((str(by),), int(count))
    yield reads
    yield from _stream_events(streams.get("feed") or {})


STREAM_EVENTS = (
    "errors",
    "reconnects",
    "resubscribes",
    "resets",
    "splits",
    "gaps",
    "crossed",
    "resnapshots",
)
"""The counters of an exchange feed's readers (``ExchangeStreams.status``) exported per
kind of stream as ``virtuoso_stream_events_total{kind,event}``."""


def _stream_events(feed: dict[str, Any]) -> Iterator[CounterMetricFamily | GaugeMetricFamily]:
    """``virtuoso_stream_events_total{kind,event}`` and
    ``virtuoso_stream_silent_symbols{kind}`` from an exchange feed's status (the
    simulated feed has no readers: no samples)."""
    events = CounterMetricFamily(
        "virtuoso_stream_events",
        "Exchange stream incidents by kind of stream: failed watches (errors), batches "
        "delivering again (reconnects), stalled batches subscribed again (resubscribes), "
        "connections reset for an unanswered unsubscribe (resets), batches split to isolate "
        "a refused topic (splits), order-book or candle gaps, crossed order books, and "
        "order books subscribed again for a fresh snapshot (resnapshots)",
        labels=("kind", "event"),
    )
    silent = GaugeMetricFamily(
        "virtuoso_stream_silent_symbols",
        "Symbols a kind of stream has no current data for (quiet, refused or forgotten "
        "topics): REST answers for them while the others stream",
        labels=("kind",),
    )
    for kind, counters in sorted(feed.items()):
        if not isinstance(counters, dict) or "live" not in counters:
            continue
        for event in STREAM_EVENTS:
            if event in counters:
                events.add_metric((kind, event), int(counters[event]))
        silent.add_metric((kind,), len(counters.get("silent") or ()))
    yield events
    yield silent


REQUEST_OUTCOMES = ("ok", "refused", "timeout", "unavailable")


class CollectorLinkMetrics(Collector):
    """A server's view of its collector at scrape time: the requests it sent it by kind
    and outcome, and how old the collector's last status report is (since ``since()``,
    the server's start, while none came — a server that never hears one still trips the
    alert). ``clock``: epoch seconds."""

    def __init__(
        self, remote: RemoteCollector, clock: Callable[[], float], since: Callable[[], float]
    ) -> None:
        self.remote = remote
        self.clock = clock
        self.since = since

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        requests = CounterMetricFamily(
            "virtuoso_collector_requests",
            "Requests this server sent its collector (cold reads, refresh, republish), by "
            "outcome: ok, refused (answered with an error), timeout, unavailable (none to "
            "send to)",
            labels=("kind", "outcome"),
        )
        counts = self.remote.requests
        for kind in REQUEST_KINDS:
            for outcome in REQUEST_OUTCOMES:
                requests.add_metric((kind, outcome), counts[(kind, outcome)])
        yield requests
        report = self.remote.report
        heard = self.since() if report is None else report.heartbeat_ms / 1000
        yield GaugeMetricFamily(
            "virtuoso_collector_report_age_seconds",
            "Age of the collector's last status report (since this server's start if none)",
            value=max(0.0, self.clock() - heard),
        )
