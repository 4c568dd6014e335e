"""Derivatives positioning through the real ccxt library against the loopback fake
Bybit's linear perpetuals: what ccxt parses equals what the fake serves; extremes set by
its controls come through; a spot-only pair is unavailable with its reason; bad values
are cleaned and counted; a failing history keeps its symbol's row and is named (without
URLs), a failing batch raises, and the guard's ``derivatives`` breaker opens after
repeated failures; the histories are cached for their period; spot reads are unchanged
by the linear markets."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable
from typing import Any, TypeVar

import aiohttp
import pytest

from app.market.errors import ExchangeRateLimited, ExchangeUnavailable
from app.market.models.derivatives import DerivativesRead
from app.market.sources.base import fetch_derivatives
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.ccxt_derivatives import FUNDING_POINTS, HISTORY_POINTS
from app.market.sources.guarded import CircuitOpen, GuardedSource, RetryPolicy
from tests.support.streams import STREAM_SYMBOLS, close_without_tls_linger, loopback_source
from tools.fake_bybit import KLINE_PATH, TICKERS_PATH, FakeBybit
from tools.fake_bybit_derivatives import (
    ACCOUNT_RATIO_PATH,
    FUNDING_HISTORY_PATH,
    FUNDING_INTERVAL_MS,
    HOUR_MS,
    OPEN_INTEREST_PATH,
)

T = TypeVar("T")

NOW = 1_700_002_800_000 + 1_234_567  # frozen: 20 min into an hour
PERPS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT")
BOUND = 20.0


async def within(awaitable: Awaitable[T]) -> T:
    return await asyncio.wait_for(awaitable, BOUND)


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(now_ms=NOW) as server:
        yield server


@pytest.fixture
async def source(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    made = loopback_source(fake.base_url, timeout_ms=5_000)
    await within(made.start())
    yield made
    await within(made.close())


async def read(source: Any, symbols: tuple[str, ...] = PERPS) -> DerivativesRead:
    return await within(fetch_derivatives(source, list(symbols)))


def served_history(rows: list[dict[str, str]], key: str) -> list[tuple[int, float]]:
    stamp = "fundingRateTimestamp" if key == "fundingRate" else "timestamp"
    return [(int(row[stamp]), float(row[key])) for row in reversed(rows)]


# ----- what ccxt parses is what the fake serves ------------------------------------------


async def test_each_perpetual_reads_as_the_fake_serves_it(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    got = await read(source, ("BTCUSDT", "ETHUSDT", "ETHBTC", "NEWUSDT", "ADAUSDT"))
    state = fake.derivatives
    assert set(got.by_symbol) == {"BTCUSDT", "ETHUSDT"}
    for symbol in ("BTCUSDT", "ETHUSDT"):
        data = got.by_symbol[symbol]
        assert data.contract == f"{symbol[:-4]}/USDT:USDT"
        assert data.timestamp_ms == NOW  # the exchange's response time
        assert data.funding_rate == float(state.funding_rate(symbol))
        assert data.next_funding_time_ms == state.next_funding_time(symbol)
        assert data.next_funding_time_ms % FUNDING_INTERVAL_MS == 0
        assert data.open_interest == float(state.open_interest(symbol))
        assert data.open_interest_value == float(state.open_interest_value(symbol))
        oi_rows = state.open_interest_rows(symbol, "1h", limit=HISTORY_POINTS)
        assert list(data.open_interest_history) == served_history(oi_rows, "openInterest")
        assert len(data.open_interest_history) >= 25
        assert data.open_interest_history[-1][0] == NOW // HOUR_MS * HOUR_MS
        ratio_rows = state.ratio_rows(symbol, "1h", limit=HISTORY_POINTS)
        expected = [
            (int(r["timestamp"]), float(r["buyRatio"]) / float(r["sellRatio"]))
            for r in reversed(ratio_rows)
        ]
        assert [t for t, _ in data.long_short_history] == [t for t, _ in expected]
        assert [v for _, v in data.long_short_history] == pytest.approx([v for _, v in expected])
        assert data.long_short_ratio == data.long_short_history[-1][1]
        funding_rows = state.funding_rows(symbol, limit=FUNDING_POINTS)
        assert list(data.funding_history) == served_history(funding_rows, "fundingRate")
        assert data.open_interest_change_pct(1) is not None
        assert data.open_interest_change_pct(24) is not None
        assert data.liquidations is None  # REST has none: the stream's
    assert got.unavailable == {
        "ETHBTC": "no linear perpetual listed for ETHBTC on bybit",
        "NEWUSDT": "no linear perpetual listed for NEWUSDT on bybit",  # pre-launch
        "ADAUSDT": "no linear perpetual listed for ADAUSDT on bybit",  # not listed at all
    }


async def test_the_funding_rates_are_one_call_for_every_perpetual(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    await read(source)
    linear = [r for r in fake.requests if r.path == TICKERS_PATH]
    assert [r.query.get("category") for r in linear] == ["linear"]
    assert "symbol" not in linear[0].query
    for path in (OPEN_INTEREST_PATH, ACCOUNT_RATIO_PATH, FUNDING_HISTORY_PATH):
        asked = sorted(r.query["symbol"] for r in fake.requests if r.path == path)
        assert asked == sorted(PERPS)
    oi = next(r.query for r in fake.requests if r.path == OPEN_INTEREST_PATH)
    assert (oi["intervalTime"], oi["limit"]) == ("1h", str(HISTORY_POINTS))
    ratio = next(r.query for r in fake.requests if r.path == ACCOUNT_RATIO_PATH)
    assert (ratio["period"], ratio["category"]) == ("1h", "linear")


async def test_ccxt_reads_the_fakes_history_endpoints_as_bybit_defines_them(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    exchange = source.exchange
    state = fake.derivatives
    newest = await within(exchange.fetch_open_interest("BTC/USDT:USDT"))
    assert newest["openInterestAmount"] == float(
        state.open_interest_rows("BTCUSDT", "1h", limit=1)[0]["openInterest"]
    )
    since = (NOW // FUNDING_INTERVAL_MS - 5) * FUNDING_INTERVAL_MS
    rates = await within(exchange.fetch_funding_rate_history("ETH/USDT:USDT", since, 3))
    # ccxt asks [since, since + 3 intervals]; Bybit answers the newest 3 in that range
    assert [r["timestamp"] for r in rates] == [since + k * FUNDING_INTERVAL_MS for k in range(1, 4)]
    assert [r["fundingRate"] for r in rates] == [
        float(state.settled_rate("ETHUSDT", r["timestamp"])) for r in rates
    ]
    page = await within(
        exchange.fetch_open_interest_history(
            "SOL/USDT:USDT", "5m", limit=450, params={"paginate": True}
        )
    )
    assert len(page) == 450  # followed nextPageCursor (200 a page)
    newest = NOW // 300_000 * 300_000
    assert sorted(p["timestamp"] for p in page) == [
        newest - k * 300_000 for k in range(449, -1, -1)
    ]  # contiguous pages, none repeated


# ----- controls: extremes and exact changes -------------------------------------------------


async def test_extremes_set_on_the_exchange_come_through(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    state = fake.derivatives
    settle = NOW // FUNDING_INTERVAL_MS * FUNDING_INTERVAL_MS
    upcoming = settle + FUNDING_INTERVAL_MS + 4 * HOUR_MS  # off the 8-hour grid, ahead
    state.set_funding("BTCUSDT", 0.0375, next_time_ms=upcoming, settled=[0.01, 0.02, 0.03])
    state.set_open_interest("BTCUSDT", 1_200.0, ago_1h=1_000.0, ago_24h=600.0)
    state.set_long_short("BTCUSDT", 0.8)
    state.set_funding("ETHUSDT", -0.05)
    state.set_long_short("ETHUSDT", 0.1)
    state.set_open_interest("ETHUSDT", 0.0)

    got = (await read(source)).by_symbol
    btc, eth = got["BTCUSDT"], got["ETHUSDT"]
    assert btc.funding_rate == 0.0375
    assert btc.next_funding_time_ms == upcoming
    assert [v for _, v in btc.funding_history[-3:]] == [0.01, 0.02, 0.03]
    assert btc.funding_history[-1][0] == settle
    assert btc.open_interest == 1_200.0
    assert btc.open_interest_value == pytest.approx(1_200.0 * float(state.mark_price("BTCUSDT")))
    assert btc.open_interest_change_pct(1) == pytest.approx(20.0)
    assert btc.open_interest_change_pct(24) == pytest.approx(100.0)
    assert btc.long_short_ratio == pytest.approx(4.0)
    assert eth.funding_rate == -0.05  # the bound itself is believable
    assert eth.long_short_ratio == pytest.approx(1 / 9)
    assert eth.open_interest == 0.0 and eth.open_interest_value == 0.0
    assert source.data_quality.snapshot() == {}


# ----- bad values: cleaned and counted, never a crash -----------------------------------


async def test_bad_values_become_none_and_are_counted(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    state = fake.derivatives
    state.set_funding("BTCUSDT", "NaN")
    state.set_open_interest("BTCUSDT", "-5", value="abc")
    state.set_funding("ETHUSDT", 0.2, next_time_ms=0)  # 20 % per 8 h: a unit error
    state.set_long_short("ETHUSDT", "0", "1")  # nobody long: no ratio
    state.set_long_short("SOLUSDT", "NaN", "NaN")  # ccxt cannot divide these

    got = (await read(source)).by_symbol
    assert set(got) == set(PERPS)
    btc, eth, sol = got["BTCUSDT"], got["ETHUSDT"], got["SOLUSDT"]
    assert (btc.funding_rate, btc.open_interest, btc.open_interest_value) == (None, None, None)
    assert len(btc.open_interest_history) == HISTORY_POINTS  # the history is fine
    assert (eth.funding_rate, eth.next_funding_time_ms, eth.long_short_ratio) == (None, None, None)
    assert len(eth.long_short_history) == HISTORY_POINTS - 1  # the newest point dropped
    assert sol.long_short_ratio is None
    assert len(sol.long_short_history) == HISTORY_POINTS - 1
    assert got["XRPUSDT"].funding_rate is not None
    counts = source.data_quality.snapshot()
    assert counts == {
        "BTCUSDT": {
            "funding_rate_invalid": 1,
            "open_interest_invalid": 1,
            "open_interest_value_invalid": 1,
        },
        "ETHUSDT": {
            "funding_rate_invalid": 1,
            "next_funding_time_invalid": 1,
            "long_short_history_dropped": 1,
        },
        "SOLUSDT": {"long_short_history_dropped": 1},
    }


async def test_implausible_next_funding_times_become_none_and_are_counted(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    state = fake.derivatives
    state.set_funding("BTCUSDT", 0.0001, next_time_ms=1_000)  # 1970: "settling now"
    state.set_funding("ETHUSDT", 0.0001, next_time_ms=NOW + 10**13)  # centuries ahead
    state.set_funding("SOLUSDT", 0.0001, next_time_ms=NOW - HOUR_MS)  # an hour past
    state.set_funding("XRPUSDT", 0.0001, next_time_ms=NOW - 60_000)  # not rolled over yet
    state.set_funding("DOGEUSDT", 0.0001, next_time_ms=NOW + 7 * 24 * HOUR_MS)

    got = (await read(source)).by_symbol
    for symbol in ("BTCUSDT", "ETHUSDT", "SOLUSDT"):
        assert got[symbol].next_funding_time_ms is None, symbol
        assert got[symbol].funding_rate == 0.0001  # the rest of the row stands
    assert got["XRPUSDT"].next_funding_time_ms == NOW - 60_000
    assert got["DOGEUSDT"].next_funding_time_ms == NOW + 7 * 24 * HOUR_MS
    assert source.data_quality.snapshot() == {
        s: {"next_funding_time_invalid": 1} for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    }


# ----- failures --------------------------------------------------------------------------


async def test_a_failing_history_keeps_the_row_and_names_what_failed_without_urls(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.http_error_next(502, path=ACCOUNT_RATIO_PATH, times=None)
    got = await read(source)
    assert set(got.by_symbol) == set(PERPS) and got.unavailable == {}
    state = fake.derivatives
    for symbol in PERPS:
        data = got.by_symbol[symbol]
        assert data.funding_rate == float(state.funding_rate(symbol))  # the batch call's
        assert data.open_interest == float(state.open_interest(symbol))
        assert len(data.open_interest_history) == HISTORY_POINTS
        assert data.open_interest_change_pct(1) is not None
        assert (data.long_short_ratio, data.long_short_history) == (None, ())  # not invented
        assert got.partial[symbol] == "long/short history: exchange unavailable (HTTP 502)"
    fake.clear_faults()
    again = await read(source)  # the failed histories are asked again first
    assert again.partial == {}
    assert all(again.by_symbol[s].long_short_ratio is not None for s in PERPS)


async def test_histories_failing_differently_are_each_named(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.http_error_next(503, path=OPEN_INTEREST_PATH)
    fake.fail_next(10001, "Not supported symbols", path=FUNDING_HISTORY_PATH)
    got = await read(source)
    assert set(got.by_symbol) == set(PERPS) and got.unavailable == {}
    reasons = " | ".join(got.partial.values())
    assert "open interest history: exchange unavailable (HTTP 503)" in reasons
    assert "funding history: symbol refused by the exchange (Not supported symbols)" in reasons
    assert "://" not in reasons and "symbol=" not in reasons
    for symbol in got.partial:
        data = got.by_symbol[symbol]
        assert data.funding_rate is not None and data.open_interest is not None
    again = await read(source)
    assert set(again.by_symbol) == set(PERPS) and again.partial == {}


async def test_the_batch_call_failing_raises(fake: FakeBybit, source: CcxtMarketSource) -> None:
    fake.http_error_next(503, path=TICKERS_PATH)
    with pytest.raises(ExchangeUnavailable, match="fetch_funding_rates"):
        await read(source)


async def test_every_symbol_failing_raises_and_a_rate_limit_raises(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    for path in (OPEN_INTEREST_PATH, ACCOUNT_RATIO_PATH, FUNDING_HISTORY_PATH):
        fake.http_error_next(503, times=None, path=path)
    with pytest.raises(ExchangeUnavailable) as raised:
        await read(source)
    assert "exchange unavailable (HTTP 503)" in str(raised.value)
    assert "://" not in str(raised.value)
    fake.clear_faults()
    fake.rate_limit_next(path=ACCOUNT_RATIO_PATH)
    with pytest.raises(ExchangeRateLimited):
        await read(source)


async def test_the_derivatives_breaker_opens_after_repeated_failures(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    calls: list[tuple[str, str]] = []

    class Observer:
        def call(self, family: str, outcome: str, seconds: float | None) -> None:
            calls.append((family, outcome))

        def ratelimit_wait(self, family: str, seconds: float) -> None:
            pass

    guarded = GuardedSource(source, retry=RetryPolicy(max_retries=0), observers=[Observer()])
    fake.http_error_next(503, times=None, path=TICKERS_PATH)
    for _ in range(5):
        with pytest.raises(ExchangeUnavailable):
            await read(guarded)
    assert guarded.breakers()["derivatives"].snapshot()["state"] == "open"
    before = len(fake.requests)
    with pytest.raises(CircuitOpen):
        await read(guarded)
    assert len(fake.requests) == before  # refused without a request
    assert calls == [("derivatives", "error")] * 5 + [("derivatives", "rejected")]
    # the other families are not affected: candles still come (kline path is healthy)
    candles = await within(guarded.fetch_candles("BTCUSDT", "1h", 5))
    assert len(candles) == 5
    assert guarded.breakers()["ohlcv"].snapshot()["state"] == "closed"


# ----- caching ---------------------------------------------------------------------------


async def test_histories_are_cached_for_their_period(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    now = [1_000.0]
    source.derivatives.clock = lambda: now[0]

    def asked() -> tuple[int, int, int, int]:
        paths = (TICKERS_PATH, OPEN_INTEREST_PATH, ACCOUNT_RATIO_PATH, FUNDING_HISTORY_PATH)
        return tuple(fake.count(p) for p in paths)  # type: ignore[return-value]

    n = len(PERPS)
    await read(source)
    assert asked() == (1, n, n, n)
    now[0] += 299
    await read(source)
    assert asked() == (2, n, n, n)  # only the funding rates, every read
    now[0] += 2
    await read(source)
    assert asked() == (3, 2 * n, 2 * n, n)  # 5 min: open interest and ratios again
    fake.set_now(fake.derivatives.next_funding_time("BTCUSDT"))
    await read(source)
    assert asked() == (4, 2 * n, 2 * n, 2 * n)  # a settlement: funding history again
    now[0] += 3_601
    await read(source)
    assert asked() == (5, 3 * n, 3 * n, 3 * n)


# ----- spot unchanged ------------------------------------------------------------------------


async def test_spot_tickers_and_candles_are_unchanged_by_the_linear_markets(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.derivatives.set_funding("BTCUSDT", 0.01)
    tickers = await within(source.fetch_tickers(["BTCUSDT", "ETHBTC"]))
    assert {s: t.last for s, t in tickers.items()} == {
        s: float(fake.tickers[s]["lastPrice"]) for s in ("BTCUSDT", "ETHBTC")
    }
    candles = await within(source.fetch_candles("BTCUSDT", "1h", 3))
    assert len(candles) == 3
    spot = {r.query.get("category") for r in fake.requests if r.path in (TICKERS_PATH, KLINE_PATH)}
    assert spot == {"spot"}
    assert source.listed_symbols() == frozenset(fake.symbols)


# ----- the fake's own answers, as Bybit words them ---------------------------------------


async def test_the_fake_refuses_what_bybit_refuses(fake: FakeBybit) -> None:
    async def answer(path: str, **query: str) -> tuple[int, str]:
        async with (
            aiohttp.ClientSession() as session,
            session.get(fake.base_url + path, params=query) as response,
        ):
            body = await response.json()
        return body["retCode"], body["retMsg"]

    linear = {"category": "linear"}
    assert await answer(FUNDING_HISTORY_PATH, symbol="BTCUSDT", startTime="1", **linear) == (
        10001,
        "params error: endTime is required with startTime",
    )
    assert (await answer(OPEN_INTEREST_PATH, symbol="BTCUSDT", intervalTime="2h", **linear))[0]
    assert (
        await answer(OPEN_INTEREST_PATH, symbol="BTCUSDT", intervalTime="1h", limit="201", **linear)
    )[0] == 10001
    assert await answer(ACCOUNT_RATIO_PATH, symbol="ETHBTC", period="1h", **linear) == (
        10001,
        "Not supported symbols",
    )
    assert await answer(ACCOUNT_RATIO_PATH, symbol="BTCUSDT", period="1h", category="spot") == (
        10001,
        "Illegal category",
    )
    fake.delist("SOLUSDT")
    assert await answer(FUNDING_HISTORY_PATH, symbol="SOLUSDT", **linear) == (
        10001,
        "Not supported symbols",
    )
    assert await answer(OPEN_INTEREST_PATH, symbol="BTCUSDT", intervalTime="1h", **linear) == (
        0,
        "OK",
    )


async def test_a_read_fetches_the_histories_of_eight_symbols_at_most_stalest_first() -> None:
    """The first reads of many perpetuals spread their history requests: eight symbols
    a read, the rest the next read (their values meanwhile None, never invented)."""
    async with FakeBybit(symbols=STREAM_SYMBOLS, inactive_symbols=(), now_ms=NOW) as fake:
        source = loopback_source(fake.base_url, timeout_ms=5_000)
        try:
            await within(source.start())
            perps = tuple(s for s in STREAM_SYMBOLS if fake.derivatives.is_perpetual(s))
            assert len(perps) == 11

            def histories(path: str) -> set[str]:
                return {r.query["symbol"] for r in fake.requests if r.path == path}

            first = await read(source, perps)
            assert len(histories(OPEN_INTEREST_PATH)) == 8
            assert histories(ACCOUNT_RATIO_PATH) == histories(OPEN_INTEREST_PATH)
            waiting = [s for s in perps if s not in histories(OPEN_INTEREST_PATH)]
            for symbol in waiting:
                assert first.by_symbol[symbol].funding_rate is not None  # the batch call
                assert first.by_symbol[symbol].open_interest_history == ()
                assert first.by_symbol[symbol].open_interest_change_pct(1) is None
            second = await read(source, perps)
            assert histories(OPEN_INTEREST_PATH) == set(perps)  # the three left next
            assert all(second.by_symbol[s].open_interest_history for s in waiting)
        finally:
            await within(source.close())
