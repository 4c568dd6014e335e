"""The simulated market's perpetuals: deterministic, read off the same prices as its
candles and tickers, moving with its clock, and found through the wrappers."""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.main.sources import make_source
from app.market.models.derivatives import HOUR_MS, Derivatives
from app.market.simulated_universe import SIMULATED_UNIVERSE, SimulatedAsset
from app.market.sources.base import fetch_derivatives
from app.market.sources.guarded import GuardedSource
from app.market.sources.simulated import SimulatedMarket
from app.market.sources.simulated_derivatives import BASELINE_FUNDING, FUNDING_CAP
from tests.conftest import START, ManualClock, make_settings
from tests.unit.test_perpetual_model import assert_plausible

SYMBOLS = [asset.symbol for asset in SIMULATED_UNIVERSE]
EIGHT_HOURS_MS = 8 * HOUR_MS
SMALL_UNIVERSE = (
    SimulatedAsset("BTCUSDT", 97_000.0, 1.0, 0.0, 1.2e9),
    SimulatedAsset("ETHBTC", 0.035, 0.2, 0.3, 2.0e7),
    SimulatedAsset("DOGEUSDT", 0.32, 1.45, 0.60, 1.2e8),
)


async def started(seed: int, clock: ManualClock, universe=SIMULATED_UNIVERSE) -> SimulatedMarket:
    market = SimulatedMarket(seed=seed, clock=clock, universe=universe)
    await market.start()
    return market


async def read(market: SimulatedMarket, symbol: str) -> Derivatives:
    return (await market.fetch_derivatives([symbol])).by_symbol[symbol]


def expected_funding(return_8h: float) -> float:
    return min(FUNDING_CAP, max(-FUNDING_CAP, BASELINE_FUNDING + 0.02 * return_8h))


@pytest.mark.fresh_simulated_history
async def test_same_seed_and_clock_give_the_same_positioning(clock: ManualClock) -> None:
    first = await (await started(7, clock)).fetch_derivatives(SYMBOLS)
    second = await (await started(7, ManualClock(clock.now))).fetch_derivatives(SYMBOLS)
    assert first == second and set(first.by_symbol) == set(SYMBOLS)
    other = await (await started(8, ManualClock(clock.now))).fetch_derivatives(["BTCUSDT"])
    assert other.by_symbol["BTCUSDT"].funding_history != first.by_symbol["BTCUSDT"].funding_history


@pytest.mark.parametrize("symbol", ["BTCUSDT", "SOLUSDT", "PEPEUSDT"])
async def test_funding_is_settled_from_the_hourly_candles(clock: ManualClock, symbol: str) -> None:
    """Each settlement's rate is the baseline plus 0.02 × the 8 h log return of the
    hourly closes the market serves; settlements at 00/08/16 UTC, the next one after."""
    market = await started(7, clock)
    d = await read(market, symbol)
    candles = await market.fetch_candles(symbol, "1h", 400)
    at_boundary = dict(
        zip((candles.timestamp_ms + HOUR_MS).tolist(), candles.close.tolist(), strict=True)
    )
    assert len(d.funding_history) == 21
    for stamp, rate in d.funding_history:
        assert stamp % EIGHT_HOURS_MS == 0
        change = math.log(at_boundary[stamp] / at_boundary[stamp - EIGHT_HOURS_MS])
        assert rate == pytest.approx(expected_funding(change), abs=1e-8)
    last = d.funding_history[-1][0]
    assert last <= d.timestamp_ms < last + EIGHT_HOURS_MS
    assert d.next_funding_time_ms == last + EIGHT_HOURS_MS
    assert d.next_funding_time_ms // HOUR_MS % 24 in {0, 8, 16}


async def test_funding_and_the_ratio_follow_the_last_8_hours(clock: ManualClock) -> None:
    """Predicted funding's premium has the sign of the live price against the close 8 h
    ago, and the long/short ratio leans the same way; over a day of clock times."""
    market = await started(7, clock)
    signs = set()
    for _ in range(12):
        clock.advance(2 * 3600 + 37)
        for symbol in ("BTCUSDT", "ETHUSDT", "DOGEUSDT"):
            d = await read(market, symbol)
            last = (await market.fetch_tickers([symbol]))[symbol].last
            minutes = await market.fetch_candles(symbol, "1m", 600)
            ends = minutes.timestamp_ms + 60_000
            then = minutes.close[ends <= d.timestamp_ms - EIGHT_HOURS_MS][-1]
            change = math.log(last / then)
            assert d.funding_rate == pytest.approx(expected_funding(change), abs=1e-8)
            premium = (d.funding_rate or 0) - BASELINE_FUNDING
            if abs(premium) > 1e-5:
                assert np.sign(premium) == np.sign(change)
                assert np.sign((d.long_short_ratio or 0) - 1) == np.sign(premium)
                signs.add(np.sign(premium))
    assert signs == {-1.0, 1.0}  # both kinds of trend were seen


