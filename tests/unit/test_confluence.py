"""Confluence scoring: bounds, neutrality of a flat market, direction, availability rules."""

from __future__ import annotations

import json
import math
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.market.analytics.confluence import (
    MIN_SIGNAL_COVERAGE,
    SUB_WEIGHTS,
    ComponentScore,
    ConfluenceResult,
    combine_timeframes,
    coverage,
    evidenced_signal,
    score_timeframe,
    signal_for,
)
from app.market.models.candles import Candles
from app.market.models.confluence_weights import (
    COMPONENTS,
    DEFAULT_COMPONENT_WEIGHTS,
    ConfluenceWeights,
)
from app.market.models.order_book import OrderBook

WEIGHTS = ConfluenceWeights.default()


def candles_from_close(
    close: np.ndarray, volume: np.ndarray | None = None, wick: float = 0.002
) -> Candles:
    n = close.shape[0]
    open_ = np.r_[close[0], close[:-1]]
    high = np.maximum(open_, close) * (1 + wick)
    low = np.minimum(open_, close) * (1 - wick)
    vol = np.full(n, 10.0) if volume is None else volume
    ts = np.arange(n, dtype=np.int64) * 60_000
    return Candles("TESTUSDT", "1m", ts, open_, high, low, close.astype(np.float64), vol)


def flat_candles(n: int, price: float, volume: float = 5.0) -> Candles:
    col = np.full(n, price)
    ts = np.arange(n, dtype=np.int64) * 60_000
    vol = np.full(n, volume)
    return Candles("TESTUSDT", "1m", ts, col, col.copy(), col.copy(), col.copy(), vol)


def book(mid: float, bid_qty: float, ask_qty: float, step: float = 1e-4) -> OrderBook:
    levels = np.arange(1, 21)
    bids = np.c_[mid * (1 - levels * step), np.full(20, bid_qty)]
    asks = np.c_[mid * (1 + levels * step), np.full(20, ask_qty)]
    return OrderBook("TESTUSDT", bids, asks, 0)


def assert_bounded(result: ConfluenceResult) -> None:
    assert 0.0 <= result.score <= 100.0
    assert 0.0 <= result.reliability <= 1.0
    assert result.signal == evidenced_signal(result.score, result.components, WEIGHTS)
    if coverage(result.components, WEIGHTS) < MIN_SIGNAL_COVERAGE:
        assert result.signal == "neutral"
    assert list(result.components) == list(COMPONENTS)
    for component in result.components.values():
        assert component.score is None or 0.0 <= component.score <= 100.0
        assert (component.score is None) == (component.reason is not None)
        for value in component.sub_scores.values():
            assert value is None or 0.0 <= value <= 100.0
    if result.weights_used:
        assert math.isclose(sum(result.weights_used.values()), 1.0)
    for name in result.weights_used:
        assert result.components[name].score is not None


# --- bounds ---------------------------------------------------------------------------


@st.composite
def candle_series(draw: st.DrawFn) -> Candles:
    n = draw(st.integers(0, 90))
    level = draw(st.sampled_from([1e-8, 0.5, 100.0, 65_000.0]))
    returns = draw(hnp.arrays(np.float64, n, elements=st.floats(-0.2, 0.2)))
    wicks = draw(hnp.arrays(np.float64, (2, n), elements=st.floats(0, 0.1)))
    volume = draw(hnp.arrays(np.float64, n, elements=st.floats(0, 1e6)))
    close = level * np.exp(np.cumsum(returns))
    open_ = np.r_[level, close[:-1]] if n else close.copy()
    high = np.maximum(open_, close) * (1 + wicks[0])
    low = np.minimum(open_, close) * (1 - wicks[1])
    ts = np.arange(n, dtype=np.int64) * 60_000
    return Candles("TESTUSDT", "1m", ts, open_, high, low, close, volume)


@st.composite
def order_books(draw: st.DrawFn) -> OrderBook | None:
    if draw(st.booleans()) and draw(st.booleans()):
        return None
    mid = draw(st.floats(1e-6, 1e5))
    sides = []
    for sign in (-1, 1):
        levels = draw(st.integers(0, 8))
        offsets = np.cumsum(draw(hnp.arrays(np.float64, levels, elements=st.floats(0, 0.02))))
        qty = draw(hnp.arrays(np.float64, levels, elements=st.floats(0, 1e4)))
        sides.append(np.c_[mid * (1 + sign * offsets), qty].reshape(levels, 2))
    return OrderBook("TESTUSDT", sides[0], sides[1], 0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(candles=candle_series(), ob=order_books())
def test_every_score_is_bounded(candles: Candles, ob: OrderBook | None) -> None:
    assert_bounded(score_timeframe(candles, ob, WEIGHTS))


def test_random_walk_scores_are_bounded_and_mixed() -> None:
    rng = np.random.default_rng(3)
    for _ in range(20):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, 340)))
        candles = candles_from_close(close, rng.lognormal(2, 1, 340))
        result = score_timeframe(candles, book(close[-1], *rng.uniform(0.1, 5, 2)), WEIGHTS)
        assert_bounded(result)
        assert result.components["technical"].score not in (0.0, 50.0, 100.0)


