"""The simulated perpetuals' model on price paths made by hand: hand-computed values,
a drop and a rise read the way a trader reads them, and bounds on any path."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.market.models.derivatives import HOUR_MS, Derivatives
from app.market.sources.simulated_derivatives import (
    BASELINE_FUNDING,
    FUNDING_CAP,
    LIQUIDATION_CAP,
    LIQUIDATION_FLOOR,
    OI_DECAY,
    PerpetualPath,
    funding_rates,
    hourly_volatility,
    long_short_ratios,
    open_interest_level,
    perpetual_positioning,
)

START_MS = 1_790_006_400_000  # a settlement (00:00 UTC)
VOL = 0.006  # σ of an hour's log return
BASE = 20_000.0  # contracts
HOURS = 400


def path_of(hourly: np.ndarray, last_hour: np.ndarray | None = None) -> PerpetualPath:
    """A path of ``hourly`` log returns (one per hour) walked in equal minute steps; the
    last hour's minutes follow ``last_hour`` (60 log returns) when given. The clock is
    at the end of the last minute (an hour boundary)."""
    minutes = np.repeat(np.asarray(hourly, dtype=float) / 60, 60)
    if last_hour is not None:
        minutes[-60:] = last_hour
    log_close = 4.0 + np.cumsum(minutes)
    log_open = np.r_[4.0, log_close[:-1]]
    starts = START_MS + np.arange(minutes.size) * 60_000
    now_ms = int(starts[-1]) + 60_000
    kept = starts >= now_ms - 9 * HOUR_MS
    return PerpetualPath(
        symbol="BTCUSDT",
        contract="BTC/USDT:USDT",
        now_ms=now_ms,
        price=float(np.exp(log_close[-1])),
        hour_ms=starts[59::60] + 60_000,
        hour_price=np.exp(log_close[59::60]),
        minute_ms=starts[kept],
        minute_high=np.exp(np.maximum(log_open, log_close))[kept],
        minute_low=np.exp(np.minimum(log_open, log_close))[kept],
        minute_close=np.exp(log_close)[kept],
        hourly_vol=VOL,
        base_open_interest=BASE,
    )


def noise(seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, VOL, HOURS)


def test_funding_is_the_baseline_plus_a_capped_premium() -> None:
    rates = funding_rates(np.array([0.0, 0.01, -0.02, 1.0, -1.0]))
    assert rates.tolist() == pytest.approx([0.0001, 0.0003, -0.0003, 0.0075, -0.0075])


def test_the_long_short_ratio_leans_with_funding() -> None:
    ratios = long_short_ratios(np.array([0.0001, 0.0011, -0.0009, 0.0075, -0.0075]))
    lean = 0.5 * math.tanh(1.0)
    assert ratios.tolist() == pytest.approx(
        [1.0, math.exp(lean), math.exp(-lean), math.exp(0.5), math.exp(-0.5)], abs=1e-4
    )


def test_open_interest_level_is_a_decayed_sum_of_hourly_impulses() -> None:
    z = np.array([1.0, -1.0, 2.0])
    f = [0.006 * (abs(x) - math.sqrt(2 / math.pi)) + 0.01 * x for x in z]
    expected = f[2] + OI_DECAY * f[1] + OI_DECAY**2 * f[0]
    assert open_interest_level(z).tolist() == pytest.approx([expected])
    # a full window: one value per hour that has one
    assert open_interest_level(np.zeros(300)).size == 300 - 288 + 1


def test_hourly_volatility_of_the_factor_model() -> None:
    assert hourly_volatility(1.0, 0.0, 0.55) == pytest.approx(0.55 / math.sqrt(8760))
    assert hourly_volatility(2.0, 0.3, 0.5) == pytest.approx(math.sqrt(1.09) / math.sqrt(8760))


def test_a_flat_market_pays_the_baseline_and_is_balanced() -> None:
    d = perpetual_positioning(path_of(np.zeros(HOURS)))
    assert d.funding_rate == BASELINE_FUNDING
    assert d.long_short_ratio == 1.0
    assert all(rate == BASELINE_FUNDING for _, rate in d.funding_history)
    assert d.liquidations is not None and d.open_interest_value is not None
    floor = round(d.open_interest_value * LIQUIDATION_FLOOR, 2)
    assert d.liquidations.long_value == d.liquidations.short_value == floor
    # at an hour boundary the level is that of the history's newest point
    assert d.open_interest == d.open_interest_history[-1][1]
    assert d.open_interest_change_pct(24) == pytest.approx(0.0, abs=1e-6)


def test_a_sharp_drop_turns_funding_down_and_liquidates_longs() -> None:
    calm = perpetual_positioning(path_of(noise()))
    crash = np.r_[np.zeros(30), np.full(30, -0.06 / 30)]  # −6 % in the last half hour
    drop = perpetual_positioning(path_of(noise(), last_hour=crash))
    assert drop.funding_rate is not None and calm.funding_rate is not None
    assert drop.funding_rate < calm.funding_rate and drop.funding_rate < BASELINE_FUNDING
    assert drop.long_short_ratio is not None and drop.long_short_ratio < 1.0
    liquidated = drop.liquidations
    assert liquidated is not None and liquidated.long_value > 20 * liquidated.short_value
    assert liquidated.long_count > liquidated.short_count
    change = drop.open_interest_change_pct(1)
    assert change is not None and change < 0  # longs closed out
    assert liquidated.long_value <= LIQUIDATION_CAP * (drop.open_interest_value or 0)


def test_a_sharp_rise_turns_funding_up_and_liquidates_shorts() -> None:
    squeeze = np.r_[np.zeros(30), np.full(30, 0.06 / 30)]
    rise = perpetual_positioning(path_of(noise(), last_hour=squeeze))
    assert rise.funding_rate is not None and rise.funding_rate > BASELINE_FUNDING
    assert rise.long_short_ratio is not None and rise.long_short_ratio > 1.0
    liquidated = rise.liquidations
    assert liquidated is not None and liquidated.short_value > 20 * liquidated.long_value
    change = rise.open_interest_change_pct(1)
    assert change is not None and change > 0


def test_histories_are_regular_and_end_at_the_clock() -> None:
    d = perpetual_positioning(path_of(noise()))
    assert len(d.funding_history) == 21 and len(d.open_interest_history) == 49
    for history, spacing in (
        (d.funding_history, 8 * HOUR_MS),
        (d.open_interest_history, HOUR_MS),
        (d.long_short_history, HOUR_MS),
    ):
        stamps = [stamp for stamp, _ in history]
        assert set(np.diff(stamps).tolist()) == {spacing}
        assert stamps[-1] <= d.timestamp_ms < stamps[-1] + spacing
    assert all(stamp % (8 * HOUR_MS) == 0 for stamp, _ in d.funding_history)
    assert d.next_funding_time_ms == d.timestamp_ms + 8 * HOUR_MS  # the clock is on one


def test_too_short_a_path_is_refused() -> None:
    with pytest.raises(ValueError, match="hour boundaries"):
        perpetual_positioning(path_of(np.zeros(5)))


def assert_plausible(d: Derivatives) -> None:
    """Finite, within the exchange's bounds, positive where it must be."""
    assert d.funding_rate is not None and abs(d.funding_rate) <= FUNDING_CAP
    assert all(abs(rate) <= FUNDING_CAP for _, rate in d.funding_history)
    assert d.long_short_ratio is not None and 0 < d.long_short_ratio < math.inf
    assert all(0 < ratio < math.inf for _, ratio in d.long_short_history)
    assert d.open_interest is not None and 0 < d.open_interest < math.inf
    assert d.open_interest_value is not None and 0 < d.open_interest_value < math.inf
    assert all(0 < oi < math.inf for _, oi in d.open_interest_history)
    liquidated = d.liquidations
    assert liquidated is not None
    sides = (
        (liquidated.long_value, liquidated.long_count),
        (
            liquidated.short_value,
            liquidated.short_count,
        ),
    )
    for value, count in sides:
        assert 0 <= value <= LIQUIDATION_CAP * d.open_interest_value + 0.01 and count >= 0
    for hours in (1, 24):
        change = d.open_interest_change_pct(hours)
        assert change is None or math.isfinite(change)


@settings(max_examples=60, deadline=None)
@given(
    hourly=st.lists(st.floats(-0.5, 0.5), min_size=12, max_size=HOURS),
    last_hour=st.lists(st.floats(-0.2, 0.2), min_size=60, max_size=60),
    vol=st.floats(1e-4, 0.05),
)
def test_any_path_gives_bounded_values(
    hourly: list[float], last_hour: list[float], vol: float
) -> None:
    path = path_of(np.array(hourly), last_hour=np.array(last_hour))
    assert_plausible(perpetual_positioning(replace(path, hourly_vol=vol)))
