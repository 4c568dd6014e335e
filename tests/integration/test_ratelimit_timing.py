"""The wait in ccxt's client-side rate limiter is measured apart from the exchange's time.

Real ccxt (rate limiter on) against the loopback FakeBybit with an injected latency:
many concurrent candle and order-book calls queue in ccxt's token bucket (bybit's
market endpoints cost 5 × 20 ms). The wait histogram takes the queue; the exchange
latency histogram stays at the fake's latency. The assertions are relations that a
busy machine cannot break: the bucket only ever makes calls wait longer, and no request
can answer faster than the injected latency.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from app.main.collector_telemetry import ExchangeMetrics
from app.market.errors import ExchangeUnavailable
from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.ccxt_timing import current_waits, instrument_throttle, measure_waits
from app.market.sources.guarded import GuardedSource, RetryPolicy
from app.observability import tracing
from app.observability.metrics import Metrics
from app.observability.tracing import RATELIMIT_WAIT_SPAN
from app.resilience.breaker import BreakerConfig
from tools.fake_bybit import KLINE_PATH, ORDERBOOK_PATH, FakeBybit

INJECTED_LATENCY = 0.02  # seconds the fake takes per kline / order-book request
BYBIT_MARKET_SPACING = 0.1  # ccxt: rateLimit 20 ms × cost 5 for bybit's v5 market endpoints
CANDLE_CALLS = 8
BOOK_CALLS = 4
WAIT = "virtuoso_exchange_ratelimit_wait_seconds"
REQUEST = "virtuoso_exchange_request_duration_seconds"


@dataclass
class Recorded:
    """A GuardedSource call observer: request seconds and wait seconds per family."""

    requests: dict[str, list[float | None]] = field(default_factory=dict)
    waits: dict[str, list[float]] = field(default_factory=dict)

    def call(self, family: str, _outcome: str, seconds: float | None) -> None:
        self.requests.setdefault(family, []).append(seconds)

    def ratelimit_wait(self, family: str, seconds: float) -> None:
        self.waits.setdefault(family, []).append(seconds)


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.use(provider)
    yield exporter
    tracing.use(None)
    provider.shutdown()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def recorded() -> Recorded:
    return Recorded()


@pytest.fixture
async def guarded(metrics, recorded) -> AsyncIterator[tuple[GuardedSource, FakeBybit]]:
    """A GuardedSource around ccxt (rate limiter on, as in production) on the fake,
    observed by the service's exchange metrics and by ``recorded``."""
    async with FakeBybit() as fake:
        source = GuardedSource(
            CcxtMarketSource("bybit", base_url=fake.base_url, timeout_ms=30_000),
            timeout_seconds=60.0,
            observers=[ExchangeMetrics(metrics, "bybit"), recorded],
        )
        assert source.source.exchange.enableRateLimit
        await source.start()
        yield source, fake
        await source.close()


async def queued_calls(source: GuardedSource, fake: FakeBybit) -> None:
    """Many concurrent candle and order-book calls at once: the bucket queues them."""
    fake.latency(INJECTED_LATENCY, KLINE_PATH)
    fake.latency(INJECTED_LATENCY, ORDERBOOK_PATH)
    symbol = fake.symbols[0]
    calls: list[Awaitable[Candles | OrderBook]] = [
        source.fetch_candles(symbol, "1m", 50) for _ in range(CANDLE_CALLS)
    ]
    calls += [source.fetch_order_book(symbol, 25) for _ in range(BOOK_CALLS)]
    async with asyncio.timeout(60):
        await asyncio.gather(*calls)


def observed(metrics: Metrics, name: str, suffix: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name + suffix, labels) or 0.0


