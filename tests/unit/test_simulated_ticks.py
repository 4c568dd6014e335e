"""The simulated market's ticks between its 5-second steps: deterministic, near the step
price with the model's volatility per unit time, stamped with the tick's time."""

from __future__ import annotations

import math

import numpy as np
import pytest

from app.market.simulated_universe import SIMULATED_UNIVERSE
from app.market.sources.simulated import (
    BTC_ANNUAL_VOL,
    PRICE_DIGITS,
    STEP_SECONDS,
    STEPS_PER_YEAR,
    TICKS_PER_SECOND,
    TICKS_PER_STEP,
    SimulatedMarket,
)
from tests.conftest import START, ManualClock

SYMBOLS = [asset.symbol for asset in SIMULATED_UNIVERSE]
TICK = 1 / TICKS_PER_SECOND
ROUNDING = 10.0 ** (1 - PRICE_DIGITS)  # relative: two prices, each to PRICE_DIGITS digits
# A step's standard deviation of log returns, by symbol: β·σ_btc and σ_idio combined.
STEP_SIGMA = {
    a.symbol: math.hypot(a.beta * BTC_ANNUAL_VOL, a.idio_vol) / math.sqrt(STEPS_PER_YEAR)
    for a in SIMULATED_UNIVERSE
}


async def started(clock: ManualClock, seed: int = 7) -> SimulatedMarket:
    market = SimulatedMarket(seed=seed, clock=clock)
    await market.start()
    return market


def test_the_start_is_a_step_boundary() -> None:
    assert START % STEP_SECONDS == 0  # the tests below count ticks from START


async def test_same_seed_and_clock_give_the_same_ticks(clock: ManualClock) -> None:
    other_clock = ManualClock(clock.now)
    first, second = await started(clock), await started(other_clock)
    for _ in range(2 * TICKS_PER_STEP):
        clock.advance(TICK)
        other_clock.advance(TICK)
        assert first.tickers_now(SYMBOLS) == second.tickers_now(SYMBOLS)
    other = await started(ManualClock(clock.now), seed=8)
    assert other.tickers_now(["BTCUSDT"]) != first.tickers_now(["BTCUSDT"])


async def test_ticks_move_within_a_step_and_stay_near_its_price(clock: ManualClock) -> None:
    """Bound: six standard deviations of the walk after k ticks, σ_step·√(k/ticks per
    step), plus the rounding of both prices."""
    market = await started(clock)
    step = market.tickers_now(SYMBOLS)
    candles = {s: await market.fetch_candles(s, "1m", 3) for s in SYMBOLS}
    seen: dict[str, set[float]] = {s: set() for s in SYMBOLS}
    for k in range(TICKS_PER_STEP):
        clock.now = START + k * TICK
        for symbol, ticker in market.tickers_now(SYMBOLS).items():
            seen[symbol].add(ticker.last)
            sigma = STEP_SIGMA[symbol] * math.sqrt(k / TICKS_PER_STEP)
            bound = 6 * sigma + ROUNDING
            assert abs(math.log(ticker.last / step[symbol].last)) <= bound, (symbol, k)
    assert all(len(prices) > TICKS_PER_STEP // 2 for prices in seen.values()), seen
    # candles keep the step structure: nothing moved inside the step
    for symbol in SYMBOLS:
        np.testing.assert_array_equal(
            (await market.fetch_candles(symbol, "1m", 3)).close, candles[symbol].close
        )
    clock.now = START + STEP_SECONDS  # the next step: the walk starts again at its price
    after = market.tickers_now(SYMBOLS)
    for symbol in SYMBOLS:
        close = (await market.fetch_candles(symbol, "1m", 1)).close[-1]
        assert after[symbol].last == pytest.approx(close, rel=1e-12)


async def test_the_walk_has_the_models_volatility_per_unit_time(clock: ManualClock) -> None:
    """Over 600 steps × 25 symbols, the squared log distance from the step price after
    k ticks, in units of σ_step²·k/ticks per step, averages 1: its standard error is
    about 0.04 (the shared BTC factor correlates the symbols), the tolerance ~4 of them."""
    market = await started(clock)
    ticks = (1, TICKS_PER_STEP // 2, TICKS_PER_STEP - 1)
    scaled: dict[int, list[float]] = {k: [] for k in ticks}
    for step in range(600):  # the clock only moves forward, as a market's does
        clock.now = START + step * STEP_SECONDS
        at_step = market.tickers_now(SYMBOLS)
        for k in ticks:
            clock.now = START + step * STEP_SECONDS + k * TICK
            for symbol, ticker in market.tickers_now(SYMBOLS).items():
                variance = STEP_SIGMA[symbol] ** 2 * k / TICKS_PER_STEP
                scaled[k].append(math.log(ticker.last / at_step[symbol].last) ** 2 / variance)
    for k, values in scaled.items():
        assert 0.85 < float(np.mean(values)) < 1.15, (k, np.mean(values))


async def test_tickers_carry_the_tick_time_and_a_coherent_quote(clock: ManualClock) -> None:
    market = await started(clock)
    for k in range(TICKS_PER_STEP):
        clock.now = START + k * TICK + TICK / 3  # between two ticks: the earlier one's
        for symbol, ticker in market.tickers_now(SYMBOLS).items():
            assert ticker.timestamp_ms == round(START * 1000) + k * 1000 // TICKS_PER_SECOND
            assert ticker.bid < ticker.last < ticker.ask
            assert ticker.low_24h <= ticker.last <= ticker.high_24h
            assert ticker.change_24h_pct == pytest.approx((ticker.last / ticker.open_24h - 1) * 100)
            book = await market.fetch_order_book(symbol, 5)
            assert book.bids[0, 0] == pytest.approx(ticker.bid, rel=1e-12)
            assert book.asks[0, 0] == pytest.approx(ticker.ask, rel=1e-12)
            assert book.timestamp_ms == ticker.timestamp_ms


async def test_fetch_tickers_is_the_tick(clock: ManualClock) -> None:
    market = await started(clock)
    clock.advance(3.5)
    assert await market.fetch_tickers(SYMBOLS) == market.tickers_now(SYMBOLS)
    market.delist("SOLUSDT")
    assert "SOLUSDT" not in market.tickers_now(SYMBOLS)