# --- neutrality of a flat market ------------------------------------------------------


@pytest.mark.parametrize("price", [100.1, 65_432.1, 1.234e-6])
@pytest.mark.parametrize("n", [60, 340])
def test_flat_market_is_exactly_neutral(price: float, n: int) -> None:
    result = score_timeframe(flat_candles(n, price), book(price, 2.0, 2.0), WEIGHTS)
    available = {k: c for k, c in result.components.items() if c.score is not None}
    assert set(available) == set(COMPONENTS) - {"sentiment"}
    for component in available.values():
        assert component.score == pytest.approx(50.0, abs=1e-9)
        for value in component.sub_scores.values():
            assert value is None or value == pytest.approx(50.0, abs=1e-9)
    assert result.score == pytest.approx(50.0, abs=1e-9)
    assert result.reliability == 0.0
    assert result.signal == "neutral"


def test_flat_recent_candles_after_a_move_give_neutral_williams_r() -> None:
    """TA-Lib reports %R = 0 (close at the high) for a zero range; that is not bullish."""
    close = np.r_[np.linspace(90, 100, 60), np.full(20, 100.0)]
    candles = candles_from_close(close, wick=0.0)
    result = score_timeframe(candles, None, WEIGHTS)
    assert result.components["technical"].sub_scores["williams_r"] == 50.0


# --- availability ---------------------------------------------------------------------


def test_sentiment_is_unavailable_and_its_weight_redistributed() -> None:
    close = 100 * np.exp(np.linspace(0, 0.05, 200))
    result = score_timeframe(candles_from_close(close), book(close[-1], 1, 1), WEIGHTS)
    sentiment = result.components["sentiment"]
    assert sentiment.score is None and sentiment.reason
    assert "sentiment" not in result.weights_used
    assert math.isclose(sum(result.weights_used.values()), 1.0)
    rest = 1.0 - DEFAULT_COMPONENT_WEIGHTS["sentiment"]
    for name, weight in result.weights_used.items():
        assert weight == pytest.approx(DEFAULT_COMPONENT_WEIGHTS[name] / rest)
    assert result.components["orderflow"].sub_scores["open_interest"] is None


def test_score_is_the_renormalised_weighted_mean_of_available_components() -> None:
    rng = np.random.default_rng(11)
    close = 50 * np.exp(np.cumsum(rng.normal(0, 0.01, 200)))
    result = score_timeframe(candles_from_close(close, rng.lognormal(1, 1, 200)), None, WEIGHTS)
    assert "orderbook" not in result.weights_used
    expected = sum(w * result.components[n].score for n, w in result.weights_used.items())
    assert result.score == pytest.approx(expected, abs=1e-9)
    technical = result.components["technical"]
    sub_total = sum(SUB_WEIGHTS["technical"].values())
    expected_technical = sum(
        w / sub_total * technical.sub_scores[k] for k, w in SUB_WEIGHTS["technical"].items()
    )
    assert technical.score == pytest.approx(expected_technical, abs=1e-9)


def test_too_few_candles_make_components_unavailable_not_invented() -> None:
    close = 100 * np.exp(np.linspace(0, 0.01, 10))
    result = score_timeframe(candles_from_close(close), book(close[-1], 3, 1), WEIGHTS)
    for name in ("technical", "volume", "orderflow", "price_structure"):
        component = result.components[name]
        assert component.score is None
        assert "candles" in (component.reason or "")
        assert all(v is None for v in component.sub_scores.values())
    assert result.weights_used == {"orderbook": 1.0}
    assert result.score == result.components["orderbook"].score
    assert result.reliability == pytest.approx(1 / len(COMPONENTS))


def test_indicators_needing_more_candles_than_given_are_unavailable() -> None:
    close = 100 * np.exp(np.linspace(0, 0.02, 25))
    technical = score_timeframe(candles_from_close(close), None, WEIGHTS).components["technical"]
    assert technical.score is not None
    assert technical.sub_scores["rsi"] is not None
    assert technical.sub_scores["adx"] is None  # needs 28
    assert technical.sub_scores["ao"] is None  # needs 34


def test_no_candles_and_no_book_give_a_neutral_empty_result() -> None:
    result = score_timeframe(flat_candles(0, 1.0), None, WEIGHTS)
    assert result.score == 50.0 and result.signal == "neutral"
    assert result.reliability == 0.0 and result.weights_used == {}


