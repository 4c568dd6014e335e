"""The simulated market: deterministic, consistent across timeframes, recovers its betas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.market.analytics.beta import BETA_WINDOWS, compute_beta
from app.market.errors import ExchangeRejected, SymbolNotListed
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.simulated_universe import SIMULATED_UNIVERSE
from app.market.sources.simulated import BTC_ANNUAL_VOL, SimulatedMarket
from tests.conftest import ManualClock

# The tests comparing builds build their own history (``fresh_simulated_history``); the
# others read the properties of one build, remembered per worker (tests/support/markets.py).

SYMBOLS = [asset.symbol for asset in SIMULATED_UNIVERSE]


async def started(seed: int, clock: ManualClock) -> SimulatedMarket:
    market = SimulatedMarket(seed=seed, clock=clock)
    await market.start()
    return market


@pytest.mark.fresh_simulated_history
async def test_same_seed_and_clock_give_the_same_market(clock: ManualClock) -> None:
    first, second = await started(7, clock), await started(7, ManualClock(clock.now))
    assert await first.fetch_tickers(SYMBOLS) == await second.fetch_tickers(SYMBOLS)
    a = await first.fetch_candles("ETHUSDT", "1h", 50)
    b = await second.fetch_candles("ETHUSDT", "1h", 50)
    np.testing.assert_allclose(a.close, b.close, rtol=1e-12)
    other = await started(8, ManualClock(clock.now))
    assert (await other.fetch_tickers(["BTCUSDT"]))["BTCUSDT"].last != pytest.approx(
        (await first.fetch_tickers(["BTCUSDT"]))["BTCUSDT"].last
    )


@pytest.mark.fresh_simulated_history
async def test_it_advances_with_the_clock(clock: ManualClock) -> None:
    market = await started(7, clock)
    before = await market.fetch_candles("BTCUSDT", "1m", 5)
    price_before = (await market.fetch_tickers(["BTCUSDT"]))["BTCUSDT"].last
    clock.advance(180)
    after = await market.fetch_candles("BTCUSDT", "1m", 5)
    assert after.timestamp_ms[-1] - before.timestamp_ms[-1] == 180_000
    assert (await market.fetch_tickers(["BTCUSDT"]))["BTCUSDT"].last != price_before
    # advancing incrementally lands on the same path as generating it at once
    fresh = await started(7, ManualClock(clock.now))
    np.testing.assert_allclose(
        (await fresh.fetch_candles("BTCUSDT", "1m", 5)).close, after.close, rtol=1e-9
    )


@pytest.mark.parametrize("timeframe", ["5m", "30m", "1h", "4h"])
async def test_higher_timeframes_aggregate_the_minutes(clock: ManualClock, timeframe: str) -> None:
    market = await started(7, clock)
    per_candle = TIMEFRAME_SECONDS[timeframe] // 60
    minutes = await market.fetch_candles("SOLUSDT", "1m", 1500)
    higher = await market.fetch_candles("SOLUSDT", timeframe, 400)
    complete = higher.tail(4)
    for index in range(len(complete) - 1):  # the newest one is still forming
        start = complete.timestamp_ms[index]
        inside = (minutes.timestamp_ms >= start) & (
            minutes.timestamp_ms < start + TIMEFRAME_SECONDS[timeframe] * 1000
        )
        if inside.sum() != per_candle:
            continue  # older than the minutes kept
        assert complete.open[index] == pytest.approx(minutes.open[inside][0])
        assert complete.high[index] == pytest.approx(minutes.high[inside].max())
        assert complete.low[index] == pytest.approx(minutes.low[inside].min())
        assert complete.close[index] == pytest.approx(minutes.close[inside][-1])
        assert complete.volume[index] == pytest.approx(minutes.volume[inside].sum())


async def test_tickers_books_and_candles_are_coherent(clock: ManualClock) -> None:
    market = await started(7, clock)
    tickers = await market.fetch_tickers(SYMBOLS)
    assert set(tickers) == set(SYMBOLS)
    for symbol, ticker in tickers.items():
        assert ticker.low_24h <= ticker.last <= ticker.high_24h
        assert ticker.bid < ticker.last < ticker.ask
        assert ticker.change_24h_pct == pytest.approx((ticker.last / ticker.open_24h - 1) * 100)
        assert ticker.quote_volume_24h > 0
        book = await market.fetch_order_book(symbol, 20)
        assert book.bids.shape == book.asks.shape == (20, 2)
        assert np.all(np.diff(book.bids[:, 0]) < 0) and np.all(np.diff(book.asks[:, 0]) > 0)
        assert book.bids[0, 0] < book.asks[0, 0]
        candles = await market.fetch_candles(symbol, "5m", 288)
        assert len(candles) == 288
        assert np.all(candles.high >= np.maximum(candles.open, candles.close))
        assert np.all(candles.low <= np.minimum(candles.open, candles.close))
        assert candles.close[-1] == pytest.approx(ticker.last)


async def test_turnover_is_realistic(clock: ManualClock) -> None:
    market = await started(7, clock)
    tickers = await market.fetch_tickers(SYMBOLS)
    for asset in SIMULATED_UNIVERSE:
        ratio = tickers[asset.symbol].quote_volume_24h / asset.daily_turnover
        assert 0.3 < ratio < 3, (asset.symbol, ratio)  # within noise and the 31-day price drift


async def test_unknown_symbol_and_timeframe_are_refused(clock: ManualClock) -> None:
    market = await started(7, clock)
    with pytest.raises(SymbolNotListed, match="FOOUSDT"):
        await market.fetch_tickers(["FOOUSDT"])
    with pytest.raises(ExchangeRejected, match="valid: 1m, 5m"):
        await market.fetch_candles("BTCUSDT", "2h", 10)


async def test_computed_beta_recovers_the_true_betas(clock: ManualClock) -> None:
    """Tolerance: four standard errors of the OLS slope, se = (σ_idio / σ_btc) / √n
    (both annual vols scale alike per period), for every symbol and window."""
    market = await started(7, clock)
    for timeframe, window in BETA_WINDOWS.items():
        btc = await market.fetch_candles("BTCUSDT", timeframe, window + 1)
        for asset in SIMULATED_UNIVERSE[1:]:
            candles = await market.fetch_candles(asset.symbol, timeframe, window + 1)
            stats = compute_beta(candles, btc, window)
            assert stats is not None and stats.points == window
            tolerance = 4 * (asset.idio_vol / BTC_ANNUAL_VOL) / math.sqrt(window)
            assert abs(stats.beta - asset.beta) <= tolerance, (asset.symbol, timeframe, stats.beta)
