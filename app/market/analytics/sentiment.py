"""The confluence ``sentiment`` component: positioning of the perpetual swap's traders,
read contrarian (a crowded side is the one that gets squeezed), 0-100 with 50 neutral.

Sub-scores (``s(x, scale) = 50 + 50·tanh(x / scale)``; see ``scoring``), each None when
its input is missing or unusable, blended with ``SENTIMENT_WEIGHTS`` renormalised over
the available ones:

funding        x = -(r₈ - 0.0001), scale 0.0006. r₈ is the current funding rate per 8 h
               (rate · 8 h / the funding interval); 0.0001 (0.01 % per 8 h) is Bybit's
               neutral rate (its interest-rate component, which the rate is pinned to
               while the premium stays within ±0.05 % of it), so r₈ = 0.0001 scores
               50; 0.0007 (crowded longs) scores 11.9, -0.0005 scores 88.1.
               Source: Virtuoso's ``_calculate_funding_score`` (virtexvirtuoso/Virtuoso,
               src/indicators/sentiment_indicators.py, its last readable version:
               raw = 50 - 250·(rate in %), then 100·sigmoid((raw - 50) / 50 / 0.15),
               which is exactly 50 + 50·tanh(-rate / 0.0006)); we keep its scale and
               sense and centre it on the neutral rate instead of 0.
long_short     x = -ln(ratio), scale ln 3 (accounts long ÷ short: 1 scores 50, 3 longs
               per short — 75 % of accounts long — scores 11.9, 1/3 scores 88.1;
               symmetric: ratio and 1/ratio score 100 - each other). Virtuoso scored
               the long share itself (100·long/(long + short), with the crowd); we read
               it contrarian, like funding: ours.
funding_trend  x = -Δ, scale 0.0003, Δ = the least-squares slope of the last ≤ 9
               settled funding rates per 8 h (3 days on an 8 h interval; at least 3)
               times (n - 1): their fitted change over the window. Rising funding
               (longs crowding in) scores below 50. Ours (Virtuoso scored the funding
               rate's volatility, not its trend).
liquidations   x = (L - S)/(L + S), scale 0.5, L and S the value of long and short
               positions liquidated in the stream's window; only with at least 5
               liquidations (fewer is no evidence). Long liquidations dominating
               (capitulation) scores above 50. Virtuoso's ``calculate_liquidation_events``
               used the opposite, momentum sense, 100·(1 - L/(L + S)); we read it
               contrarian, like the others: ours.

The funding interval is the median spacing of the settled funding history, used when
it lies between 1 h and 8 h (Bybit settles every 1, 2, 4 or 8 h), else 8 h: a 1 h
interval's 0.0001 is 0.0008 per 8 h (funding scores 8.8).
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from types import MappingProxyType

from app.market.analytics.scoring import squash, weighted
from app.market.models.derivatives import HOUR_MS, Derivatives, Liquidations, Point

SENTIMENT_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"funding": 0.35, "long_short": 0.3, "funding_trend": 0.2, "liquidations": 0.15}
)

FUNDING_NEUTRAL = 0.0001  # per 8 h: Bybit's interest-rate component, premium 0
FUNDING_SCALE = 0.0006  # per 8 h: Virtuoso's funding sensitivity
FUNDING_HOURS = 8.0  # the interval rates are expressed in
FUNDING_INTERVALS_H = (1.0, 8.0)  # plausible settlement intervals (hours)
TREND_RATES = 9  # settled rates in the trend window
TREND_MIN_RATES = 3
TREND_SCALE = 0.0003  # per 8 h, fitted change over the window
LONG_SHORT_SCALE = math.log(3.0)  # 75 % of accounts on one side
LIQUIDATION_MIN_COUNT = 5
LIQUIDATION_SCALE = 0.5

NO_POSITIONING = "derivatives data has no usable funding, long/short ratio or liquidations"


def funding_interval_hours(history: Sequence[Point]) -> float:
    """The funding interval (hours): the median spacing of the settled ``history``
    (epoch ms, oldest first) when between 1 and 8 h, else 8 h."""
    stamps = [stamp for stamp, _ in history]
    gaps = [(b - a) / HOUR_MS for a, b in itertools.pairwise(stamps)]
    if not gaps:
        return FUNDING_HOURS
    interval = statistics.median(gaps)
    low, high = FUNDING_INTERVALS_H
    return interval if low <= interval <= high else FUNDING_HOURS


def funding_score(rate: float | None, interval_hours: float = FUNDING_HOURS) -> float | None:
    """0-100 from the current funding ``rate`` (a fraction per ``interval_hours``):
    ``squash(-(rate·8/interval - 0.0001), 0.0006)``; None without a finite rate."""
    if rate is None or not math.isfinite(rate):
        return None
    per_8h = rate * FUNDING_HOURS / interval_hours
    return squash(-(per_8h - FUNDING_NEUTRAL), FUNDING_SCALE)


def funding_trend_score(
    history: Sequence[Point], interval_hours: float = FUNDING_HOURS
) -> float | None:
    """0-100 from the settled funding ``history`` ((epoch ms, rate) oldest first):
    ``squash(-Δ, 0.0003)``, Δ = OLS slope · (n - 1) of the last ≤ 9 finite rates per
    8 h; None with fewer than 3."""
    rates = [r * FUNDING_HOURS / interval_hours for _, r in history if math.isfinite(r)]
    rates = rates[-TREND_RATES:]
    if len(rates) < TREND_MIN_RATES:
        return None
    return squash(-_slope(rates) * (len(rates) - 1), TREND_SCALE)


def long_short_score(ratio: float | None) -> float | None:
    """0-100 from the long/short account ratio: ``squash(-ln ratio, ln 3)``; None for
    a missing, non-positive or non-finite ratio."""
    if ratio is None or not (math.isfinite(ratio) and ratio > 0):
        return None
    return squash(-math.log(ratio), LONG_SHORT_SCALE)


def liquidations_score(liquidations: Liquidations | None) -> float | None:
    """0-100 from the liquidations: ``squash((L - S)/(L + S), 0.5)`` (L, S: long and
    short value liquidated); None with fewer than 5 liquidations or no finite value."""
    if liquidations is None:
        return None
    count = liquidations.long_count + liquidations.short_count
    long_value, short_value = liquidations.long_value, liquidations.short_value
    total = long_value + short_value
    if count < LIQUIDATION_MIN_COUNT or not (math.isfinite(total) and total > 0):
        return None
    if long_value < 0 or short_value < 0:
        return None
    return squash((long_value - short_value) / total, LIQUIDATION_SCALE)


def sentiment_sub_scores(derivatives: Derivatives | None) -> dict[str, float | None]:
    """The sentiment sub-scores (keys of ``SENTIMENT_WEIGHTS``), all None without
    derivatives data."""
    if derivatives is None:
        return dict.fromkeys(SENTIMENT_WEIGHTS)
    interval = funding_interval_hours(derivatives.funding_history)
    return {
        "funding": funding_score(derivatives.funding_rate, interval),
        "long_short": long_short_score(derivatives.long_short_ratio),
        "funding_trend": funding_trend_score(derivatives.funding_history, interval),
        "liquidations": liquidations_score(derivatives.liquidations),
    }


def sentiment_score(derivatives: Derivatives | None) -> float | None:
    """The sentiment component (0-100): ``sentiment_sub_scores`` blended with
    ``SENTIMENT_WEIGHTS`` renormalised over the available ones; None when none is."""
    return weighted(sentiment_sub_scores(derivatives), SENTIMENT_WEIGHTS)


def sentiment_reason(derivatives: Derivatives | None, unavailable: str) -> str:
    """Why the component is unavailable: ``unavailable`` (the reason the caller was
    given for having no derivatives data) without data, ``NO_POSITIONING`` when the
    data has nothing usable."""
    return unavailable if derivatives is None else NO_POSITIONING


def _slope(y: Sequence[float]) -> float:
    """Least-squares slope of y against 0..n-1 (n ≥ 2)."""
    n = len(y)
    mean_x, mean_y = (n - 1) / 2.0, sum(y) / n
    num = sum((i - mean_x) * (v - mean_y) for i, v in enumerate(y))
    den = sum((i - mean_x) ** 2 for i in range(n))
    return num / den
