"""GuardedSource (timeouts, per-family breakers, retries, Retry-After) around the REAL
ccxt source talking to the loopback FakeBybit. The breakers run on a manual clock where
timing matters; timeouts and latencies are small real ones."""

from __future__ import annotations

import asyncio
import json
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aiohttp
import pytest

from app.market.errors import (
    ExchangeRateLimited,
    ExchangeRejected,
    ExchangeUnavailable,
    SymbolNotListed,
)
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.guarded import (
    EXCHANGE_BREAKER_CONFIG,
    FAMILIES,
    CircuitOpen,
    GuardedSource,
    RetryPolicy,
    exchange_is_failure,
)
from app.resilience.breaker import CLOSED, HALF_OPEN, OPEN, BreakerConfig, CircuitBreaker
from tests.conftest import ManualClock, eventually
from tests.support.streams import close_without_tls_linger, loopback_source
from tools.fake_bybit import (
    INSTRUMENTS_PATH,
    KLINE_PATH,
    ORDERBOOK_PATH,
    TICKERS_PATH,
    TIME_PATH,
    FakeBybit,
)

T = TypeVar("T")

FROZEN_NOW_MS = 1_700_000_123_456
BOUND_S = 10.0

# Trips on the failure rate only (not on a run of failures), never on slowness.
RATE_ONLY = BreakerConfig(
    minimum_calls=5,
    failure_rate=0.5,
    consecutive_failures=1_000,
    slow_call_seconds=math.inf,
    open_seconds=2.0,
    max_open_seconds=60.0,
)
NEVER_TRIPS = BreakerConfig(
    minimum_calls=1_000, failure_rate=1.0, consecutive_failures=1_000, slow_call_seconds=math.inf
)
NO_RETRY = RetryPolicy(max_retries=0)


async def within(awaitable: Awaitable[T], seconds: float = BOUND_S) -> T:
    """Every await on the network is bounded, so a hang fails instead of stalling."""
    return await asyncio.wait_for(awaitable, seconds)


class Sleeps:
    """An injected sleep that records the back-off delays and does not wait."""

    def __init__(self, on_sleep: Callable[[], None] | None = None) -> None:
        self.delays: list[float] = []
        self._on_sleep = on_sleep

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self._on_sleep is not None:
            self._on_sleep()
        await asyncio.sleep(0)


def make_ccxt_source(fake: FakeBybit) -> CcxtMarketSource:
    src = loopback_source(fake.base_url)
    # ccxt spaces bybit's market calls 100 ms apart; the loopback fake needs no such care
    # and the tests here send hundreds of requests.
    src.exchange.enableRateLimit = False
    return src


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(now_ms=FROZEN_NOW_MS) as server:
        yield server