async def test_queue_in_the_rate_limiter_is_not_exchange_latency(
    guarded, metrics: Metrics, recorded: Recorded
) -> None:
    source, fake = guarded
    await queued_calls(source, fake)

    requests = recorded.requests["ohlcv"] + recorded.requests["order_book"]
    waits = recorded.waits["ohlcv"] + recorded.waits["order_book"]
    assert len(requests) == len(waits) == CANDLE_CALLS + BOOK_CALLS
    # No request answers before the fake's latency: the request times are the requests.
    assert min(requests) >= INJECTED_LATENCY
    # The bucket lets one such call through per 100 ms: the last of 12 waited about
    # 1.1 s (asserted with a margin for calls that reach the bucket late on a busy
    # machine), all of them together about 6.6 s — far more than the requests took.
    assert max(waits) >= (len(waits) - 4) * BYBIT_MARKET_SPACING
    assert sum(waits) > sum(requests)

    for endpoint, count in (("ohlcv", CANDLE_CALLS), ("order_book", BOOK_CALLS)):
        labels = {"exchange": "bybit", "endpoint": endpoint}
        assert observed(metrics, WAIT, "_count", **labels) == count
        assert observed(metrics, REQUEST, "_count", **labels) == count
        # Bucket placement: no request below the injected latency (le=0.01 is empty)…
        assert observed(metrics, REQUEST, "_bucket", **labels, le="0.01") == 0
    ohlcv = {"exchange": "bybit", "endpoint": "ohlcv"}
    assert observed(metrics, WAIT, "_sum", **ohlcv) > observed(metrics, REQUEST, "_sum", **ohlcv)
    # …and the long waits are waits: the candle calls hold at least 8 of the 12 places
    # in the queue, so about 5 of them wait over 0.25 s (3 asserted, for the same
    # margin) — more than the requests that took that long.
    long_waits = observed(metrics, WAIT, "_count", **ohlcv) - observed(
        metrics, WAIT, "_bucket", **ohlcv, le="0.25"
    )
    long_requests = observed(metrics, REQUEST, "_count", **ohlcv) - observed(
        metrics, REQUEST, "_bucket", **ohlcv, le="0.25"
    )
    assert long_waits >= 3
    assert long_waits > long_requests


async def test_the_wait_is_a_child_span_of_the_exchange_call(
    guarded, spans: InMemorySpanExporter
) -> None:
    source, fake = guarded
    spans.clear()
    await queued_calls(source, fake)

    finished = spans.get_finished_spans()
    calls = {
        span.context.span_id: span
        for span in finished
        if span.name in ("exchange ohlcv", "exchange order_book")
    }
    assert len(calls) == CANDLE_CALLS + BOOK_CALLS
    waits = [span for span in finished if span.name == RATELIMIT_WAIT_SPAN]
    assert len(waits) == len(calls)  # one request, one wait each
    assert {wait.parent.span_id for wait in waits if wait.parent} == set(calls)
    for wait in waits:
        assert wait.attributes["exchange.name"] == "bybit"
        assert wait.attributes["ratelimit.cost"] == 5
    longest = max(
        calls.values(), key=lambda span: span.attributes["exchange.ratelimit_wait_seconds"]
    )
    assert longest.attributes["exchange.ratelimit_wait_seconds"] >= 0.5
    assert (
        longest.attributes["exchange.ratelimit_wait_seconds"]
        > longest.attributes["exchange.request_seconds"]
        >= INJECTED_LATENCY
    )
    assert seconds(child_of(longest, waits)) >= 0.5


def child_of(parent: ReadableSpan, spans: list[ReadableSpan]) -> ReadableSpan:
    (child,) = [s for s in spans if s.parent and s.parent.span_id == parent.context.span_id]
    return child


def seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


# ----- the measurement itself, on a stand-in for ccxt's throttle -----------------------------


class Throttled:
    """Stands in for a ccxt instance: ``throttle(cost)`` sleeps ``cost`` seconds."""

    id = "stand-in"

    async def throttle(self, cost: float | None = None) -> None:
        await asyncio.sleep(cost or 0)


