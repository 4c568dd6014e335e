"""The confluence with derivatives and trades: sentiment as the sixth component,
orderflow's open interest, CVD from real trades; fallbacks when they are absent."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from app.market.analytics.confluence import (
    NO_SENTIMENT,
    ORDERFLOW_WEIGHTS,
    combine_timeframes,
    score_timeframe,
)
from app.market.analytics.orderflow_feeds import (
    open_interest_score,
    price_change_pct,
    trade_cvd_score,
)
from app.market.analytics.sentiment import NO_POSITIONING, sentiment_score
from app.market.models.candles import Candles
from app.market.models.confluence_weights import COMPONENTS, DEFAULT_COMPONENT_WEIGHTS
from app.market.models.derivatives import HOUR_MS, Derivatives, Liquidations
from app.market.models.trades import PublicTrade
from tests.unit.test_confluence import (
    WEIGHTS,
    assert_bounded,
    book,
    candle_series,
    candles_from_close,
    flat_candles,
    order_books,
    trending,
)

T0 = 1_700_000_000_000


def positioning(
    funding: float | None = 0.0001,
    ratio: float | None = 1.0,
    funding_steps: tuple[float, ...] = (0.0001, 0.0001, 0.0001),
    oi_change_pct: float | None = 0.0,
    liquidated: tuple[float, float] = (500.0, 500.0),
) -> Derivatives:
    """Derivatives read at T0: open interest 100 an hour ago, moved by ``oi_change_pct``."""
    history = tuple(
        (T0 - (len(funding_steps) - i) * 8 * HOUR_MS, r) for i, r in enumerate(funding_steps)
    )
    oi_history: tuple[tuple[int, float], ...] = ()
    current = None
    if oi_change_pct is not None:
        current = 100.0 * (1 + oi_change_pct / 100)
        oi_history = ((T0 - HOUR_MS, 100.0), (T0, current))
    return Derivatives(
        "TESTUSDT",
        "TEST/USDT:USDT",
        T0,
        funding_rate=funding,
        open_interest=current,
        long_short_ratio=ratio,
        funding_history=history,
        open_interest_history=oi_history,
        liquidations=Liquidations(HOUR_MS, T0, *liquidated, 5, 5),
    )


def tape(buys: int, sells: int) -> list[PublicTrade]:
    sides = ["buy"] * buys + ["sell"] * sells
    return [PublicTrade(i, 100.0, 1.0, side) for i, side in enumerate(sides)]  # type: ignore[arg-type]


# --- neutral inputs -------------------------------------------------------------------


@pytest.mark.parametrize("price", [100.1, 65_432.1])
def test_flat_market_with_neutral_positioning_is_exactly_neutral_on_all_six(price: float) -> None:
    result = score_timeframe(
        flat_candles(340, price),
        book(price, 2.0, 2.0),
        WEIGHTS,
        derivatives=positioning(),
        trades=tape(15, 15),
    )
    assert_bounded(result)
    assert all(c.score is not None for c in result.components.values())
    for component in result.components.values():
        assert component.score == pytest.approx(50.0, abs=1e-9)
        assert all(v == pytest.approx(50.0, abs=1e-9) for v in component.sub_scores.values())
    assert result.components["orderflow"].sub_scores["open_interest"] == 50.0
    assert result.score == pytest.approx(50.0, abs=1e-9)
    # every component available: the configured weights, as given (they sum to 1)
    assert result.weights_used == pytest.approx(dict(DEFAULT_COMPONENT_WEIGHTS))


# --- without derivatives: the fallbacks -----------------------------------------------


def test_without_derivatives_sentiment_and_open_interest_stay_unavailable() -> None:
    close = 100 * np.exp(np.linspace(0, 0.05, 200))
    result = score_timeframe(candles_from_close(close), book(close[-1], 1, 1), WEIGHTS)
    assert result.components["sentiment"].score is None
    assert result.components["sentiment"].reason == NO_SENTIMENT
    assert result.components["orderflow"].sub_scores["open_interest"] is None
    assert "sentiment" not in result.weights_used


def test_the_callers_reason_is_passed_through() -> None:
    reason = "no linear perpetual listed for TESTUSDT"
    result = score_timeframe(flat_candles(100, 1.0), None, WEIGHTS, derivatives_reason=reason)
    assert result.components["sentiment"].reason == reason


def test_derivatives_with_nothing_usable_name_it() -> None:
    empty = Derivatives("TESTUSDT", "TEST/USDT:USDT", T0)
    result = score_timeframe(flat_candles(100, 1.0), None, WEIGHTS, derivatives=empty)
    assert result.components["sentiment"].score is None
    assert result.components["sentiment"].reason == NO_POSITIONING
    assert result.components["orderflow"].sub_scores["open_interest"] is None


# --- the whole score with and without derivatives -------------------------------------


def test_crowded_longs_pull_a_rising_market_down() -> None:
    candles, ob = trending(+1)
    crowded = positioning(
        funding=0.0007, ratio=3.0, funding_steps=(0.0001, 0.0003, 0.0005), liquidated=(0, 900)
    )
    without = score_timeframe(candles, ob, WEIGHTS)
    with_ = score_timeframe(candles, ob, WEIGHTS, derivatives=crowded)
    assert_bounded(with_)
    sentiment = with_.components["sentiment"]
    assert sentiment.score == pytest.approx(sentiment_score(crowded))
    assert sentiment.score is not None and sentiment.score < 20
    assert with_.weights_used["sentiment"] == pytest.approx(DEFAULT_COMPONENT_WEIGHTS["sentiment"])
    # the score is the renormalised weighted mean of the six components
    expected = sum(w * with_.components[n].score for n, w in with_.weights_used.items())  # type: ignore[misc]
    assert with_.score == pytest.approx(expected, abs=1e-9)
    assert with_.score < without.score


def test_capitulated_positioning_lifts_a_falling_market() -> None:
    candles, ob = trending(-1)
    flushed = positioning(funding=-0.0005, ratio=0.4, liquidated=(900, 0))
    without = score_timeframe(candles, ob, WEIGHTS)
    with_ = score_timeframe(candles, ob, WEIGHTS, derivatives=flushed)
    assert with_.components["sentiment"].score > 80  # type: ignore[operator]
    assert with_.score > without.score


# --- open interest --------------------------------------------------------------------


def test_open_interest_uses_the_given_price_change() -> None:
    candles, ob = trending(+1)
    d = positioning(oi_change_pct=2.0)
    result = score_timeframe(candles, ob, WEIGHTS, derivatives=d, price_change_1h_pct=-0.5)
    flow = result.components["orderflow"]
    # OI +2 % against price -0.5 %: tanh(-2.5)·2 = -1.9732
    # → 50 - 50·tanh(1.9732) = 50 - 48.104 = 1.896
    assert flow.sub_scores["open_interest"] == pytest.approx(
        50 - 50 * math.tanh(2 * math.tanh(2.5)), rel=1e-6
    )
    assert flow.sub_scores["open_interest"] == pytest.approx(1.8957, abs=1e-3)
    # the component renormalises over its four sub-scores
    total = sum(ORDERFLOW_WEIGHTS.values())
    expected = 50 + sum(
        w / total * (flow.sub_scores[k] - 50)  # type: ignore[operator]
        for k, w in ORDERFLOW_WEIGHTS.items()
    )
    assert flow.score == pytest.approx(expected)


def test_open_interest_reads_the_price_change_from_short_candles() -> None:
    candles, ob = trending(+1)
    d = positioning(oi_change_pct=1.0)
    result = score_timeframe(candles, ob, WEIGHTS, derivatives=d)
    change = price_change_pct(candles)
    assert change is not None and change > 0
    expected = open_interest_score(d.open_interest_change_pct(1), change)
    assert result.components["orderflow"].sub_scores["open_interest"] == pytest.approx(expected)
    assert expected > 50  # type: ignore[operator]


def test_open_interest_on_4h_candles_needs_the_price_change_given() -> None:
    candles, ob = trending(+1)
    four_hourly = Candles(
        "TESTUSDT",
        "4h",
        candles.timestamp_ms * 240,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
    )
    d = positioning(oi_change_pct=1.0)
    alone = score_timeframe(four_hourly, ob, WEIGHTS, derivatives=d)
    assert alone.components["orderflow"].sub_scores["open_interest"] is None
    given_ = score_timeframe(four_hourly, ob, WEIGHTS, derivatives=d, price_change_1h_pct=0.3)
    assert given_.components["orderflow"].sub_scores["open_interest"] > 50  # type: ignore[operator]


# --- CVD from trades ------------------------------------------------------------------


def test_trades_replace_the_candle_cvd() -> None:
    candles, ob = trending(-1)
    from_candles = score_timeframe(candles, ob, WEIGHTS).components["orderflow"]
    from_trades = score_timeframe(candles, ob, WEIGHTS, trades=tape(30, 10)).components["orderflow"]
    assert from_candles.sub_scores["cvd"] < 50  # type: ignore[operator]
    # (30 - 10)/40 = 0.5, / 0.3 → 50 + 50·tanh(5/3) = 50 + 46.555 = 96.555
    assert from_trades.sub_scores["cvd"] == pytest.approx(trade_cvd_score(tape(30, 10)))
    assert from_trades.sub_scores["cvd"] == pytest.approx(96.5555, abs=1e-3)
    for name in ("trade_flow", "smart_money_flow"):
        assert from_trades.sub_scores[name] == from_candles.sub_scores[name]


@pytest.mark.parametrize("trades", [None, [], tape(5, 0)])
def test_no_or_too_few_trades_keep_the_candle_cvd(trades: list[PublicTrade] | None) -> None:
    candles, ob = trending(+1)
    plain = score_timeframe(candles, ob, WEIGHTS)
    fed = score_timeframe(candles, ob, WEIGHTS, trades=trades)
    assert fed.components["orderflow"] == plain.components["orderflow"]
    assert fed.score == plain.score


def test_trades_make_orderflow_available_before_enough_candles() -> None:
    result = score_timeframe(flat_candles(5, 100.0), None, WEIGHTS, trades=tape(25, 5))
    flow = result.components["orderflow"]
    assert flow.reason is None
    assert flow.score == pytest.approx(trade_cvd_score(tape(25, 5)))
    assert result.weights_used == {"orderflow": 1.0}


# --- across timeframes ----------------------------------------------------------------


def test_combine_timeframes_with_derivatives() -> None:
    candles, ob = trending(+1)
    d = positioning(funding=0.0004, ratio=2.0, oi_change_pct=1.0)
    per_tf = {
        "1m": score_timeframe(candles, ob, WEIGHTS, derivatives=d, trades=tape(20, 20)),
        "5m": score_timeframe(candles.tail(120), ob, WEIGHTS, derivatives=d),
    }
    combined = combine_timeframes(per_tf, WEIGHTS)
    assert_bounded(combined)
    sentiment = combined.components["sentiment"]
    assert sentiment.score == pytest.approx(sentiment_score(d))  # the same on both
    assert set(sentiment.sub_scores) == {"funding", "long_short", "funding_trend", "liquidations"}
    assert combined.weights_used["sentiment"] == pytest.approx(0.07)
    assert list(combined.components) == list(COMPONENTS)


# --- bounds ---------------------------------------------------------------------------


@st.composite
def derivatives_data(draw: st.DrawFn) -> Derivatives | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    optional = st.none() | st.floats(-0.01, 0.01)
    return positioning(
        funding=draw(optional),
        ratio=draw(st.none() | st.floats(0.01, 100)),
        funding_steps=tuple(draw(st.lists(st.floats(-0.01, 0.01), max_size=10))),
        oi_change_pct=draw(st.none() | st.floats(-90, 500)),
        liquidated=(draw(st.floats(0, 1e9)), draw(st.floats(0, 1e9))),
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    candles=candle_series(),
    ob=order_books(),
    d=derivatives_data(),
    buys=st.integers(0, 40),
    sells=st.integers(0, 40),
    price=st.none() | st.floats(-20, 20),
)
def test_every_score_with_derivatives_is_bounded(
    candles: Candles,
    ob: object,
    d: Derivatives | None,
    buys: int,
    sells: int,
    price: float | None,
) -> None:
    result = score_timeframe(
        candles,
        ob,  # type: ignore[arg-type]
        WEIGHTS,
        derivatives=d,
        trades=tape(buys, sells),
        price_change_1h_pct=price,
    )
    assert_bounded(result)
    if d is None:
        assert result.components["sentiment"].reason == NO_SENTIMENT
