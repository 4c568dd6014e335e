"""Orderflow from feeds beyond candles: open interest against price, CVD of real trades,
and the hour's price change read from candles."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.market.analytics.orderflow_feeds import (
    MIN_TRADES,
    open_interest_score,
    price_change_pct,
    taker_imbalance,
    trade_cvd_score,
)
from app.market.models.candles import Candles
from app.market.models.trades import PublicTrade

TANH_1 = math.tanh(1.0)
changes = st.floats(-50, 50)


# --- open interest against price ------------------------------------------------------


def test_open_interest_hand_computed() -> None:
    # OI +1 %, price +0.2 %: direction tanh(0.2/0.2) = 0.76159, x = 0.76159·1·1
    # → 50 + 50·tanh(0.76159) = 50 + 32.101 = 82.101: new positions behind a rise
    assert open_interest_score(1.0, 0.2) == pytest.approx(50 + 50 * math.tanh(TANH_1))
    assert open_interest_score(1.0, 0.2) == pytest.approx(82.1007, abs=1e-4)
    # OI +1 %, price -0.2 %: the mirror, 50 - 32.101 = 17.899: new positions behind a drop
    assert open_interest_score(1.0, -0.2) == pytest.approx(17.8993, abs=1e-4)
    # OI -1 %, price +0.2 %: closing (k = 0.6), x = -0.6·0.76159 = -0.45696
    # → 50 - 50·tanh(0.45696) = 50 - 21.380 = 28.620
    assert open_interest_score(-1.0, 0.2) == pytest.approx(50 - 50 * math.tanh(0.6 * TANH_1))
    assert open_interest_score(-1.0, 0.2) == pytest.approx(28.6200, abs=1e-4)
    # OI -1 %, price -0.2 %: shorts opened earlier closing into the drop, 50 + 21.380 = 71.380
    assert open_interest_score(-1.0, -0.2) == pytest.approx(71.3800, abs=1e-4)


@pytest.mark.parametrize(("oi", "price"), [(0.0, 3.0), (5.0, 0.0), (-5.0, 0.0), (0.0, 0.0)])
def test_open_interest_is_neutral_when_either_change_is_zero(oi: float, price: float) -> None:
    assert open_interest_score(oi, price) == 50.0


@pytest.mark.parametrize(
    ("oi", "price"), [(None, 1.0), (1.0, None), (math.nan, 1.0), (1.0, math.inf)]
)
def test_open_interest_without_both_changes_is_unavailable(
    oi: float | None, price: float | None
) -> None:
    assert open_interest_score(oi, price) is None


@given(oi=changes, price=changes)
def test_open_interest_bounded_and_mirrored_by_the_price(oi: float, price: float) -> None:
    score, mirrored = open_interest_score(oi, price), open_interest_score(oi, -price)
    assert score is not None and mirrored is not None and 0.0 <= score <= 100.0
    assert score + mirrored == pytest.approx(100.0, abs=1e-9)


@given(a=changes, b=changes, price=st.floats(0.01, 50))
def test_more_open_interest_behind_a_rise_scores_higher(a: float, b: float, price: float) -> None:
    low, high = sorted((a, b))
    assert open_interest_score(high, price) >= open_interest_score(low, price)  # type: ignore[operator]


@given(oi=st.floats(0.01, 50), price=st.floats(0.01, 50))
def test_closing_positions_say_less_than_opening_ones(oi: float, price: float) -> None:
    opening, closing = open_interest_score(oi, price), open_interest_score(-oi, price)
    assert opening is not None and closing is not None
    assert abs(closing - 50) <= abs(opening - 50)


# --- CVD from trades ------------------------------------------------------------------


def trades(buys: int, sells: int, amount: float = 1.0) -> list[PublicTrade]:
    out = [PublicTrade(i, 100.0, amount, "buy") for i in range(buys)]
    out += [PublicTrade(buys + i, 100.0, amount, "sell") for i in range(sells)]
    return out


def test_trade_cvd_hand_computed() -> None:
    # 20 buys, 10 sells of 1: (20 - 10)/30 = 1/3, / 0.3 = 1.111 → 50 + 50·tanh(1.111) = 90.223
    assert taker_imbalance(trades(20, 10)) == pytest.approx(1 / 3)
    assert trade_cvd_score(trades(20, 10)) == pytest.approx(50 + 50 * math.tanh(10 / 9))
    assert trade_cvd_score(trades(20, 10)) == pytest.approx(90.2227, abs=1e-4)
    # sizes count, not trades: 10 buys of 3 against 20 sells of 1 → (30 - 20)/50 = 0.2
    mixed = trades(10, 0, 3.0) + trades(0, 20)
    assert taker_imbalance(mixed) == pytest.approx(0.2)
    assert trade_cvd_score(trades(15, 15)) == 50.0


def test_too_few_or_bad_trades_are_unavailable() -> None:
    assert trade_cvd_score(None) is None
    assert trade_cvd_score([]) is None
    assert trade_cvd_score(trades(MIN_TRADES - 1, 0)) is None
    bad = [PublicTrade(0, 100.0, a, "buy") for a in (math.nan, -1.0, 0.0, math.inf)] * 10
    assert trade_cvd_score(bad) is None
    # bad trades are left out of the sums, good ones still count
    assert taker_imbalance(bad + trades(10, 30)) == pytest.approx(-0.5)


@given(
    amounts=st.lists(st.floats(1e-6, 1e6), min_size=MIN_TRADES, max_size=60),
    sides=st.lists(st.booleans(), min_size=60, max_size=60),
)
def test_trade_cvd_bounded_and_mirrored_by_the_sides(
    amounts: list[float], sides: list[bool]
) -> None:
    tape = [
        PublicTrade(i, 1.0, a, "buy" if up else "sell")
        for i, (a, up) in enumerate(zip(amounts, sides, strict=False))
    ]
    flipped = [
        PublicTrade(t.timestamp_ms, t.price, t.amount, "sell" if t.side == "buy" else "buy")
        for t in tape
    ]
    score, mirrored = trade_cvd_score(tape), trade_cvd_score(flipped)
    assert score is not None and mirrored is not None and 0.0 <= score <= 100.0
    assert score + mirrored == pytest.approx(100.0, abs=1e-9)


@given(buys=st.integers(0, 40), more=st.integers(1, 40))
def test_more_taker_buying_scores_higher(buys: int, more: int) -> None:
    base = trades(buys, 40)
    assert trade_cvd_score(base + trades(more, 0)) > trade_cvd_score(base)  # type: ignore[operator]


# --- the hour's price change from candles ---------------------------------------------


def candles(timeframe: str, step_ms: int, close: np.ndarray) -> Candles:
    ts = np.arange(close.shape[0], dtype=np.int64) * step_ms
    return Candles("X", timeframe, ts, close, close, close, close, np.ones_like(close))


def test_price_change_over_an_hour_of_1m_candles() -> None:
    close = np.linspace(100.0, 119.0, 120)
    # the newest candle opened at 119 min; the newest opened at or before 59 min is #59
    expected = (close[-1] / close[59] - 1) * 100
    assert price_change_pct(candles("1m", 60_000, close)) == pytest.approx(expected)


def test_price_change_from_30m_candles_is_two_candles_back() -> None:
    close = np.array([100.0, 101.0, 102.0, 104.04])
    # the newest opened at 90 min; at or before 30 min is #1 (101): 104.04/101 - 1 = 3.01 %
    assert price_change_pct(candles("30m", 1_800_000, close)) == pytest.approx(
        (104.04 / 101.0 - 1) * 100
    )


@pytest.mark.parametrize(
    ("timeframe", "step_ms", "n"),
    [("4h", 14_400_000, 50), ("1d", 86_400_000, 50), ("1m", 60_000, 60), ("1m", 60_000, 1)],
)
def test_price_change_needs_a_short_timeframe_spanning_the_hour(
    timeframe: str, step_ms: int, n: int
) -> None:
    assert price_change_pct(candles(timeframe, step_ms, np.full(n, 100.0))) is None


def test_price_change_with_a_bad_close_is_unavailable() -> None:
    close = np.r_[np.zeros(10), np.full(60, 100.0)]
    assert price_change_pct(candles("1m", 60_000, close)) is None