def test_non_finite_candles_are_unavailable() -> None:
    close = 100 * np.exp(np.linspace(0, 0.05, 100))
    close[50] = np.nan
    result = score_timeframe(candles_from_close(close), None, WEIGHTS)
    assert result.components["technical"].score is None
    assert "non-finite" in (result.components["technical"].reason or "")


@pytest.mark.parametrize(
    "bids, asks, reason",
    [
        (np.empty((0, 2)), np.array([[101.0, 1.0]]), "empty"),
        (np.array([[101.0, 1.0]]), np.array([[100.0, 1.0]]), "crossed"),
        (np.array([[99.0, 0.0]]), np.array([[101.0, 0.0]]), "depth"),
    ],
)
def test_unusable_books_are_unavailable(bids: np.ndarray, asks: np.ndarray, reason: str) -> None:
    result = score_timeframe(flat_candles(100, 100.0), OrderBook("X", bids, asks, 0), WEIGHTS)
    assert result.components["orderbook"].score is None
    assert reason in (result.components["orderbook"].reason or "")


# --- direction ------------------------------------------------------------------------


def trending(direction: int) -> tuple[Candles, OrderBook]:
    rng = np.random.default_rng(5)
    drift = direction * 0.002 + rng.normal(0, 0.001, 340)
    close = 100 * np.exp(np.cumsum(drift))
    volume = rng.lognormal(2, 0.3, 340)
    bid, ask = (4.0, 1.0) if direction > 0 else (1.0, 4.0)
    return candles_from_close(close, volume), book(close[-1], bid, ask)


def test_rising_market_with_bid_heavy_book_scores_above_neutral() -> None:
    result = score_timeframe(*trending(+1), WEIGHTS)
    assert result.score > 60
    for name in ("technical", "orderbook", "price_structure", "orderflow", "volume"):
        assert result.components[name].score > 50, name


def test_falling_market_with_ask_heavy_book_scores_below_neutral() -> None:
    result = score_timeframe(*trending(-1), WEIGHTS)
    assert result.score < 40
    for name in ("technical", "orderbook", "price_structure", "orderflow", "volume"):
        assert result.components[name].score < 50, name


def test_wider_spread_pulls_the_book_score_towards_neutral() -> None:
    tight = score_timeframe(flat_candles(50, 100.0), book(100.0, 3, 1, step=1e-5), WEIGHTS)
    wide = score_timeframe(flat_candles(50, 100.0), book(100.0, 3, 1, step=5e-3), WEIGHTS)
    tight_score = tight.components["orderbook"].score
    wide_score = wide.components["orderbook"].score
    assert tight_score is not None and wide_score is not None
    assert 50 < wide_score < tight_score


# --- signal and weights ---------------------------------------------------------------


@pytest.mark.parametrize(
    "score, signal",
    [
        (70.0, "long"),
        (85.0, "long"),
        (69.99, "neutral"),
        (50.0, "neutral"),
        (35.01, "neutral"),
        (35.0, "short"),
        (0.0, "short"),
    ],
)
def test_signal_thresholds(score: float, signal: str) -> None:
    assert signal_for(score, WEIGHTS) == signal


def test_custom_thresholds() -> None:
    weights = ConfluenceWeights(long_threshold=60, short_threshold=40)
    assert signal_for(60, weights) == "long"
    assert signal_for(40, weights) == "short"
    assert signal_for(55, weights) == "neutral"


@pytest.mark.parametrize(
    "kwargs",
    [
        {"components": {"technical": -0.1}},
        {"components": {"technical": math.nan}},
        {"components": {"technical": 0.0, "volume": 0.0}},
        {"components": {"astrology": 1.0}},
        {"timeframes": {"7m": 1.0}},
        {"timeframes": {"1m": 0.0}},
        {"long_threshold": 30, "short_threshold": 40},
        {"long_threshold": 101},
    ],
)
def test_invalid_weights_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        ConfluenceWeights(**kwargs)


def test_weights_are_immutable_copies() -> None:
    source = {"technical": 1.0}
    weights = ConfluenceWeights(components=source)
    source["technical"] = 5.0
    assert weights.components["technical"] == 1.0
    with pytest.raises(TypeError):
        weights.components["technical"] = 2.0  # type: ignore[index]


def test_zero_weight_component_is_ignored_and_not_counted_in_reliability() -> None:
    weights = ConfluenceWeights(components={"orderbook": 1.0, "technical": 0.0})
    result = score_timeframe(flat_candles(100, 100.0), book(100.0, 5, 1), weights)
    assert result.weights_used == {"orderbook": 1.0}
    assert result.reliability == 1.0


# --- across timeframes ----------------------------------------------------------------


