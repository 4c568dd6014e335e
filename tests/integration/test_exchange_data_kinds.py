"""Bad exchange data, kind by kind: what real exchanges send, through the real ccxt and
the loopback fake Bybit, and the cleaning rules on their own (``app.market.sources.quality``)."""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator
from itertools import pairwise

import orjson
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.models.candles import CandleQuality
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.quality import DataQualityCounters, clean_candle_rows, count_gaps
from app.services.alerts.evaluation import market_facts
from tests.conftest import ManualClock, exchange_settings, started_app, state_of
from tests.support.streams import close_without_tls_linger, loopback_source
from tools.fake_bybit import FakeBybit

FROZEN_NOW_MS = 1_700_000_123_456
MINUTE = 60_000


# ----- the cleaning rules -------------------------------------------------------------


def _row(minute: int, price: float = 100.0, volume: float = 5.0) -> list:
    return [minute * MINUTE, price, price + 1, price - 1, price, volume]


@pytest.mark.parametrize("blank", ["", None, "NaN", "nan", "inf", 0, "0", -1, "abc"])
def test_a_no_trade_candle_carries_the_previous_close(blank: object) -> None:
    rows = [_row(1, 100.0), [2 * MINUTE, blank, blank, blank, blank, blank], _row(3, 102.0)]
    clean, quality = clean_candle_rows(rows, MINUTE)
    assert clean[1] == [2 * MINUTE, 100.0, 100.0, 100.0, 100.0, 0.0]
    assert quality == CandleQuality(filled=1)


def test_a_bad_first_candle_is_dropped() -> None:
    clean, quality = clean_candle_rows([[MINUTE, "", "", "", "", ""], _row(2)], MINUTE)
    assert [r[0] for r in clean] == [2 * MINUTE]
    assert quality.dropped == 1 and quality.filled == 0


def test_a_bad_volume_alone_becomes_zero() -> None:
    clean, quality = clean_candle_rows([_row(1), [*_row(2)[:5], "NaN"]], MINUTE)
    assert clean[1][5] == 0.0 and clean[1][4] == 100.0 and quality.filled == 1