async def test_concurrent_calls_each_see_their_own_waits() -> None:
    exchange = Throttled()
    instrument_throttle(exchange)
    instrument_throttle(exchange)  # idempotent: one wrapper, waits counted once

    async def call(cost: float) -> tuple[float, int]:
        with measure_waits() as waits:
            await exchange.throttle(cost)
            await exchange.throttle(cost)
        return waits.seconds, waits.count

    (short, short_count), (long, long_count) = await asyncio.gather(call(0.01), call(0.2))
    assert short_count == long_count == 2
    assert short < long
    assert long >= 0.4
    assert current_waits() is None
    await exchange.throttle(0)  # outside any measurement: nothing to add to


async def test_nested_measurements_add_up() -> None:
    exchange = Throttled()
    instrument_throttle(exchange)
    with measure_waits() as outer:
        await exchange.throttle(0.05)
        with measure_waits() as inner:
            await exchange.throttle(0.05)
    assert inner.count == 1 and outer.count == 2
    assert outer.seconds >= inner.seconds + 0.05


class QueuedSource:
    """A MarketSource whose every call waits ``wait`` seconds in a (stand-in) rate limiter
    and then takes ``request`` seconds."""

    name = "stand-in"

    def __init__(self, wait: float, request: float) -> None:
        self.exchange = Throttled()
        instrument_throttle(self.exchange)
        self.wait, self.request = wait, request

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        await self.exchange.throttle(self.wait)
        await asyncio.sleep(self.request)
        return Candles.from_rows(symbol, timeframe, [])

    async def fetch_tickers(self, symbols: list[str]) -> dict[str, Ticker]:
        raise NotImplementedError


async def test_a_timeout_in_the_queue_is_a_wait_not_a_slow_request() -> None:
    source = GuardedSource(
        QueuedSource(wait=5.0, request=0.0),  # type: ignore[arg-type]
        timeout_seconds=0.2,
        retry=RetryPolicy(max_retries=0),
        observers=[recorded := Recorded()],
    )
    with pytest.raises(ExchangeUnavailable, match="timed out"):
        await source.fetch_candles("BTCUSDT", "1m", 10)
    (wait,) = recorded.waits["ohlcv"]
    (request,) = recorded.requests["ohlcv"]
    # The whole time-out was spent queuing: recorded as the wait (measured from inside
    # the limiter, which the call reaches a moment after the time-out's clock started).
    assert wait >= 0.2 * 0.75
    assert request < wait


async def test_request_time_excludes_the_wait() -> None:
    recorded = Recorded()
    source = GuardedSource(QueuedSource(wait=0.3, request=0.05), observers=[recorded])  # type: ignore[arg-type]
    await source.fetch_candles("BTCUSDT", "1m", 10)
    (wait,) = recorded.waits["ohlcv"]
    (request,) = recorded.requests["ohlcv"]
    assert wait >= 0.3
    assert 0.05 <= request < wait


async def test_a_queue_in_the_rate_limiter_does_not_make_the_breaker_see_slow_calls() -> None:
    """The breaker counts the request's time only: waits of 0.6 s in our own queue with
    a slow-call threshold of 0.5 s leave it closed with no slow call."""
    config = BreakerConfig(slow_call_seconds=0.5, minimum_calls=3, slow_call_rate=0.5)
    source = GuardedSource(QueuedSource(wait=0.6, request=0.01), breaker_config=config)  # type: ignore[arg-type]
    for _ in range(4):
        await source.fetch_candles("BTCUSDT", "1m", 10)
    breaker = source.breakers()["ohlcv"]
    assert breaker.state == "closed" and breaker.snapshot()["slow_calls_in_window"] == 0
    slow = GuardedSource(QueuedSource(wait=0.0, request=0.6), breaker_config=config)  # type: ignore[arg-type]
    for _ in range(3):
        await slow.fetch_candles("BTCUSDT", "1m", 10)
    assert slow.breakers()["ohlcv"].state == "open"  # a slow exchange still trips it