def synthetic(score: float, components: dict[str, float | None]) -> ConfluenceResult:
    built = {
        name: ComponentScore(
            name,
            components.get(name),
            {"x": components.get(name)},
            None if components.get(name) is not None else "missing",
        )
        for name in COMPONENTS
    }
    used = {k: 1 / sum(v is not None for v in components.values()) for k, v in components.items()}
    used = {k: w for k, w in used.items() if components[k] is not None}
    return ConfluenceResult(score, signal_for(score, WEIGHTS), 0.0, built, used)


def test_combine_renormalises_over_present_timeframes() -> None:
    per_tf = {
        "1m": synthetic(80.0, {"technical": 80.0, "volume": 80.0}),
        "5m": synthetic(60.0, {"technical": 60.0, "volume": None}),
    }
    combined = combine_timeframes(per_tf, WEIGHTS)  # 30m and 4h missing
    w1, w5 = 0.4 / 0.7, 0.3 / 0.7
    assert combined.score == pytest.approx(w1 * 80 + w5 * 60)
    assert combined.components["technical"].score == pytest.approx(w1 * 80 + w5 * 60)
    assert combined.components["volume"].score == pytest.approx(80.0)  # only where available
    assert combined.components["volume"].sub_scores["x"] == pytest.approx(80.0)
    assert combined.components["sentiment"].score is None
    assert combined.components["sentiment"].reason == "missing"
    assert combined.weights_used == pytest.approx(
        {"technical": w1 * 0.5 + w5 * 1.0, "volume": w1 * 0.5}
    )
    # technical and volume alone carry 28% of the weight: not enough for a signal
    assert combined.signal == "neutral" and combined.score > WEIGHTS.long_threshold - 20
    assert combined.reliability == pytest.approx(2 / len(COMPONENTS))


def test_combine_ignores_unweighted_and_empty_timeframes() -> None:
    empty = score_timeframe(flat_candles(5, 1.0), None, WEIGHTS)
    per_tf = {
        "1m": synthetic(90.0, {"technical": 90.0, "orderflow": 90.0, "orderbook": 90.0}),
        "4h": empty,
        "1d": synthetic(10.0, {"technical": 10.0}),  # not in the timeframe weights
    }
    combined = combine_timeframes(per_tf, WEIGHTS)
    assert combined.score == pytest.approx(90.0)
    assert combined.signal == "long"


@pytest.mark.parametrize(
    ("available", "signal"),
    [
        ({"orderbook": 95.0}, "neutral"),  # no usable candles: the book alone, 20%
        ({"orderbook": 95.0, "technical": 95.0}, "neutral"),  # 30%
        ({"orderbook": 95.0, "orderflow": 95.0}, "long"),  # 50%: evidence enough
        ({"orderbook": 5.0, "orderflow": 5.0, "volume": 5.0}, "short"),
    ],
)
def test_a_signal_needs_half_the_configured_weight_behind_it(
    available: dict[str, float], signal: str
) -> None:
    per_tf = {tf: synthetic(next(iter(available.values())), available) for tf in ("1m", "5m")}
    combined = combine_timeframes(per_tf, WEIGHTS)
    assert combined.signal == signal
    assert all(r.signal == signal for r in per_tf.values()) or signal == "neutral"


def test_combine_real_timeframes_is_bounded_and_consistent() -> None:
    candles, ob = trending(+1)
    per_tf = {
        "1m": score_timeframe(candles, ob, WEIGHTS),
        "5m": score_timeframe(candles.tail(120), ob, WEIGHTS),
    }
    combined = combine_timeframes(per_tf, WEIGHTS)
    assert_bounded(combined)
    expected = (0.4 * per_tf["1m"].score + 0.3 * per_tf["5m"].score) / 0.7
    assert combined.score == pytest.approx(expected)


def test_combine_with_nothing_is_neutral() -> None:
    combined = combine_timeframes({}, WEIGHTS)
    assert combined.score == 50.0 and combined.signal == "neutral"
    assert combined.weights_used == {}


# --- serialisation and speed ----------------------------------------------------------


def test_to_dict_is_json_and_rounded() -> None:
    result = score_timeframe(*trending(+1), WEIGHTS)
    data = json.loads(json.dumps(result.to_dict()))
    assert data["score"] == round(result.score, 2)
    assert data["components"]["sentiment"]["score"] is None
    tech = data["components"]["technical"]
    assert tech["score"] == round(result.components["technical"].score, 2)
    assert set(data["weights_used"]) == set(result.weights_used)


def test_score_timeframe_is_fast() -> None:
    candles, ob = trending(+1)
    timings = []
    for _ in range(30):
        start = time.perf_counter()
        score_timeframe(candles, ob, WEIGHTS)
        timings.append(time.perf_counter() - start)
    assert min(timings) < 0.002
