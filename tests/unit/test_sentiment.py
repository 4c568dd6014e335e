"""The sentiment component: funding, long/short ratio, funding trend and liquidations,
each contrarian, 0-100 with 50 neutral; hand-computed values and properties."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.market.analytics.sentiment import (
    NO_POSITIONING,
    SENTIMENT_WEIGHTS,
    funding_interval_hours,
    funding_score,
    funding_trend_score,
    liquidations_score,
    long_short_score,
    sentiment_reason,
    sentiment_score,
    sentiment_sub_scores,
)
from app.market.models.derivatives import HOUR_MS, Derivatives, Liquidations

TANH_1 = math.tanh(1.0)  # 0.7615941559557649: a sub-score at its scale is 50 ± 38.08
T0 = 1_700_000_000_000

rates = st.floats(-0.05, 0.05)
ratios = st.floats(1e-6, 1e6)


def settled(*values: float, hours: float = 8.0) -> tuple[tuple[int, float], ...]:
    """Settled funding rates ``hours`` apart, oldest first."""
    return tuple((T0 + int(i * hours * HOUR_MS), v) for i, v in enumerate(values))


def liquidations(long_value: float, short_value: float, count: int = 10) -> Liquidations:
    return Liquidations(3_600_000, T0, long_value, short_value, count // 2, count - count // 2)


def derivatives(**fields: object) -> Derivatives:
    return Derivatives("BTCUSDT", "BTC/USDT:USDT", T0, **fields)  # type: ignore[arg-type]


# --- funding --------------------------------------------------------------------------


def test_funding_hand_computed() -> None:
    # the neutral rate, 0.0001 per 8 h: x = -(0.0001 - 0.0001) = 0 → exactly 50
    assert funding_score(0.0001) == 50.0
    # crowded longs, 0.0007: x = -0.0006, x / 0.0006 = -1 → 50 - 50·tanh(1) = 11.92
    assert funding_score(0.0007) == pytest.approx(50 - 50 * TANH_1)
    assert funding_score(0.0007) == pytest.approx(11.9203, abs=1e-4)
    # shorts paying, -0.0005: x = +0.0006 → 88.08
    assert funding_score(-0.0005) == pytest.approx(88.0797, abs=1e-4)
    # 0.0004: x = -0.0003 → 50 - 50·tanh(0.5) = 50 - 23.106 = 26.894
    assert funding_score(0.0004) == pytest.approx(26.8941, abs=1e-4)
    # zero funding is mildly bullish: x = +0.0001 → 50 + 50·tanh(1/6) = 50 + 8.257
    assert funding_score(0.0) == pytest.approx(58.2570, abs=1e-4)


def test_funding_is_read_per_8_hours() -> None:
    # a 1 h interval's 0.0001 is 0.0008 per 8 h: x = -0.0007
    # → 50 - 50·tanh(7/6) = 50 - 41.160 = 8.840
    assert funding_score(0.0001, 1.0) == pytest.approx(50 - 50 * math.tanh(7 / 6))
    assert funding_score(0.0001, 1.0) == pytest.approx(8.8400, abs=1e-4)
    # 4 h: 0.00005 per 4 h is the neutral 0.0001 per 8 h
    assert funding_score(0.00005, 4.0) == pytest.approx(50.0)


@pytest.mark.parametrize("rate", [None, math.nan, math.inf])
def test_funding_without_a_rate_is_unavailable(rate: float | None) -> None:
    assert funding_score(rate) is None


@pytest.mark.parametrize(
    ("hours", "expected"),
    [(8.0, 8.0), (4.0, 4.0), (1.0, 1.0), (1 / 60, 8.0), (24.0, 8.0)],
)
def test_funding_interval_is_the_settlement_spacing_within_1_to_8_hours(
    hours: float, expected: float
) -> None:
    assert funding_interval_hours(settled(0.1, 0.2, 0.3, hours=hours)) == pytest.approx(expected)


def test_funding_interval_without_history_is_8_hours() -> None:
    assert funding_interval_hours(()) == 8.0
    assert funding_interval_hours(settled(0.0001)) == 8.0


@given(rate=rates)
def test_funding_is_bounded(rate: float) -> None:
    score = funding_score(rate)
    assert score is not None and 0.0 <= score <= 100.0


@given(a=rates, b=rates)
def test_funding_falls_as_longs_crowd(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert funding_score(low) >= funding_score(high)  # type: ignore[operator]


@given(d=st.floats(-0.05, 0.05))
def test_funding_is_symmetric_about_the_neutral_rate(d: float) -> None:
    above, below = funding_score(0.0001 + d), funding_score(0.0001 - d)
    assert above is not None and below is not None
    assert above + below == pytest.approx(100.0, abs=1e-9)


# --- long/short ratio -----------------------------------------------------------------


def test_long_short_hand_computed() -> None:
    assert long_short_score(1.0) == 50.0  # ln 1 = 0
    # 3 longs per short: x = -ln 3, x / ln 3 = -1 → 11.92
    assert long_short_score(3.0) == pytest.approx(50 - 50 * TANH_1)
    assert long_short_score(1 / 3) == pytest.approx(50 + 50 * TANH_1)
    # 2: -ln 2 / ln 3 = -0.6309 → 50 - 50·tanh(0.6309) = 50 - 27.935 = 22.065
    assert long_short_score(2.0) == pytest.approx(22.0654, abs=1e-4)


@pytest.mark.parametrize("ratio", [None, 0.0, -1.0, math.nan, math.inf])
def test_unusable_long_short_ratio_is_unavailable(ratio: float | None) -> None:
    assert long_short_score(ratio) is None


@given(ratio=ratios)
def test_long_short_is_bounded_and_symmetric_in_long_versus_short(ratio: float) -> None:
    score, mirrored = long_short_score(ratio), long_short_score(1 / ratio)
    assert score is not None and mirrored is not None
    assert 0.0 <= score <= 100.0
    assert score + mirrored == pytest.approx(100.0, abs=1e-9)


@given(a=ratios, b=ratios)
def test_long_short_falls_as_longs_crowd(a: float, b: float) -> None:
    low, high = sorted((a, b))
    assert long_short_score(low) >= long_short_score(high)  # type: ignore[operator]


# --- funding trend --------------------------------------------------------------------


def test_funding_trend_hand_computed() -> None:
    # 0.0001, 0.0002, 0.0003: slope 0.0001 per settlement, Δ = 0.0001·2 = 0.0002;
    # x = -0.0002, x / 0.0003 = -2/3 → 50 - 50·tanh(2/3) = 50 - 29.139 = 20.861
    rising = settled(0.0001, 0.0002, 0.0003)
    assert funding_trend_score(rising) == pytest.approx(50 - 50 * math.tanh(2 / 3))
    assert funding_trend_score(rising) == pytest.approx(20.8609, abs=1e-4)
    # falling the same way → 50 + 29.139 = 79.139
    assert funding_trend_score(settled(0.0003, 0.0002, 0.0001)) == pytest.approx(79.1391, abs=1e-4)
    # flat at any level → exactly 50
    assert funding_trend_score(settled(0.0005, 0.0005, 0.0005, 0.0005)) == 50.0


def test_funding_trend_uses_the_last_nine_settlements() -> None:
    # a spike long ago (10th from the end) is out of the window: the rest is flat
    history = settled(0.01, *([0.0001] * 9))
    assert funding_trend_score(history) == 50.0


def test_funding_trend_needs_three_settlements() -> None:
    assert funding_trend_score(settled(0.0001, 0.0009)) is None
    assert funding_trend_score(settled(0.0001, math.nan, 0.0002)) is None


def test_funding_trend_is_read_per_8_hours() -> None:
    # 1 h settlements rising 0.0001 → 0.0003: per 8 h ×8, Δ = 0.0016, x/0.0003 = -16/3
    history = settled(0.0001, 0.0002, 0.0003, hours=1.0)
    assert funding_trend_score(history, 1.0) == pytest.approx(50 - 50 * math.tanh(16 / 3))


@given(values=st.lists(rates, min_size=3, max_size=12), shift=st.floats(-0.01, 0.01))
def test_funding_trend_is_bounded_shift_free_and_reversible(
    values: list[float], shift: float
) -> None:
    score = funding_trend_score(settled(*values))
    assert score is not None and 0.0 <= score <= 100.0
    shifted = funding_trend_score(settled(*(v + shift for v in values)))
    assert shifted == pytest.approx(score, abs=1e-6)
    mirrored = funding_trend_score(settled(*(-v for v in values)))
    assert score + mirrored == pytest.approx(100.0, abs=1e-9)  # type: ignore[operator]


@given(step=st.floats(0, 0.001), more=st.floats(0, 0.001))
def test_funding_trend_falls_as_funding_rises_faster(step: float, more: float) -> None:
    slow = funding_trend_score(settled(*(i * step for i in range(5))))
    fast = funding_trend_score(settled(*(i * (step + more) for i in range(5))))
    assert fast <= slow <= 50.0  # type: ignore[operator]


# --- liquidations ---------------------------------------------------------------------


def test_liquidations_hand_computed() -> None:
    # longs 300, shorts 100: (300 - 100)/400 = 0.5, / 0.5 = 1 → 50 + 50·tanh(1) = 88.08
    assert liquidations_score(liquidations(300.0, 100.0)) == pytest.approx(50 + 50 * TANH_1)
    assert liquidations_score(liquidations(100.0, 300.0)) == pytest.approx(50 - 50 * TANH_1)
    assert liquidations_score(liquidations(250.0, 250.0)) == 50.0


@pytest.mark.parametrize(
    "liq",
    [
        None,
        liquidations(300.0, 100.0, count=4),  # fewer than 5: no evidence
        liquidations(0.0, 0.0),
        liquidations(math.nan, 1.0),
        liquidations(-5.0, 10.0),
    ],
)
def test_thin_or_bad_liquidations_are_unavailable(liq: Liquidations | None) -> None:
    assert liquidations_score(liq) is None


@given(a=st.floats(0, 1e9), b=st.floats(0, 1e9))
def test_liquidations_bounded_and_symmetric(a: float, b: float) -> None:
    score, mirrored = liquidations_score(liquidations(a, b)), liquidations_score(liquidations(b, a))
    if a + b == 0:
        assert score is None
        return
    assert score is not None and mirrored is not None and 0.0 <= score <= 100.0
    assert score + mirrored == pytest.approx(100.0, abs=1e-9)
    more_longs = liquidations_score(liquidations(a + 1e6, b))
    assert more_longs >= score  # type: ignore[operator]


# --- the component --------------------------------------------------------------------


def neutral() -> Derivatives:
    return derivatives(
        funding_rate=0.0001,
        long_short_ratio=1.0,
        funding_history=settled(0.0001, 0.0001, 0.0001),
        liquidations=liquidations(500.0, 500.0),
    )


def test_neutral_positioning_is_exactly_50() -> None:
    subs = sentiment_sub_scores(neutral())
    assert subs == dict.fromkeys(SENTIMENT_WEIGHTS, 50.0)
    assert sentiment_score(neutral()) == 50.0


def test_component_renormalises_over_the_available_sub_scores() -> None:
    # funding 0.0007 → 11.92 (w .35), ratio 1 → 50 (w .3), no history, no liquidations:
    # 50 + (.35/.65)·(11.92 - 50) = 50 - 20.504 = 29.496
    d = derivatives(funding_rate=0.0007, long_short_ratio=1.0)
    subs = sentiment_sub_scores(d)
    assert subs["funding_trend"] is None and subs["liquidations"] is None
    expected = 50 + 0.35 / 0.65 * (-50 * TANH_1)
    assert sentiment_score(d) == pytest.approx(expected)
    assert sentiment_score(d) == pytest.approx(29.4955, abs=1e-4)


def test_all_four_sub_scores_blend_with_their_weights() -> None:
    d = derivatives(
        funding_rate=0.0007,  # 11.92
        long_short_ratio=1 / 3,  # 88.08
        funding_history=settled(0.0001, 0.0002, 0.0003),  # 20.86
        liquidations=liquidations(300.0, 100.0),  # 88.08
    )
    # 50 + .35·(-38.08) + .3·(38.08) + .2·(-29.14) + .15·(38.08)
    expected = (
        50
        - 0.35 * 50 * TANH_1
        + 0.3 * 50 * TANH_1
        - 0.2 * 50 * math.tanh(2 / 3)
        + 0.15 * 50 * TANH_1
    )
    assert sentiment_score(d) == pytest.approx(expected)


def test_without_data_or_usable_data_the_component_is_unavailable_with_a_reason() -> None:
    assert sentiment_sub_scores(None) == dict.fromkeys(SENTIMENT_WEIGHTS)
    assert sentiment_score(None) is None
    assert sentiment_reason(None, "spot-only exchange") == "spot-only exchange"
    empty = derivatives(open_interest=5.0)
    assert sentiment_score(empty) is None
    assert sentiment_reason(empty, "unused") == NO_POSITIONING


@given(
    rate=st.none() | rates,
    ratio=st.none() | ratios,
    history=st.lists(rates, max_size=10),
    long_value=st.floats(0, 1e9),
    short_value=st.floats(0, 1e9),
)
def test_component_is_bounded(
    rate: float | None,
    ratio: float | None,
    history: list[float],
    long_value: float,
    short_value: float,
) -> None:
    d = derivatives(
        funding_rate=rate,
        long_short_ratio=ratio,
        funding_history=settled(*history),
        liquidations=liquidations(long_value, short_value),
    )
    score = sentiment_score(d)
    assert score is None or 0.0 <= score <= 100.0
    assert all(v is None or 0.0 <= v <= 100.0 for v in sentiment_sub_scores(d).values())