@pytest.fixture
async def ccxt_source(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    src = make_ccxt_source(fake)
    await within(src.start())
    yield src
    await within(src.close())


@pytest.fixture
def sleeps() -> Sleeps:
    return Sleeps()


@pytest.fixture
def guard(
    ccxt_source: CcxtMarketSource, clock: ManualClock, sleeps: Sleeps
) -> Callable[..., GuardedSource]:
    """A factory: a GuardedSource around the started ccxt source on the manual clock."""

    def make(**options: Any) -> GuardedSource:
        options.setdefault("clock", clock)
        options.setdefault("sleep", sleeps)
        options.setdefault("rng", random.Random(42).random)
        options.setdefault("timeout_seconds", 5.0)
        return GuardedSource(ccxt_source, **options)

    return make


async def outcomes(calls: list[Awaitable[Any]]) -> list[Any]:
    return await within(asyncio.gather(*calls, return_exceptions=True))


# ----- construction and introspection ------------------------------------------------------


async def test_defaults_and_introspection(ccxt_source: CcxtMarketSource) -> None:
    guarded = GuardedSource(ccxt_source)
    assert guarded.name == "bybit"
    assert guarded.source is ccxt_source
    assert guarded.timeout_seconds == 10.0
    assert guarded.retry == RetryPolicy(max_retries=2, base_seconds=0.2, cap_seconds=2.0)
    breakers = guarded.breakers()
    assert (
        tuple(breakers)
        == FAMILIES
        == (
            "start",
            "tickers",
            "ohlcv",
            "order_book",
            "derivatives",
        )
    )
    assert all(isinstance(b, CircuitBreaker) for b in breakers.values())
    assert {f: b.name for f, b in breakers.items()} == {
        "start": "bybit:start",
        "tickers": "bybit:tickers",
        "ohlcv": "bybit:ohlcv",
        "order_book": "bybit:order_book",
        "derivatives": "bybit:derivatives",
    }
    config = breakers["tickers"].config
    assert config is EXCHANGE_BREAKER_CONFIG
    assert (config.window_seconds, config.minimum_calls, config.failure_rate) == (30.0, 5, 0.5)
    assert (config.slow_call_seconds, config.slow_call_rate) == (2.0, 0.8)
    assert config.consecutive_failures == 5
    assert (config.open_seconds, config.max_open_seconds, config.backoff_multiplier) == (
        2.0,
        60.0,
        2.0,
    )
    assert config.half_open_calls == 1

    snapshot = guarded.snapshot()
    assert set(snapshot) == set(FAMILIES)
    assert snapshot["ohlcv"]["name"] == "bybit:ohlcv"
    assert snapshot["ohlcv"]["state"] == CLOSED
    assert (snapshot["ohlcv"]["retries"], snapshot["ohlcv"]["timeouts"]) == (0, 0)
    assert snapshot["ohlcv"]["rate_limited"] == 0

    assert guarded.listed_symbols() == ccxt_source.listed_symbols()
    await within(guarded.start())  # already loaded: delegated, cheap


def test_configuration_is_validated(ccxt_source: CcxtMarketSource) -> None:
    special = BreakerConfig(minimum_calls=3)
    guarded = GuardedSource(ccxt_source, family_configs={"ohlcv": special})
    assert guarded.breakers()["ohlcv"].config is special
    assert guarded.breakers()["tickers"].config is EXCHANGE_BREAKER_CONFIG
    with pytest.raises(ValueError, match="klines"):
        GuardedSource(ccxt_source, family_configs={"klines": special})
    with pytest.raises(ValueError, match="timeout_seconds"):
        GuardedSource(ccxt_source, timeout_seconds=0)
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
    with pytest.raises(ValueError, match="cap_seconds"):
        RetryPolicy(base_seconds=1.0, cap_seconds=0.5)


def test_failure_rule() -> None:
    assert exchange_is_failure(ExchangeUnavailable("503"))
    assert exchange_is_failure(ExchangeRateLimited("429", 3.0))
    assert exchange_is_failure(KeyError("malformed answer"))
    assert not exchange_is_failure(ExchangeRejected("bad params"))
    assert not exchange_is_failure(SymbolNotListed("FOOUSDT"))
    assert not exchange_is_failure(CircuitOpen("bybit", "tickers", 1.0))


@pytest.mark.parametrize(
    ("retry", "ceiling"), [(1, 0.2), (2, 0.4), (3, 0.8), (4, 1.6), (5, 2.0), (12, 2.0)]
)
def test_full_jitter_bounds(retry: int, ceiling: float) -> None:
    policy = RetryPolicy()
    assert policy.ceiling(retry) == pytest.approx(ceiling)
    assert policy.delay(retry, lambda: 0.0) == 0.0
    assert policy.delay(retry, lambda: 0.5) == pytest.approx(ceiling / 2)
    rng = random.Random(retry)
    assert all(0 <= policy.delay(retry, rng.random) < ceiling for _ in range(200))


# ----- the breaker opens, fails fast, probes, recovers ---------------------------------------


async def test_503s_open_the_breaker_then_fail_fast_until_one_probe(
    fake: FakeBybit, guard: Callable[..., GuardedSource], clock: ManualClock
) -> None:
    guarded = guard(breaker_config=RATE_ONLY, retry=NO_RETRY)
    tickers = guarded.breakers()["tickers"]
    fake.http_error_next(503, times=None, path=TICKERS_PATH)

    for n in range(1, 5):
        with pytest.raises(ExchangeUnavailable, match="503") as caught:
            await within(guarded.fetch_tickers(["BTCUSDT"]))
        assert not isinstance(caught.value, CircuitOpen)
        assert tickers.state == CLOSED
        assert fake.count(TICKERS_PATH) == n
    with pytest.raises(ExchangeUnavailable, match="503"):
        await within(guarded.fetch_tickers(["BTCUSDT"]))  # the minimum_calls-th failure
    assert tickers.state == OPEN
    assert fake.count(TICKERS_PATH) == 5

    # Open: fail fast, the exchange sees nothing.
    for _ in range(10):
        with pytest.raises(CircuitOpen) as caught:
            await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert str(caught.value) == "bybit tickers circuit open; retry in 2 s"
    assert caught.value.retry_after_seconds == pytest.approx(2.0)
    assert isinstance(caught.value, ExchangeUnavailable)
    clock.advance(1.9)
    with pytest.raises(CircuitOpen):
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert fake.count(TICKERS_PATH) == 5
    assert tickers.rejected == 11
    # Other families are independent.
    assert guarded.breakers()["ohlcv"].state == CLOSED
    assert len(await within(guarded.fetch_candles("BTCUSDT", "1h", 3))) == 3

    # The wait is over: of five concurrent calls exactly one probe reaches the exchange.
    clock.advance(0.2)
    assert tickers.state == HALF_OPEN
    results = await outcomes([guarded.fetch_tickers(["BTCUSDT"]) for _ in range(5)])
    assert fake.count(TICKERS_PATH) == 6
    assert sum(isinstance(r, CircuitOpen) for r in results) == 4
    assert sum(type(r) is ExchangeUnavailable for r in results) == 1
    # The probe failed: open again, for twice as long.
    assert tickers.state == OPEN
    assert tickers.retry_after() == pytest.approx(4.0)

    # The exchange is healthy again: the next probe closes the breaker, data flows.
    fake.clear_faults()
    clock.advance(3.9)
    with pytest.raises(CircuitOpen):
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert fake.count(TICKERS_PATH) == 6
    clock.advance(0.1)
    tickers_now = await within(guarded.fetch_tickers(["BTCUSDT", "ETHUSDT"]))
    assert set(tickers_now) == {"BTCUSDT", "ETHUSDT"}
    assert tickers.state == CLOSED
    assert fake.count(TICKERS_PATH) == 7
    for _ in range(3):
        assert "BTCUSDT" in await within(guarded.fetch_tickers(["BTCUSDT"]))
    snapshot = guarded.snapshot()["tickers"]
    assert snapshot["transitions"] == {
        "closed->open": 1,
        "half_open->closed": 1,
        "half_open->open": 1,
        "open->half_open": 2,
    }
    assert snapshot["rejected"] == 16


async def test_slow_calls_open_the_breaker_although_they_succeed(
    fake: FakeBybit, guard: Callable[..., GuardedSource]
) -> None:
    config = BreakerConfig(
        minimum_calls=5,
        slow_call_seconds=0.05,
        slow_call_rate=0.8,
        consecutive_failures=1_000,
        open_seconds=30.0,
        max_open_seconds=60.0,
    )
    guarded = guard(breaker_config=config, retry=NO_RETRY, clock=time.monotonic)
    fake.latency(0.1, path=TICKERS_PATH)
    for _ in range(5):
        result = await within(guarded.fetch_tickers(["BTCUSDT"]))
        assert set(result) == {"BTCUSDT"}
    snapshot = guarded.snapshot()["tickers"]
    assert snapshot["state"] == OPEN
    assert snapshot["transitions"] == {"closed->open": 1}
    with pytest.raises(CircuitOpen):
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert fake.count(TICKERS_PATH) == 5
    # A fast family is unaffected.
    assert guarded.breakers()["order_book"].state == CLOSED


async def test_a_hang_times_out_as_unavailable_within_the_bound(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    guarded = guard(timeout_seconds=0.3, retry=RetryPolicy(max_retries=1))
    fake.hang(path=TICKERS_PATH)
    started = time.monotonic()
    with pytest.raises(ExchangeUnavailable, match=r"bybit fetch_tickers timed out after 0\.3 s"):
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    # two attempts of 0.3 s each (the back-off sleep is injected), both still held by the
    # fake when they ended: only the timeout ended them
    assert time.monotonic() - started >= 2 * 0.3 - 0.01
    assert fake.count(TICKERS_PATH) == 2
    assert fake.hanging == 2
    assert len(sleeps.delays) == 1
    snapshot = guarded.snapshot()["tickers"]
    assert (snapshot["timeouts"], snapshot["retries"]) == (2, 1)
    assert snapshot["failures_in_window"] == 2
    # Other endpoints still answer; releasing the hang lets tickers through again.
    assert len((await within(guarded.fetch_order_book("BTCUSDT", 5))).bids) == 5
    fake.clear_faults()
    assert "BTCUSDT" in await within(guarded.fetch_tickers(["BTCUSDT"]))


async def test_start_is_guarded_with_a_timeout_too(
    fake: FakeBybit, clock: ManualClock, sleeps: Sleeps
) -> None:
    src = make_ccxt_source(fake)
    guarded = GuardedSource(src, timeout_seconds=0.2, retry=NO_RETRY, clock=clock, sleep=sleeps)
    try:
        fake.hang(path=INSTRUMENTS_PATH)
        with pytest.raises(ExchangeUnavailable, match=r"load_markets timed out after 0\.2 s"):
            await within(guarded.start())
        assert guarded.snapshot()["start"]["failures_in_window"] == 1
        fake.clear_faults()
        await within(guarded.start())
        assert guarded.listed_symbols() == frozenset(fake.symbols)
    finally:
        await within(guarded.close())
    with pytest.raises(ExchangeRejected, match="closed"):  # close was delegated
        await within(src.fetch_tickers(["BTCUSDT"]))


# ----- rate limits ------------------------------------------------------------------------------


@pytest.mark.parametrize(("status", "body"), [(429, "bybit"), (418, "cloudfront")])
async def test_retry_after_holds_the_breakers_open_and_nothing_is_retried(
    fake: FakeBybit,
    guard: Callable[..., GuardedSource],
    clock: ManualClock,
    sleeps: Sleeps,
    status: int,
    body: str,
) -> None:
    guarded = guard(retry=RetryPolicy(max_retries=2))
    fake.rate_limit_next(retry_after=3, status=status, body=body, path=TICKERS_PATH)
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert caught.value.retry_after_seconds == 3.0
    assert fake.count(TICKERS_PATH) == 1
    assert sleeps.delays == []  # Retry-After is honoured, not retried over

    snapshot = guarded.snapshot()
    assert snapshot["tickers"]["state"] == OPEN
    assert snapshot["tickers"]["retry_after_seconds"] >= 3.0  # longer than open_seconds=2
    assert snapshot["tickers"]["rate_limited"] == 1
    assert snapshot["tickers"]["retries"] == 0
    # The ban is per client: the other families wait as long.
    for family in ("start", "ohlcv", "order_book"):
        assert snapshot[family]["state"] == OPEN
        assert snapshot[family]["retry_after_seconds"] == pytest.approx(3.0)

    before = len(fake.requests)
    clock.advance(2.5)  # past open_seconds, still inside Retry-After
    for call in (
        guarded.fetch_tickers(["BTCUSDT"]),
        guarded.fetch_candles("BTCUSDT", "1h", 5),
        guarded.fetch_order_book("BTCUSDT", 5),
    ):
        with pytest.raises(CircuitOpen) as refused:
            await within(call)
        assert refused.value.retry_after_seconds == pytest.approx(0.5)
    assert len(fake.requests) == before
    assert sleeps.delays == []

    clock.advance(0.5)
    assert "BTCUSDT" in await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert len(await within(guarded.fetch_candles("BTCUSDT", "1h", 5))) == 5
    assert len((await within(guarded.fetch_order_book("BTCUSDT", 5))).asks) == 5
    states = {family: breaker.state for family, breaker in guarded.breakers().items()}
    assert states == {
        "start": HALF_OPEN,
        "tickers": CLOSED,
        "ohlcv": CLOSED,
        "order_book": CLOSED,
        "derivatives": HALF_OPEN,  # held open as well; not called since
    }
    assert fake.count(TICKERS_PATH) == 2


async def test_rate_limit_without_retry_after_trips_only_its_family(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    guarded = guard()
    fake.fail_next(10006, "Too many visits!", path=KLINE_PATH)  # HTTP 200, Bybit envelope
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(guarded.fetch_candles("BTCUSDT", "1h", 5))
    assert caught.value.retry_after_seconds is None
    assert fake.count(KLINE_PATH) == 1
    assert sleeps.delays == []
    snapshot = guarded.snapshot()
    assert snapshot["ohlcv"]["state"] == OPEN
    assert snapshot["ohlcv"]["retry_after_seconds"] == pytest.approx(2.0)  # open_seconds
    assert snapshot["tickers"]["state"] == CLOSED


# ----- what does not count ---------------------------------------------------------------------


async def test_unknown_symbols_never_open_the_breaker(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    guarded = guard(breaker_config=RATE_ONLY)
    fake.delist("XRPUSDT")  # still in the loaded markets: the exchange answers 10001
    for _ in range(10):
        with pytest.raises(SymbolNotListed):
            await within(guarded.fetch_candles("FOOUSDT", "1h", 5))  # refused locally
        with pytest.raises(SymbolNotListed, match="Not supported symbols"):
            await within(guarded.fetch_candles("XRPUSDT", "1h", 5))  # refused by the exchange
    assert fake.count(KLINE_PATH) == 10  # never retried
    assert sleeps.delays == []
    snapshot = guarded.snapshot()["ohlcv"]
    assert snapshot["state"] == CLOSED
    assert snapshot["failures_in_window"] == 0
    assert snapshot["calls_in_window"] == 20
    with pytest.raises(ExchangeRejected, match="timeframe"):
        await within(guarded.fetch_candles("BTCUSDT", "7m", 5))
    assert guarded.breakers()["ohlcv"].state == CLOSED


# ----- retries ------------------------------------------------------------------------------------


async def test_one_503_then_success_is_one_retry(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    draws = random.Random(7)
    expected = random.Random(7).random() * 0.2
    guarded = guard(rng=draws.random)
    fake.http_error_next(503, times=1, path=TICKERS_PATH)
    result = await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert set(result) == {"BTCUSDT"}
    assert fake.count(TICKERS_PATH) == 2
    assert sleeps.delays == [pytest.approx(expected)]
    assert 0 <= sleeps.delays[0] < 0.2
    snapshot = guarded.snapshot()["tickers"]
    assert snapshot["retries"] == 1
    assert (snapshot["calls_in_window"], snapshot["failures_in_window"]) == (2, 1)


async def test_retries_are_bounded_and_jittered_exponentially(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    guarded = guard(breaker_config=NEVER_TRIPS, retry=RetryPolicy(max_retries=2))
    fake.http_error_next(502, times=None, path=ORDERBOOK_PATH)
    for _ in range(20):
        with pytest.raises(ExchangeUnavailable, match="502"):
            await within(guarded.fetch_order_book("BTCUSDT", 5))
    assert fake.count(ORDERBOOK_PATH) == 60  # 1 + 2 retries each
    first, second = sleeps.delays[0::2], sleeps.delays[1::2]
    assert len(first) == len(second) == 20
    assert all(0 <= d < 0.2 for d in first)
    assert all(0 <= d < 0.4 for d in second)
    assert max(second) > 0.2  # the ceiling doubled (deterministic: seeded rng)
    assert len(set(sleeps.delays)) == 40  # jittered, not fixed


async def test_retries_stop_when_the_breaker_opens(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    config = BreakerConfig(consecutive_failures=2, slow_call_seconds=math.inf)
    guarded = guard(breaker_config=config, retry=RetryPolicy(max_retries=5))
    fake.http_error_next(503, times=None, path=TICKERS_PATH)
    with pytest.raises(ExchangeUnavailable, match="503") as caught:
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert not isinstance(caught.value, CircuitOpen)  # the real error, not the refusal
    assert fake.count(TICKERS_PATH) == 2  # the second failure opened it: no third try
    assert len(sleeps.delays) == 1  # and no sleep before a retry that would be refused
    assert guarded.breakers()["tickers"].state == OPEN
    with pytest.raises(CircuitOpen):
        await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert fake.count(TICKERS_PATH) == 2


async def test_a_retry_asks_the_breaker_after_its_back_off(
    fake: FakeBybit, ccxt_source: CcxtMarketSource, clock: ManualClock
) -> None:
    holder: list[GuardedSource] = []
    # Another caller trips the breaker while this one sleeps before its retry.
    sleeps = Sleeps(on_sleep=lambda: holder[0].breakers()["ohlcv"].trip())
    guarded = GuardedSource(ccxt_source, clock=clock, sleep=sleeps, rng=lambda: 0.5)
    holder.append(guarded)
    fake.http_error_next(504, times=None, path=KLINE_PATH)
    with pytest.raises(ExchangeUnavailable, match="504") as caught:
        await within(guarded.fetch_candles("BTCUSDT", "1h", 5))
    assert not isinstance(caught.value, CircuitOpen)
    assert isinstance(caught.value.__cause__, Exception)  # the ccxt error, untouched
    assert sleeps.delays == [0.1]
    assert fake.count(KLINE_PATH) == 1


async def test_an_inner_circuit_open_is_neither_counted_nor_retried(
    fake: FakeBybit, ccxt_source: CcxtMarketSource, clock: ManualClock, sleeps: Sleeps
) -> None:
    inner = GuardedSource(ccxt_source, clock=clock, sleep=sleeps)
    outer = GuardedSource(inner, clock=clock, sleep=sleeps)
    assert outer.name == "bybit"
    inner.breakers()["tickers"].trip()
    for _ in range(10):
        with pytest.raises(CircuitOpen, match="bybit tickers circuit open"):
            await within(outer.fetch_tickers(["BTCUSDT"]))
    assert sleeps.delays == []
    assert fake.count(TICKERS_PATH) == 0
    snapshot = outer.snapshot()["tickers"]
    assert (snapshot["state"], snapshot["failures_in_window"]) == (CLOSED, 0)


async def test_a_cancelled_call_counts_for_nothing(
    fake: FakeBybit, guard: Callable[..., GuardedSource], clock: ManualClock
) -> None:
    guarded = guard(breaker_config=RATE_ONLY)
    tickers = guarded.breakers()["tickers"]
    tickers.trip()
    clock.advance(2.0)
    assert tickers.state == HALF_OPEN
    fake.hang(path=TICKERS_PATH)
    probe = asyncio.create_task(guarded.fetch_tickers(["BTCUSDT"]))
    await eventually(lambda: fake.hanging == 1)
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await within(probe)
    assert tickers.state == HALF_OPEN  # the probe permit came back
    fake.clear_faults()
    assert "BTCUSDT" in await within(guarded.fetch_tickers(["BTCUSDT"]))
    assert tickers.state == CLOSED


# ----- a flaky exchange -----------------------------------------------------------------------


async def test_error_rate_half_fails_about_half_deterministically(
    guard: Callable[..., GuardedSource],
) -> None:
    async def run() -> list[bool]:
        async with FakeBybit(now_ms=FROZEN_NOW_MS) as server:
            src = make_ccxt_source(server)
            guarded = GuardedSource(src, breaker_config=NEVER_TRIPS, retry=NO_RETRY)
            try:
                await within(guarded.start())
                server.error_rate(0.5, path=TICKERS_PATH, seed=11)
                failed = []
                for _ in range(40):
                    try:
                        await within(guarded.fetch_tickers(["BTCUSDT"]))
                        failed.append(False)
                    except ExchangeUnavailable:
                        failed.append(True)
                assert server.count(TICKERS_PATH) == 40
                assert guarded.snapshot()["tickers"]["failures_in_window"] == sum(failed)
                return failed
            finally:
                await within(guarded.close())

    first = await run()
    draws = random.Random(11)
    assert first == [draws.random() < 0.5 for _ in range(40)]
    assert 12 <= sum(first) <= 28
    assert await run() == first


async def test_error_rate_with_retries_mostly_succeeds(
    fake: FakeBybit, guard: Callable[..., GuardedSource], sleeps: Sleeps
) -> None:
    guarded = guard(breaker_config=NEVER_TRIPS, retry=RetryPolicy(max_retries=2))
    fake.error_rate(0.5, path=TICKERS_PATH, seed=3)
    failures = 0
    for _ in range(20):
        try:
            await within(guarded.fetch_tickers(["BTCUSDT"]))
        except ExchangeUnavailable:
            failures += 1
    draws = random.Random(3)
    # Replay: each call tries until a draw passes, at most three times.
    expected_failures = expected_requests = 0
    for _ in range(20):
        for attempt in range(3):
            expected_requests += 1
            if draws.random() >= 0.5:
                break
            if attempt == 2:
                expected_failures += 1
    assert failures == expected_failures <= 5
    assert fake.count(TICKERS_PATH) == expected_requests
    assert len(sleeps.delays) == expected_requests - 20


# ----- the fake's fault knobs themselves ---------------------------------------------------------


async def _get(
    session: aiohttp.ClientSession, fake: FakeBybit, path: str, **params: str
) -> tuple[int, Any]:
    query = {"category": "spot", **params}
    async with session.get(fake.base_url + path, params=query) as response:
        text = await response.text()
        return response.status, (response.headers, text)


async def test_fake_rate_limit_answers(fake: FakeBybit) -> None:
    fake.rate_limit_next(times=2, retry_after=3, path=TICKERS_PATH)
    fake.rate_limit_next(retry_after="Wed, 21 Oct 2015 07:28:00 GMT", status=418, body="cloudfront")
    async with aiohttp.ClientSession() as session:
        for _ in range(2):
            status, (headers, text) = await within(_get(session, fake, TICKERS_PATH))
            assert status == 429
            assert headers["Retry-After"] == "3"
            assert headers["X-Bapi-Limit-Status"] == "0"
            assert json.loads(text)["retCode"] == 10006
            assert json.loads(text)["retMsg"] == "Too many visits!"
        status, (headers, text) = await within(_get(session, fake, TICKERS_PATH))
        assert status == 418
        assert headers["Retry-After"] == "Wed, 21 Oct 2015 07:28:00 GMT"
        assert "Generated by cloudfront (CloudFront)" in text
        assert headers["Content-Type"].startswith("text/html")
        status, _ = await within(_get(session, fake, TICKERS_PATH))
        assert status == 200
    with pytest.raises(ValueError, match="body"):
        fake.rate_limit_next(body="nginx")


async def test_fake_error_rate_is_seeded_and_path_bound(fake: FakeBybit) -> None:
    fake.error_rate(0.3, status=500, path=TICKERS_PATH, seed=5)
    fake.error_rate(1.0, ret_code=10016, ret_msg="Server error", path=KLINE_PATH)
    draws = random.Random(5)
    async with aiohttp.ClientSession() as session:
        statuses = [(await within(_get(session, fake, TICKERS_PATH)))[0] for _ in range(30)]
        assert statuses == [500 if draws.random() < 0.3 else 200 for _ in range(30)]
        status, (_, text) = await within(_get(session, fake, ORDERBOOK_PATH, symbol="BTCUSDT"))
        assert (status, json.loads(text)["retCode"]) == (200, 0)
        kline_query = {"symbol": "BTCUSDT", "interval": "60"}
        status, (_, text) = await within(_get(session, fake, KLINE_PATH, **kline_query))
        assert (status, json.loads(text)["retCode"]) == (200, 10016)
        fake.clear_faults()
        statuses = [(await within(_get(session, fake, TICKERS_PATH)))[0] for _ in range(5)]
        assert statuses == [200] * 5
    with pytest.raises(ValueError, match="fraction"):
        fake.error_rate(1.5)


async def test_fake_latency_until_cleared(fake: FakeBybit) -> None:
    pauses: list[float] = []  # the pauses the fake makes, in order (it still makes them)
    pause = fake._pause

    async def recorded(seconds: float) -> None:
        pauses.append(seconds)
        await pause(seconds)

    fake._pause = recorded  # type: ignore[method-assign]

    async def timed(session: aiohttp.ClientSession, path: str) -> tuple[float, list[float]]:
        """The request's seconds and the pauses the fake made for it."""
        before = len(pauses)
        started = time.monotonic()
        await within(_get(session, fake, path))
        return time.monotonic() - started, pauses[before:]

    async with aiohttp.ClientSession() as session:
        fake.latency(0.25, path=TICKERS_PATH)
        seconds, paused = await timed(session, TICKERS_PATH)
        assert seconds >= 0.25 and paused == [0.25]
        seconds, paused = await timed(session, TICKERS_PATH)
        assert seconds >= 0.25 and paused == [0.25]  # not only the next one
        assert (await timed(session, INSTRUMENTS_PATH))[1] == []  # only that path
        fake.latency(0.1)  # every path; TICKERS_PATH keeps its own
        seconds, paused = await timed(session, INSTRUMENTS_PATH)
        assert seconds >= 0.1 and paused == [0.1]
        assert (await timed(session, TICKERS_PATH))[1] == [0.25]
        fake.http_error_next(503, path=TICKERS_PATH)
        started = time.monotonic()
        status, _ = await within(_get(session, fake, TICKERS_PATH))
        assert status == 503 and time.monotonic() - started >= 0.25  # slow errors too
        fake.clear_faults()
        assert (await timed(session, TICKERS_PATH))[1] == []
        assert (await timed(session, INSTRUMENTS_PATH))[1] == []


async def test_fake_hang_is_released_by_clear_faults_and_by_stop() -> None:
    server = FakeBybit(now_ms=FROZEN_NOW_MS)
    await server.start()
    try:
        server.hang(path=TICKERS_PATH)
        async with aiohttp.ClientSession() as session:
            held = asyncio.create_task(_get(session, server, TICKERS_PATH))
            await eventually(lambda: server.hanging == 1)
            status, _ = await within(_get(session, server, INSTRUMENTS_PATH))
            assert status == 200  # only the hung path
            assert not held.done()
            server.clear_faults()
            status, _ = await within(held)
            assert status == 200
            assert server.hanging == 0

            server.hang()
            held = asyncio.create_task(_get(session, server, TIME_PATH))
            await eventually(lambda: server.hanging == 1)
            await within(server.stop())  # the bound is only against a hang
            # Answered or cut off, but over: it does not keep the test hanging.
            await asyncio.wait({held}, timeout=BOUND_S)
            assert held.done()
            if held.exception() is None:
                assert held.result()[0] == 200
            else:
                assert isinstance(held.exception(), aiohttp.ClientError)
            assert server.hanging == 0
    finally:
        await within(server.stop())