async def test_open_interest_history_is_hourly_and_its_changes_read_it(
    clock: ManualClock,
) -> None:
    market = await started(7, clock)
    derivatives = await market.fetch_derivatives(SYMBOLS)
    tickers = await market.fetch_tickers(SYMBOLS)
    changes_24h = []
    for symbol, d in derivatives.by_symbol.items():
        history = d.open_interest_history
        stamps = [stamp for stamp, _ in history]
        assert len(history) >= 25 and set(np.diff(stamps).tolist()) == {HOUR_MS}
        assert stamps[-1] <= d.timestamp_ms < stamps[-1] + HOUR_MS
        assert d.open_interest is not None and d.open_interest_value is not None
        assert d.open_interest_value == pytest.approx(
            d.open_interest * tickers[symbol].last, abs=0.01
        )
        by_stamp = dict(history)
        for hours in (1, 24):
            then = by_stamp[stamps[-1] - hours * HOUR_MS]
            change = d.open_interest_change_pct(hours)
            assert change == pytest.approx((d.open_interest / then - 1) * 100)
        assert abs(d.open_interest_change_pct(1) or 0) < 5, symbol
        changes_24h.append(abs(d.open_interest_change_pct(24) or 0))
    assert max(changes_24h) < 30 and 0.2 < float(np.median(changes_24h)) < 15


async def test_history_stays_put_and_values_move_smoothly_with_the_clock(
    clock: ManualClock,
) -> None:
    market = await started(7, clock)
    before = await read(market, "ETHUSDT")
    previous = before
    for _ in range(12 * 30):  # 30 minutes in 5-second steps
        clock.advance(5)
        now = await read(market, "ETHUSDT")
        assert now.open_interest == pytest.approx(previous.open_interest, rel=0.005)
        previous = now
    clock.advance(3600)
    after = await read(market, "ETHUSDT")
    assert after.timestamp_ms > before.timestamp_ms
    for name in ("funding_history", "open_interest_history", "long_short_history"):
        old, new = dict(getattr(before, name)), dict(getattr(after, name))
        shared = set(old) & set(new)
        assert shared and all(old[stamp] == new[stamp] for stamp in shared), name
        assert max(new) > max(old) or name == "funding_history"


async def test_contracts_and_what_has_none(clock: ManualClock) -> None:
    market = await started(7, clock, SMALL_UNIVERSE)
    assert market.market_assets()["ETHBTC"] == ("ETH", "BTC")
    read_ = await market.fetch_derivatives(["BTCUSDT", "ETHBTC", "DOGEUSDT", "NOPEUSDT"])
    assert {s: d.contract for s, d in read_.by_symbol.items()} == {
        "BTCUSDT": "BTC/USDT:USDT",
        "DOGEUSDT": "DOGE/USDT:USDT",
    }
    assert read_.unavailable["ETHBTC"].startswith("no linear perpetual")
    assert "not listed" in read_.unavailable["NOPEUSDT"]
    market.delist("DOGEUSDT")
    assert "delisted" in (await market.fetch_derivatives(["DOGEUSDT"])).unavailable["DOGEUSDT"]
    market.relist("DOGEUSDT")
    assert "DOGEUSDT" in (await market.fetch_derivatives(["DOGEUSDT"])).by_symbol


@pytest.mark.fresh_simulated_history
@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), days=st.floats(0, 3650))
def test_any_seed_and_time_give_plausible_values(seed: int, days: float) -> None:
    async def positioning() -> list[Derivatives]:
        market = await started(seed, ManualClock(START + days * 86_400), SMALL_UNIVERSE)
        found = await market.fetch_derivatives(["BTCUSDT", "ETHBTC", "DOGEUSDT"])
        assert set(found.unavailable) == {"ETHBTC"}
        return list(found.by_symbol.values())

    for d in asyncio.run(positioning()):
        assert_plausible(d)


async def test_found_through_the_guard(clock: ManualClock) -> None:
    market = await started(7, clock)
    guarded = GuardedSource(market)
    await guarded.start()
    assert await fetch_derivatives(guarded, ["BTCUSDT", "NOPEUSDT"]) == (
        await market.fetch_derivatives(["BTCUSDT", "NOPEUSDT"])
    )


@pytest.mark.parametrize("streams", ["on", "off"])
async def test_found_in_the_embedded_source(clock: ManualClock, streams: str) -> None:
    """The simulated market as the embedded app wraps it (streams on: behind its feed)."""
    source = make_source(make_settings(VIRTUOSO_STREAMS=streams))
    market = getattr(source, "source", source)
    assert isinstance(market, SimulatedMarket)
    market.clock = clock
    await source.start()
    try:
        found = await fetch_derivatives(source, ["BTCUSDT"])
        assert found.by_symbol["BTCUSDT"].contract == "BTC/USDT:USDT"
    finally:
        await source.close()