def test_duplicates_keep_the_latest_arrival() -> None:
    rows = [_row(1), _row(2, 100.0), _row(2, 101.0), _row(3)]
    clean, quality = clean_candle_rows(rows, MINUTE)
    assert [r[0] for r in clean] == [MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert clean[1][4] == 101.0 and quality.duplicates == 1


def test_rows_are_sorted_by_open_time() -> None:
    clean, quality = clean_candle_rows([_row(3), _row(1), _row(2)], MINUTE)
    assert [r[0] for r in clean] == [MINUTE, 2 * MINUTE, 3 * MINUTE]
    assert quality.reordered == 3


def test_gaps_are_left_as_gaps_and_counted() -> None:
    clean, quality = clean_candle_rows([_row(1), _row(2), _row(5), _row(7)], MINUTE)
    assert [r[0] // MINUTE for r in clean] == [1, 2, 5, 7]
    assert (quality.gaps, quality.missing) == (2, 3)
    assert count_gaps([], MINUTE) == (0, 0)


def test_rows_without_a_usable_time_are_dropped() -> None:
    clean, quality = clean_candle_rows(
        [[None, 1, 1, 1, 1, 1], ["x", *_row(1)[1:]], _row(2)], MINUTE
    )
    assert len(clean) == 1 and quality.dropped == 2


_VALUE = st.one_of(
    st.floats(min_value=0.01, max_value=1e6),
    st.sampled_from(["", None, "NaN", float("nan"), float("inf"), 0.0, "1.5"]),
)
_ROW = st.tuples(st.integers(0, 40), _VALUE, _VALUE, _VALUE, _VALUE, _VALUE)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.lists(_ROW, max_size=40))
def test_cleaned_rows_are_always_chartable(rows: list[tuple]) -> None:
    raw = [[minute * MINUTE, *values] for minute, *values in rows]
    clean, quality = clean_candle_rows(raw, MINUTE)
    times = [r[0] for r in clean]
    assert times == sorted(set(times))  # strictly increasing
    assert all(math.isfinite(x) and x > 0 for r in clean for x in r[1:5])
    assert all(r[5] >= 0 for r in clean)
    assert len(clean) == len(raw) - quality.duplicates - quality.dropped


def test_counters_count_per_symbol_and_open_one_episode() -> None:
    counters = DataQualityCounters()
    counters.add_candles("ETHUSDT", CandleQuality(filled=2, gaps=1, missing=3))
    counters.add("ETHUSDT", "ticker_unpriced")
    assert counters.snapshot() == {
        "ETHUSDT": {"candles_filled": 2, "gaps": 1, "missing_candles": 3, "ticker_unpriced": 1}
    }
    assert counters.start_episode("ETHUSDT", "candles/1m") is True
    assert counters.start_episode("ETHUSDT", "candles/1m") is False
    assert counters.end_episode("ETHUSDT", "candles/1m") is True
    assert counters.end_episode("ETHUSDT", "candles/1m") is False


# ----- candles through ccxt and the fake exchange ---------------------------------------


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(now_ms=FROZEN_NOW_MS) as server:
        yield server


@pytest_asyncio.fixture
async def source(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    src = loopback_source(fake.base_url)
    await src.start()
    yield src
    await src.close()


@pytest.mark.parametrize("kind", ["empty", "null", "nan", "zero"])
async def test_no_trade_candles_arrive_filled(
    fake: FakeBybit, source: CcxtMarketSource, kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    fake.kline_quirk(kind, symbol="ETHUSDT", at=(3, 7))
    with caplog.at_level(logging.WARNING, logger="app.market.sources.ccxt"):
        candles = await source.fetch_candles("ETHUSDT", "1m", 50)
        await source.fetch_candles("ETHUSDT", "1m", 50)  # same episode: no second line
    assert len(candles) == 50
    for column in (candles.open, candles.high, candles.low, candles.close, candles.volume):
        assert all(math.isfinite(x) for x in column)
    assert candles.quality == CandleQuality(filled=2)
    filled = 50 - 1 - 3
    assert candles.close[filled] == candles.close[filled - 1] and candles.volume[filled] == 0
    assert source.data_quality.counts["ETHUSDT"]["candles_filled"] == 4
    lines = [r for r in caplog.records if "irregular ETHUSDT 1m" in r.getMessage()]
    assert len(lines) == 1 and "candles_filled=2" in lines[0].getMessage()
    fake.clear_faults()
    with caplog.at_level(logging.INFO, logger="app.market.sources.ccxt"):
        assert (await source.fetch_candles("ETHUSDT", "1m", 50)).quality.clean
    assert any("regular again" in r.getMessage() for r in caplog.records)


async def test_a_repeated_candle_keeps_its_latest_version(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.kline_quirk("duplicate", symbol="BTCUSDT", at=(2, 4))
    candles = await source.fetch_candles("BTCUSDT", "5m", 30)
    served = fake.kline_rows("BTCUSDT", "5", limit=30)
    # 32 rows sent, ccxt keeps 30 of them, of which 2 repeat a candle
    assert len(candles) == 28 and candles.quality.duplicates == 2
    assert all(b > a for a, b in pairwise(candles.timestamp_ms))
    by_time = dict(zip(candles.timestamp_ms.tolist(), candles.close.tolist(), strict=True))
    assert by_time[int(served[4][0])] == pytest.approx(float(served[4][4]) + 0.01)  # revised


async def test_shuffled_and_missing_candles(fake: FakeBybit, source: CcxtMarketSource) -> None:
    fake.kline_quirk("gap", symbol="SOLUSDT", at=(5, 6, 10))  # quirks apply in this order
    fake.kline_quirk("shuffle", symbol="SOLUSDT")
    candles = await source.fetch_candles("SOLUSDT", "1h", 40)
    times = list(candles.timestamp_ms)
    assert times == sorted(set(times)) and len(times) == 37
    assert (candles.quality.gaps, candles.quality.missing) == (2, 3)


# ----- the whole service: dashboards and the chart API ---------------------------------


def bybit_settings(fake: FakeBybit, symbols: str):
    """The service on ccxt against ``fake``, for these comma-separated symbols."""
    return exchange_settings(fake.base_url, symbols)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def quirky_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[QuartTestApp]:
    """One app for the module's tests that only read it (its clock never moves)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        close_without_tls_linger(monkeypatch)
        async with FakeBybit(now_ms=FROZEN_NOW_MS) as fake:
            fake.kline_quirk("empty", symbol="ETHUSDT", at=(2, 9))
            fake.kline_quirk("duplicate", symbol="ETHUSDT", at=(5,))
            fake.kline_quirk("null", symbol="SOLUSDT", at=(0, 1))
            settings_ = exchange_settings(
                fake.base_url,
                "BTCUSDT,ETHUSDT,SOLUSDT",
                VIRTUOSO_DATA_DIR=str(tmp_path_factory.mktemp("quirky")),
            )
            async for test_app in started_app(settings_, None, ManualClock()):
                yield test_app


async def _get(test_app: QuartTestApp, path: str) -> tuple[int, dict]:
    response = await test_app.test_client().get(path)
    return response.status_code, orjson.loads(await response.get_data())


@pytest.mark.asyncio(loop_scope="module")
async def test_a_bad_candle_no_longer_removes_the_analysis(quirky_app: QuartTestApp) -> None:
    status, view = await _get(quirky_app, "/api/confluence/ETHUSDT?timeframe=1m")
    assert status == 200
    for name in ("technical", "volume", "orderflow", "price_structure"):
        assert view["components"][name]["reason"] != "candles contain non-finite values"
        assert view["components"][name]["score"] is not None
    assert view["data_quality"]["candles_filled"] == 2
    assert view["data_quality"]["duplicate_candles"] == 1
    _, desktop = await _get(quirky_app, "/api/dashboard/data")
    rows = {row["symbol"]: row for row in desktop["symbols"]}
    assert rows["ETHUSDT"]["data_quality"]["candles_filled"] >= 2
    assert "1m" in rows["ETHUSDT"]["data_quality"]["by_timeframe"]
    assert rows["BTCUSDT"]["data_quality"] is None


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("symbol", ["ETHUSDT", "SOLUSDT"])
async def test_the_chart_api_never_sends_nulls_or_unordered_times(
    quirky_app: QuartTestApp, symbol: str
) -> None:
    for timeframe in ("1m", "5m", "1h"):
        status, body = await _get(quirky_app, f"/api/market/candles/{symbol}?timeframe={timeframe}")
        assert status == 200 and body["candles"]
        times = [row[0] for row in body["candles"]]
        assert all(b > a for a, b in pairwise(times))
        assert all(v is not None and math.isfinite(v) for row in body["candles"] for v in row)
        assert body["data_quality"]["rows_withheld"] == 0


# ----- tickers with empty fields, a zero price, or none -------------------------------


@pytest.mark.parametrize(
    ("kind", "counter"),
    [("empty", "ticker_unpriced"), ("zero", "ticker_unpriced"), ("absent", "ticker_missing")],
)
async def test_a_ticker_without_a_price_is_counted_not_priced(
    fake: FakeBybit,
    source: CcxtMarketSource,
    kind: str,
    counter: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.ticker_quirk("ETHUSDT", kind)
    with caplog.at_level(logging.WARNING, logger="app.market.sources.ccxt"):
        for _ in range(2):
            tickers = await source.fetch_tickers(["BTCUSDT", "ETHUSDT"])
    assert set(tickers) == {"BTCUSDT"} and tickers["BTCUSDT"].missing == ()
    assert source.data_quality.counts["ETHUSDT"][counter] == 2
    assert len([r for r in caplog.records if "ETHUSDT" in r.getMessage()]) == 1


async def test_a_ticker_without_a_change_names_it(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.ticker_quirk("SOLUSDT", "no_change")
    ticker = (await source.fetch_tickers(["SOLUSDT"]))["SOLUSDT"]
    assert ticker.last == float(fake.tickers["SOLUSDT"]["lastPrice"])
    assert ticker.missing == ("change_24h",) and math.isnan(ticker.change_24h_pct)
    assert source.data_quality.counts["SOLUSDT"]["ticker_fields_missing"] == 1


@pytest_asyncio.fixture
async def plain_app(fake: FakeBybit, clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings_ = bybit_settings(fake, "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT")
    async for test_app in started_app(settings_, None, clock):
        yield test_app


@pytest.mark.parametrize("kind", ["empty", "zero", "absent"])
async def test_a_symbol_without_a_price_stays_with_what_is_known(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock, kind: str
) -> None:
    pipeline = state_of(plain_app).pipeline
    fake.ticker_quirk("ETHUSDT", kind)
    fake.ticker_quirk("XRPUSDT", "no_change")
    clock.advance(30)
    await pipeline.refresh(force=True)
    _, desktop = await _get(plain_app, "/api/dashboard/data")
    rows = {row["symbol"]: row for row in desktop["symbols"]}
    assert set(rows) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    eth = rows["ETHUSDT"]
    assert eth["price"] is None and eth["bid"] is None and eth["volume_24h"] is None
    assert "price" in eth["data_quality"]["ticker_missing"]
    assert eth["confluence"] is not None  # candles and book are still known
    assert "ETHUSDT/ticker" in desktop["errors"]
    assert rows["XRPUSDT"]["change_24h"] is None and rows["XRPUSDT"]["price"] > 0
    assert rows["XRPUSDT"]["data_quality"]["ticker_missing"] == ["change_24h"]
    status, view = await _get(plain_app, "/api/confluence/ETHUSDT")
    assert status == 200 and view["price"] is None and view["stale"] is False
    assert view["generated_at"] == desktop["generated_at"]  # not the old view
    _, mobile = await _get(plain_app, "/api/dashboard/mobile")
    cards = {card["symbol"]: card for card in mobile["confluence_scores"]}
    assert "ETHUSDT" not in cards or cards["ETHUSDT"]["price"] is None
    _, symbols = await _get(plain_app, "/api/symbols")
    assert {s["symbol"]: s["price"] for s in symbols["symbols"]}["ETHUSDT"] is None
    facts = market_facts(pipeline.latest, pipeline.latest_analysis)
    assert "ETHUSDT" not in {fact.symbol for fact in facts}  # no price, no price alert
    assert all(fact.price > 0 for fact in facts)


# ----- quote assets beyond a fixed list -----------------------------------------------

UNUSUAL = ("BTCDAI", "ETHTRY", "BTCFDUSD", "SOLUSDC")
UNUSUAL_ASSETS = {
    "BTCDAI": ("BTC", "DAI"),
    "ETHTRY": ("ETH", "TRY"),
    "BTCFDUSD": ("BTC", "FDUSD"),
    "SOLUSDC": ("SOL", "USDC"),
}


@pytest_asyncio.fixture
async def wide_fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=("BTCUSDT", "ETHUSDT", *UNUSUAL)) as server:
        yield server


async def test_base_and_quote_come_from_the_market_definitions(wide_fake: FakeBybit) -> None:
    source = loopback_source(wide_fake.base_url)
    await source.start()
    try:
        assets = source.market_assets()
        assert {s: assets[s] for s in UNUSUAL} == UNUSUAL_ASSETS
        tickers = await source.fetch_tickers(list(UNUSUAL))
        assert set(tickers) == set(UNUSUAL)
    finally:
        await source.close()


@pytest_asyncio.fixture
async def wide_app(wide_fake: FakeBybit, clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings_ = bybit_settings(wide_fake, ",".join(("BTCUSDT", "ETHUSDT", *UNUSUAL)))
    async for test_app in started_app(settings_, None, clock):
        yield test_app


async def test_unusual_quote_assets_are_served(wide_app: QuartTestApp) -> None:
    status, symbols = await _get(wide_app, "/api/symbols")
    assert status == 200
    served = {row["symbol"]: (row["base"], row["quote"]) for row in symbols["symbols"]}
    assert {s: served[s] for s in UNUSUAL} == UNUSUAL_ASSETS
    assert not [key for key in symbols["errors"] if key.endswith("/assets")]
    status, desktop = await _get(wide_app, "/api/dashboard/data")
    assert status == 200 and set(UNUSUAL) <= {row["symbol"] for row in desktop["symbols"]}
    for symbol in UNUSUAL:
        status, view = await _get(wide_app, f"/api/confluence/{symbol}")
        assert status == 200 and view["price"] > 0


async def test_a_symbol_that_fails_in_the_views_is_its_own_error(
    wide_app: QuartTestApp, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    from app.services import views

    real = views.data_quality

    def failing(snapshot, symbol):
        if symbol == "ETHTRY":
            raise ValueError("unknown quote asset in 'ETHTRY'")
        return real(snapshot, symbol)

    monkeypatch.setattr(views, "data_quality", failing)
    clock.advance(30)
    await state_of(wide_app).pipeline.refresh(force=True)
    status, desktop = await _get(wide_app, "/api/dashboard/data")
    assert status == 200 and desktop["stale"] is False
    assert "unknown quote asset" in desktop["errors"]["ETHTRY/row"]
    assert "BTCDAI" in {row["symbol"] for row in desktop["symbols"]}


# ----- statistics undefined on the data -------------------------------------------------


@pytest_asyncio.fixture
async def pegged_app(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    async with FakeBybit(symbols=("BTCUSDT", "ETHUSDT", "SOLUSDT", "USDCUSDT")) as server:
        server.peg("USDCUSDT")
        settings_ = bybit_settings(server, "BTCUSDT,ETHUSDT,SOLUSDT,USDCUSDT")
        async for test_app in started_app(settings_, None, clock):
            yield test_app


async def test_a_pegged_coin_has_no_correlation_and_stays_out_of_the_average(
    pegged_app: QuartTestApp,
) -> None:
    status, beta = await _get(pegged_app, "/api/bitcoin-beta")
    assert status == 200
    windows = {row["symbol"]: row["windows"] for row in beta["symbols"]}
    assert windows["USDCUSDT"], "the pegged coin's beta windows are missing"
    for stats in windows["USDCUSDT"].values():
        assert stats["beta"] == 0.0 and stats["correlation"] is None
        assert stats["r_squared"] is None and "zero variance" in stats["undefined"]["correlation"]
    overview = beta["overview"]
    assert "USDCUSDT" in overview["excluded"] and overview["correlation_symbols"] == 2
    headline = [next(iter(windows[s].values()))["correlation"] for s in ("ETHUSDT", "SOLUSDT")]
    assert overview["average_correlation"] == pytest.approx(sum(headline) / 2, abs=1e-3)
    _, desktop = await _get(pegged_app, "/api/dashboard/data")
    row = next(r for r in desktop["symbols"] if r["symbol"] == "USDCUSDT")
    assert row["beta"]["correlation"] is None and row["beta"]["undefined"]


async def test_too_few_aligned_points_are_a_reason_not_a_number(
    fake: FakeBybit, clock: ManualClock
) -> None:
    fake.kline_quirk("gap", symbol="ETHUSDT", at=tuple(range(1, 1000, 2)))
    settings_ = bybit_settings(fake, "BTCUSDT,ETHUSDT,SOLUSDT")
    async for test_app in started_app(settings_, None, clock):
        _, beta = await _get(test_app, "/api/bitcoin-beta")
        eth = next(row for row in beta["symbols"] if row["symbol"] == "ETHUSDT")
        assert eth["windows"] == {}
        assert all("too few aligned points" in r for r in eth["unavailable"].values())
        assert eth["unavailable"]


async def test_the_counters_are_reachable_through_the_guard(fake: FakeBybit) -> None:
    from app.main.sources import make_source
    from app.market.sources.base import data_quality_of

    fake.kline_quirk("nan", symbol="ETHUSDT")
    guarded = make_source(exchange_settings(fake.base_url, "BTCUSDT,ETHUSDT"))
    await guarded.start()
    try:
        await guarded.fetch_candles("ETHUSDT", "1m", 20)
        assert data_quality_of(guarded) == {"ETHUSDT": {"candles_filled": 1}}
    finally:
        await guarded.close()


# ----- prices: the market's own tick size ----------------------------------------------


async def test_rows_carry_the_exchange_tick_size(plain_app: QuartTestApp, fake: FakeBybit) -> None:
    """Prices are shown by the market's precision: each row carries the tick size the
    exchange defines (Bybit's priceFilter.tickSize, read through ccxt's markets)."""
    _, desktop = await _get(plain_app, "/api/dashboard/data")
    ticks = {row["symbol"]: row["tick_size"] for row in desktop["symbols"]}
    for symbol, tick in ticks.items():
        assert tick == pytest.approx(float(fake._specs[symbol].tick)), symbol
    assert len(set(ticks.values())) > 1  # BTC and SOL do not share a price step
    _, mobile = await _get(plain_app, "/api/dashboard/mobile")
    assert {card["symbol"]: card["tick_size"] for card in mobile["confluence_scores"]} == {
        symbol: ticks[symbol] for symbol in (c["symbol"] for c in mobile["confluence_scores"])
    }


async def test_live_updates_keep_a_symbol_that_lost_its_price(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    """A symbol whose ticker goes blank gets a market update with nulls (the page shows
    "—"), not silence that would leave its old price on screen."""
    from app.services.live_updates import updates_of

    pipeline = state_of(plain_app).pipeline
    fake.ticker_quirk("ETHUSDT", "absent")
    clock.advance(30)
    await pipeline.refresh(force=True)
    market = {
        symbol: data
        for channel, symbol, data in updates_of(pipeline.latest, pipeline.latest_analysis)
        if channel == "market"
    }
    assert set(market) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
    assert market["ETHUSDT"]["price"] is None and market["BTCUSDT"]["price"] > 0


async def test_the_counts_are_prometheus_metrics(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    pipeline = state_of(plain_app).pipeline
    fake.ticker_quirk("ETHUSDT", "absent")
    fake.ticker_quirk("XRPUSDT", "no_change")
    clock.advance(30)
    await pipeline.refresh(force=True)
    registry = state_of(plain_app).metrics.registry

    def sample(symbol: str, kind: str) -> float:
        labels = {"symbol": symbol, "kind": kind}
        return registry.get_sample_value("virtuoso_exchange_data_quality_total", labels) or 0

    assert sample("ETHUSDT", "ticker_missing") >= 1
    assert sample("XRPUSDT", "ticker_fields_missing") >= 1
    assert sample("BTCUSDT", "ticker_missing") == 0


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("price24hPcnt", "NaN"),
        ("price24hPcnt", "abc"),
        ("lastPrice", "abc"),
        ("volume24h", "Infinity"),
        ("turnover24h", "-"),
        ("prevPrice24h", "NaN"),
    ],
)
async def test_a_ticker_ccxt_cannot_parse_is_that_symbols_problem(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock, field: str, value: str
) -> None:
    """ccxt raises a plain ValueError on such a field and would fail the whole batch:
    the refresh goes on, the symbol stays without a price, counted and named."""
    pipeline = state_of(plain_app).pipeline
    fake.tickers["XRPUSDT"][field] = value
    clock.advance(30)
    snapshot = await pipeline.refresh(force=True)
    assert snapshot is not None and set(snapshot.tickers) == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    _, desktop = await _get(plain_app, "/api/dashboard/data")
    rows = {row["symbol"]: row for row in desktop["symbols"]}
    assert rows["XRPUSDT"]["price"] is None and rows["BTCUSDT"]["price"] > 0
    assert "XRPUSDT/ticker" in desktop["errors"]
    counts = state_of(plain_app).pipeline.source.source.data_quality.counts
    assert counts["XRPUSDT"]["ticker_unparsable"] >= 1


async def test_an_impossible_24h_change_is_not_taken(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    fake.tickers["XRPUSDT"]["price24hPcnt"] = "-2"  # -200%: no price falls below zero
    clock.advance(30)
    await state_of(plain_app).pipeline.refresh(force=True)
    _, desktop = await _get(plain_app, "/api/dashboard/data")
    xrp = next(row for row in desktop["symbols"] if row["symbol"] == "XRPUSDT")
    # The impossible percentage is dropped; the change comes from the 24h open instead.
    prev = float(fake.tickers["XRPUSDT"]["prevPrice24h"])
    expected = (xrp["price"] - prev) / prev * 100
    assert xrp["price"] > 0 and xrp["change_24h"] == pytest.approx(expected, abs=0.01)
    assert xrp["change_24h"] > -100


async def test_an_empty_candle_answer_is_said_not_silent(
    fake: FakeBybit, source: CcxtMarketSource, caplog: pytest.LogCaptureFixture
) -> None:
    fake.kline_quirk("gap", symbol="SOLUSDT", interval="240", at=range(1001))  # no rows
    with caplog.at_level(logging.WARNING, logger="app.market.sources.ccxt"):
        for _ in range(3):
            candles = await source.fetch_candles("SOLUSDT", "4h", 50)
    assert len(candles) == 0 and candles.quality.empty == 1
    assert source.data_quality.counts["SOLUSDT"]["candles_empty"] == 3
    lines = [r for r in caplog.records if "SOLUSDT 4h" in r.getMessage()]
    assert len(lines) == 1 and "candles_empty=1" in lines[0].getMessage()
    assert (await source.fetch_candles("SOLUSDT", "1h", 50)).quality.clean  # others fine


async def test_a_symbol_whose_candles_stop_is_said_in_the_chart_api_and_the_log(
    plain_app: QuartTestApp, fake: FakeBybit, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Candles kept from before a failure are served with the failure named and their
    true age (stale once old), not as fresh; the failure is logged once per episode."""
    pipeline = state_of(plain_app).pipeline
    path = "/api/market/candles/SOLUSDT?timeframe=1m"
    status, before = await _get(plain_app, path)
    assert status == 200 and before["errors"] == {}
    fake.delist("SOLUSDT")
    with caplog.at_level(logging.WARNING, logger="app.services.snapshot"):
        for _ in range(3):
            clock.advance(120)  # past the candles' interval and the view's TTL
            await pipeline.refresh(force=True)
            status, after = await _get(plain_app, path)
    assert status == 200 and "SOLUSDT/candles/1m" in after["errors"]
    assert after["stale"] is True and after["age_ms"] >= 240_000
    assert after["candles"] == before["candles"]  # the older candles, said to be older
    lines = [r for r in caplog.records if "SOLUSDT/candles/1m unavailable" in r.getMessage()]
    assert len(lines) == 1
    assert any("SOLUSDT/orderbook unavailable" in r.getMessage() for r in caplog.records)
