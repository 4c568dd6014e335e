"""Confluence score: six market components, each 0-100 with 50 neutral, blended into one.

Components, in order: technical, volume, orderflow, sentiment, orderbook,
price_structure. Each is a weighted mean of sub-scores; each sub-score maps one
real indicator onto 0-100 with a bounded function, almost always
``50 + 50·tanh(x / scale)`` with ``x`` a signed, scale-free quantity (so x = 0,
the flat market, gives exactly 50). Weighted means are taken as
``50 + Σ w·(s - 50)`` so that all-neutral inputs give exactly 50.

Unavailable data is never invented: a sub-score that cannot be computed (too few
candles, zero volume, no order book, no feed) is ``None`` and its weight is shared
among the available ones; a component with no available sub-score is ``None`` with a
``reason`` and its weight is shared among the available components. ``sentiment``
and orderflow's ``open_interest`` need the symbol's perpetual swap (``Derivatives``):
without it sentiment is unavailable with the caller's reason (``NO_SENTIMENT`` when
none is given) and ``open_interest`` is None. The shared scale and blending live in
``scoring``; the derivatives and trade sub-scores in ``sentiment`` and
``orderflow_feeds``, whose docstrings give their formulas, scales and sources.

Sub-score mappings (ATR = 14-period ATR; ``ratio(a, b)`` is a/b, and 0 when b = 0,
i.e. no volatility or volume means no signal):

technical
    rsi          RSI(14) itself (momentum reading; > 50 bullish); 50 when the whole
                 series is flat (TA-Lib reports 0 there).
    ao           tanh(ratio(AO, ATR) / 2)
    atr          ATR-normalised trend: tanh(ratio(close - close[-15], ATR·√14) / 1)
    cci          tanh(CCI(14) / 150)
    adx          tanh(ADX/25 · ratio(+DI - -DI, +DI + -DI)): trend strength x direction
    williams_r   %R(14) + 100 (close at the 14-candle high → 100); 50 when high = low.
volume (candle delta = volume·(close - open)/(high - low), 0 when high = low)
    volume_delta     tanh(ratio(Σ delta, Σ volume) / 0.5) over 20 candles
    adl              tanh(ratio(OLS slope of the A/D line, mean volume) / 0.5), 20 candles
    cmf              tanh(CMF(20) / 0.25)
    obv              tanh(ratio(OLS slope of OBV, mean volume) / 0.5), 20 candles
    relative_volume  tanh(relative volume(20) · body fraction of the last candle / 2)
    volume_profile   tanh(ratio(close - POC, ATR) / 2); POC = centre of the fullest of 24
                     typical-price bins, volume-weighted, over ≤ 100 candles
    vwap             tanh(ratio(close - VWAP, ATR) / 2), VWAP over ≤ 100 candles
orderflow
    cvd              tanh(ratio(OLS slope of cumulative delta, mean volume) / 0.3), ≤ 50
    trade_flow       tanh((2·buy share - 1) / 0.5) over 20 candles; buy volume of a candle
                     = volume·(close - low)/(high - low), half when high = low
    smart_money_flow tanh(ratio(Σ delta, Σ volume) / 0.5) over the candles of the last
                     ≤ 50 whose volume is at or above the 80th percentile
    cvd (trades)     with ≥ 20 public trades (taker side): tanh(taker imbalance / 0.3),
                     imbalance = (Σ buy - Σ sell amount)/Σ amount; replaces the candle cvd
    open_interest    tanh(tanh(ΔP/0.2) · ΔOI · k / 1): ΔOI, ΔP the open interest and price
                     change over 1 h in percent, k = 1 for rising OI, 0.6 for falling
                     (orderflow_feeds); None without derivatives data (NO_OPEN_INTEREST)
orderbook
    depth_imbalance  tanh(imbalance / 0.5), imbalance = (B - A)/(B + A) of the bid and ask
                     quantity (base units) within ±1 % of mid. The component score is
                     ``50 + (depth_imbalance - 50) · f`` with the spread penalty
                     f = 1 / (1 + spread_bps / 25).
price_structure (equal sub-weights)
    range_position   100 · (close - support)/(resistance - support) over 50 candles
                     (support = lowest low, resistance = highest high); 50 when flat.
    structure        higher highs / higher lows: the last 40 candles in 4 blocks of 10;
                     50 + 50 · mean(sign Δ block highs, sign Δ block lows).
    swing_levels     tanh(breakout / 1): breakout = ratio(close - swing high, ATR) above
                     the swing high, ratio(close - swing low, ATR) below the swing low,
                     else 0; swing levels = extremes of the 50 candles before the last 5.
sentiment (contrarian; sentiment.py; weights funding .35, long_short .3,
           funding_trend .2, liquidations .15)
    funding          tanh(-(r₈ - 0.0001) / 0.0006), r₈ = funding rate per 8 h
    long_short       tanh(-ln(long/short account ratio) / ln 3)
    funding_trend    tanh(-Δ / 0.0003), Δ = fitted change (OLS slope · (n - 1)) of the
                     last ≤ 9 settled funding rates per 8 h (at least 3)
    liquidations     tanh(((L - S)/(L + S)) / 0.5) of the long and short value liquidated,
                     with at least 5 liquidations

Score and reliability: ``score = clip(50 + Σ w·(component - 50), 0, 100)`` over the
available components with renormalised weights (``weights_used``); 50 when none is
available. ``reliability`` = number of available components whose score is more than
1 point away from 50, divided by the number of components with a positive configured
weight, so missing data lowers reliability. Signal: ``long`` when score ≥
long_threshold (70), ``short`` when ≤ short_threshold (35), else ``neutral``
(``NEUTRAL_BUFFER`` = 5 is informational only). The weights and thresholds come as a
``ConfluenceWeights`` (``app.market.models.confluence_weights``: plain, validated data).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from app.market.analytics import indicators as ind
from app.market.analytics.orderflow_feeds import (
    OI_HOURS,
    open_interest_score,
    price_change_pct,
    trade_cvd_score,
)
from app.market.analytics.scoring import NEUTRAL, blend, normalised, squash, weighted
from app.market.analytics.sentiment import (
    SENTIMENT_WEIGHTS,
    sentiment_reason,
    sentiment_sub_scores,
)
from app.market.models.candles import Candles
from app.market.models.confluence_weights import COMPONENTS, ConfluenceWeights
from app.market.models.derivatives import Derivatives
from app.market.models.order_book import OrderBook
from app.market.models.trades import PublicTrade

TECHNICAL_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"rsi": 0.2, "ao": 0.2, "atr": 0.15, "cci": 0.15, "adx": 0.15, "williams_r": 0.15}
)
VOLUME_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {
        "volume_delta": 0.2,
        "adl": 0.15,
        "cmf": 0.15,
        "obv": 0.15,
        "relative_volume": 0.15,
        "volume_profile": 0.1,
        "vwap": 0.1,
    }
)
ORDERFLOW_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"cvd": 0.22, "trade_flow": 0.17, "open_interest": 0.15, "smart_money_flow": 0.15}
)
ORDERBOOK_WEIGHTS: Mapping[str, float] = MappingProxyType({"depth_imbalance": 1.0})
PRICE_STRUCTURE_WEIGHTS: Mapping[str, float] = MappingProxyType(
    {"range_position": 1 / 3, "structure": 1 / 3, "swing_levels": 1 / 3}
)
SUB_WEIGHTS: Mapping[str, Mapping[str, float]] = MappingProxyType(
    {
        "technical": TECHNICAL_WEIGHTS,
        "volume": VOLUME_WEIGHTS,
        "orderflow": ORDERFLOW_WEIGHTS,
        "sentiment": SENTIMENT_WEIGHTS,
        "orderbook": ORDERBOOK_WEIGHTS,
        "price_structure": PRICE_STRUCTURE_WEIGHTS,
    }
)
NEUTRAL_BUFFER = 5.0  # informational: the original shows it, no rule uses it
RELIABILITY_TOLERANCE = 1.0  # a component counts as "saying something" beyond 50 ± this

PERIOD = 14  # RSI, ATR, CCI, ADX/DI, Williams %R
VOLUME_WINDOW = 20  # volume delta, ADL/OBV slope, CMF, relative volume, trade flow
FLOW_WINDOW = 50  # CVD, smart money flow
PROFILE_WINDOW = 100  # volume profile, VWAP (uses what is there, at least VOLUME_WINDOW)
PROFILE_BINS = 24
SMART_MONEY_QUANTILE = 0.8
RANGE_WINDOW = 50
STRUCTURE_BLOCKS, STRUCTURE_BLOCK = 4, 10
SWING_RECENT = 5
BOOK_BAND = 0.01
SPREAD_REF_BPS = 25.0

NO_SENTIMENT = "no sentiment feed in the configured sources"
NO_OPEN_INTEREST = "open interest needs derivatives data; spot sources have none"


@dataclass(frozen=True)
class ComponentScore:
    """One component: score 0-100 (None when unavailable, with ``reason``)."""

    name: str
    score: float | None
    sub_scores: dict[str, float | None]
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "score": _round(self.score),
            "sub_scores": {k: _round(v) for k, v in self.sub_scores.items()},
            "reason": self.reason,
        }


@dataclass(frozen=True)
class ConfluenceResult:
    """Blended score, its signal and reliability, the components and the weights applied."""

    score: float
    signal: str
    reliability: float
    components: dict[str, ComponentScore]
    weights_used: dict[str, float]

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly: scores rounded to 2 decimals, reliability and weights to 4.
        Built once per result and then shared (a result is reused by every snapshot
        until its inputs change, and its views are rebuilt several times a second):
        callers must not modify it."""
        built = self.__dict__.get("_as_dict")  # frozen: cached beside the fields
        if built is None:
            built = self.__dict__["_as_dict"] = {
                "score": round(self.score, 2),
                "signal": self.signal,
                "reliability": round(self.reliability, 4),
                "components": {name: c.to_dict() for name, c in self.components.items()},
                "weights_used": {name: round(w, 4) for name, w in self.weights_used.items()},
            }
        return built


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


# A signal needs evidence: the available components must carry at least this share of
# the configured weight. Without it (e.g. no usable candles: the order book alone, 20%)
# the score is still shown, but the signal is neutral.
MIN_SIGNAL_COVERAGE = 0.5


def coverage(components: Mapping[str, ComponentScore], weights: ConfluenceWeights) -> float:
    """The share (0–1) of the configured component weight whose component has a score."""
    configured = {name: w for name, w in weights.components.items() if w > 0}
    total = sum(configured.values())
    available = sum(
        w
        for name, w in configured.items()
        if (c := components.get(name)) is not None and c.score is not None
    )
    return available / total if total > 0 else 0.0


def evidenced_signal(
    score: float, components: Mapping[str, ComponentScore], weights: ConfluenceWeights
) -> str:
    """``signal_for`` when the available components carry at least
    ``MIN_SIGNAL_COVERAGE`` of the configured weight, else ``neutral``."""
    if coverage(components, weights) < MIN_SIGNAL_COVERAGE:
        return "neutral"
    return signal_for(score, weights)


def signal_for(score: float, weights: ConfluenceWeights) -> str:
    """``long`` at or above the long threshold, ``short`` at or below the short one."""
    if score >= weights.long_threshold:
        return "long"
    if score <= weights.short_threshold:
        return "short"
    return "neutral"


# --- blending -------------------------------------------------------------------------


def _reliability(components: Mapping[str, ComponentScore], weights: ConfluenceWeights) -> float:
    counted = [name for name in COMPONENTS if weights.components.get(name, 0.0) > 0]
    if not counted:
        return 0.0
    active = sum(
        1
        for name in counted
        if (s := components[name].score) is not None and abs(s - NEUTRAL) > RELIABILITY_TOLERANCE
    )
    return active / len(counted)


def _result(components: dict[str, ComponentScore], weights: ConfluenceWeights) -> ConfluenceResult:
    scores = {name: c.score for name, c in components.items()}
    norm = normalised(scores, weights.components)
    score = blend(scores, norm)
    score = NEUTRAL if score is None else score
    return ConfluenceResult(
        score=score,
        signal=evidenced_signal(score, components, weights),
        reliability=_reliability(components, weights),
        components=components,
        weights_used=norm,
    )


# --- small numeric helpers ------------------------------------------------------------


def _ratio(num: float, den: float) -> float:
    """num/den, 0 when den is not positive (no volatility/volume → no signal)."""
    return num / den if den > 0 else 0.0


def _linear(score: float) -> float | None:
    return min(100.0, max(0.0, score)) if math.isfinite(score) else None


def _slope(y: np.ndarray) -> float:
    """Least-squares slope of y against 0..n-1."""
    x = np.arange(y.shape[0], dtype=np.float64)
    x -= x.mean()
    return float(x @ (y - y.mean())) / float(x @ x)


@dataclass(frozen=True, slots=True)
class _Frame:
    """Columns plus the values several sub-scores share, computed once."""

    o: np.ndarray
    h: np.ndarray
    lo: np.ndarray
    c: np.ndarray
    v: np.ndarray
    atr: float | None
    body: np.ndarray  # (close - open)/(high - low) in [-1, 1], 0 when high = low
    delta: np.ndarray  # volume · body
    finite: bool

    @property
    def n(self) -> int:
        return int(self.c.shape[0])


def _frame(candles: Candles) -> _Frame:
    o, h, lo, c, v = candles.open, candles.high, candles.low, candles.close, candles.volume
    span = h - lo
    body = np.zeros_like(c)
    np.divide(c - o, span, out=body, where=span > 0)
    np.clip(body, -1.0, 1.0, out=body)
    finite = bool(np.isfinite(np.stack((o, h, lo, c, v))).all())
    return _Frame(o, h, lo, c, v, ind.atr(h, lo, c, PERIOD), body, v * body, finite)


# --- components -----------------------------------------------------------------------


def _technical(f: _Frame) -> dict[str, float | None]:
    h, lo, c, atr = f.h, f.lo, f.c, f.atr
    rsi = ind.rsi(c, PERIOD)
    if rsi is not None and np.ptp(c) == 0:
        rsi = NEUTRAL  # TA-Lib reports 0 for a series that never moves
    ao = ind.awesome_oscillator(h, lo)
    trend = None
    if atr is not None and f.n > PERIOD:
        trend = _ratio(float(c[-1] - c[-1 - PERIOD]), atr * math.sqrt(PERIOD))
    willr = ind.williams_r(h, lo, c, PERIOD)
    if willr is not None and h[-PERIOD:].max() == lo[-PERIOD:].min():
        willr = -NEUTRAL  # TA-Lib reports 0 (close at the high) for a zero range
    return {
        "rsi": None if rsi is None else _linear(rsi),
        "ao": None if ao is None or atr is None else squash(_ratio(ao, atr), 2.0),
        "atr": squash(trend, 1.0),
        "cci": squash(ind.cci(h, lo, c, PERIOD), 150.0),
        "adx": squash(_adx_direction(f), 1.0),
        "williams_r": None if willr is None else _linear(willr + 100.0),
    }


def _adx_direction(f: _Frame) -> float | None:
    adx = ind.adx(f.h, f.lo, f.c, PERIOD)
    di = ind.directional_indicators(f.h, f.lo, f.c, PERIOD)
    if adx is None or di is None:
        return None
    plus, minus = di
    return adx / 25.0 * _ratio(plus - minus, plus + minus)


def _volume(f: _Frame) -> dict[str, float | None]:
    names = VOLUME_WEIGHTS.keys()
    if f.n < VOLUME_WINDOW or not f.v[-VOLUME_WINDOW:].sum() > 0:
        return dict.fromkeys(names)
    w = VOLUME_WINDOW
    vol, mean_vol = f.v[-w:], float(f.v[-w:].mean())
    adl = ind.ad(f.h, f.lo, f.c, f.v)
    obv = ind.obv(f.c, f.v)
    rel = ind.relative_volume(f.v, w)
    poc, vwap = _profile(f)
    return {
        "volume_delta": squash(_ratio(float(f.delta[-w:].sum()), float(vol.sum())), 0.5),
        "adl": None if adl is None else squash(_ratio(_slope(adl[-w:]), mean_vol), 0.5),
        "cmf": squash(ind.cmf(f.h, f.lo, f.c, f.v, w), 0.25),
        "obv": None if obv is None else squash(_ratio(_slope(obv[-w:]), mean_vol), 0.5),
        "relative_volume": None if rel is None else squash(rel * float(f.body[-1]), 2.0),
        "volume_profile": _atr_distance(f, poc, 2.0),
        "vwap": _atr_distance(f, vwap, 2.0),
    }


def _atr_distance(f: _Frame, level: float | None, scale: float) -> float | None:
    if level is None or f.atr is None:
        return None
    return squash(_ratio(float(f.c[-1]) - level, f.atr), scale)


def _profile(f: _Frame) -> tuple[float | None, float | None]:
    """(point of control, VWAP) over the last PROFILE_WINDOW candles."""
    h, lo, c, v = (a[-PROFILE_WINDOW:] for a in (f.h, f.lo, f.c, f.v))
    vwap = ind.vwap(h, lo, c, v)
    typical = (h + lo + c) / 3.0
    bottom, top = float(typical.min()), float(typical.max())
    if not (math.isfinite(bottom) and math.isfinite(top)):
        return None, vwap
    if top == bottom:
        return bottom, vwap
    width = (top - bottom) / PROFILE_BINS
    index = np.minimum(((typical - bottom) / width).astype(np.intp), PROFILE_BINS - 1)
    fullest = int(np.argmax(np.bincount(index, weights=v, minlength=PROFILE_BINS)))
    return bottom + (fullest + 0.5) * width, vwap


def _orderflow(f: _Frame) -> dict[str, float | None]:
    if f.n < VOLUME_WINDOW or not f.v[-FLOW_WINDOW:].sum() > 0:
        return dict.fromkeys(ORDERFLOW_WEIGHTS)
    delta, v = f.delta[-FLOW_WINDOW:], f.v[-FLOW_WINDOW:]
    cvd = _ratio(_slope(np.cumsum(delta)), float(v.mean()))
    return {
        "cvd": squash(cvd, 0.3),
        "trade_flow": squash(_trade_flow(f), 0.5),
        "open_interest": None,
        "smart_money_flow": squash(_smart_money(delta, v), 0.5),
    }


def _trade_flow(f: _Frame) -> float | None:
    h, lo, c, v = (a[-VOLUME_WINDOW:] for a in (f.h, f.lo, f.c, f.v))
    span = h - lo
    share = np.full_like(c, 0.5)
    np.divide(c - lo, span, out=share, where=span > 0)
    total = float(v.sum())
    if not total > 0:
        return None
    buy = float(np.clip(share, 0.0, 1.0) @ v)
    return 2.0 * buy / total - 1.0


def _smart_money(delta: np.ndarray, v: np.ndarray) -> float:
    k = int(SMART_MONEY_QUANTILE * (v.shape[0] - 1))
    threshold = np.partition(v, k)[k]
    heavy = v >= threshold
    return _ratio(float(delta[heavy].sum()), float(v[heavy].sum()))


def _price_structure(f: _Frame) -> dict[str, float | None]:
    out: dict[str, float | None] = dict.fromkeys(PRICE_STRUCTURE_WEIGHTS)
    if f.n < VOLUME_WINDOW:
        return out
    h, lo, close = f.h[-RANGE_WINDOW:], f.lo[-RANGE_WINDOW:], float(f.c[-1])
    support, resistance = float(lo.min()), float(h.max())
    span = resistance - support
    out["range_position"] = _linear(100.0 * (close - support) / span) if span > 0 else NEUTRAL
    if f.n >= STRUCTURE_BLOCKS * STRUCTURE_BLOCK:
        out["structure"] = _linear(_structure(f))
    if f.atr is not None and f.n > SWING_RECENT:
        out["swing_levels"] = squash(_breakout(f, close, f.atr), 1.0)
    return out


def _structure(f: _Frame) -> float:
    size = STRUCTURE_BLOCKS * STRUCTURE_BLOCK
    highs = f.h[-size:].reshape(STRUCTURE_BLOCKS, STRUCTURE_BLOCK).max(axis=1)
    lows = f.lo[-size:].reshape(STRUCTURE_BLOCKS, STRUCTURE_BLOCK).min(axis=1)
    x = (np.sign(np.diff(highs)).mean() + np.sign(np.diff(lows)).mean()) / 2.0
    return NEUTRAL + 50.0 * float(x)


def _breakout(f: _Frame, close: float, atr: float) -> float:
    start = -RANGE_WINDOW - SWING_RECENT
    swing_high = float(f.h[start:-SWING_RECENT].max())
    swing_low = float(f.lo[start:-SWING_RECENT].min())
    if close > swing_high:
        return _ratio(close - swing_high, atr)
    if close < swing_low:
        return _ratio(close - swing_low, atr)
    return 0.0


def _orderbook(book: OrderBook | None) -> tuple[dict[str, float | None], float, str | None]:
    """(sub-scores, spread factor, reason when unavailable)."""
    empty: dict[str, float | None] = {"depth_imbalance": None}
    if book is None:
        return empty, 1.0, "no order book"
    bids, asks = np.asarray(book.bids, np.float64), np.asarray(book.asks, np.float64)
    if bids.ndim != 2 or asks.ndim != 2 or not len(bids) or not len(asks):
        return empty, 1.0, "order book side empty"
    best_bid, best_ask = float(bids[0, 0]), float(asks[0, 0])
    if not (0 < best_bid < best_ask and math.isfinite(best_ask)):
        return empty, 1.0, "crossed or invalid order book"
    mid = (best_bid + best_ask) / 2.0
    near_bids = bids[bids[:, 0] >= mid * (1 - BOOK_BAND)]
    near_asks = asks[asks[:, 0] <= mid * (1 + BOOK_BAND)]
    bid_value = float(near_bids[:, 1].sum())
    ask_value = float(near_asks[:, 1].sum())
    total = bid_value + ask_value
    if not (total > 0 and math.isfinite(total)):
        return empty, 1.0, "no depth within the band around mid"
    spread_bps = (best_ask - best_bid) / mid * 1e4
    factor = 1.0 / (1.0 + spread_bps / SPREAD_REF_BPS)
    return {"depth_imbalance": squash((bid_value - ask_value) / total, 0.5)}, factor, None


def _component(name: str, subs: dict[str, float | None], reason: str | None) -> ComponentScore:
    score = weighted(subs, SUB_WEIGHTS[name])
    return ComponentScore(name, score, subs, None if score is not None else reason)


def _data_reason(f: _Frame, needed: int) -> str:
    if not f.finite:
        return "candles contain non-finite values"
    if f.n < needed:
        return f"needs at least {needed} candles, got {f.n}"
    return "not computable from the candles (zero volume or non-finite data)"


_CandleScorer = Callable[[_Frame], dict[str, float | None]]
_CANDLE_COMPONENTS: tuple[tuple[str, _CandleScorer, int], ...] = (
    ("technical", _technical, PERIOD),
    ("volume", _volume, VOLUME_WINDOW),
    ("orderflow", _orderflow, VOLUME_WINDOW),
    ("price_structure", _price_structure, VOLUME_WINDOW),
)


def score_timeframe(
    candles: Candles,
    book: OrderBook | None,
    weights: ConfluenceWeights,
    *,
    derivatives: Derivatives | None = None,
    derivatives_reason: str | None = None,
    trades: Sequence[PublicTrade] | None = None,
    price_change_1h_pct: float | None = None,
) -> ConfluenceResult:
    """Score one timeframe's candles (oldest first) and, optionally, the order book.

    ``derivatives`` (the symbol's perpetual) gives the ``sentiment`` component and the
    orderflow ``open_interest`` sub-score; without it sentiment is unavailable with
    ``derivatives_reason`` (default ``NO_SENTIMENT``). ``price_change_1h_pct`` is the
    price change (percent) over the hour the open-interest change is read over; None
    takes it from the candles when their timeframe is at most an hour. ``trades``
    (public trades, taker side) replace the candle approximation of ``cvd`` when they
    hold at least ``orderflow_feeds.MIN_TRADES`` usable trades.
    """
    f = _frame(candles)
    subs = {
        name: scorer(f) if f.finite else dict.fromkeys(SUB_WEIGHTS[name])
        for name, scorer, _ in _CANDLE_COMPONENTS
    }
    subs["orderflow"] = _with_feeds(
        subs["orderflow"], candles, derivatives, trades, price_change_1h_pct
    )
    built = {
        name: _component(name, subs[name], _data_reason(f, needed))
        for name, _, needed in _CANDLE_COMPONENTS
    }
    built["sentiment"] = _component(
        "sentiment",
        sentiment_sub_scores(derivatives),
        sentiment_reason(derivatives, derivatives_reason or NO_SENTIMENT),
    )
    book_subs, factor, reason = _orderbook(book)
    book_score = _component("orderbook", book_subs, reason)
    if book_score.score is not None:
        adjusted = NEUTRAL + (book_score.score - NEUTRAL) * factor
        book_score = ComponentScore("orderbook", adjusted, book_subs, None)
    built["orderbook"] = book_score
    return _result({name: built[name] for name in COMPONENTS}, weights)


def _with_feeds(
    subs: dict[str, float | None],
    candles: Candles,
    derivatives: Derivatives | None,
    trades: Sequence[PublicTrade] | None,
    price_change_1h: float | None,
) -> dict[str, float | None]:
    """The candle orderflow sub-scores with ``cvd`` from the trades (when enough) and
    ``open_interest`` from the derivatives (None without)."""
    out = dict(subs)
    cvd = trade_cvd_score(trades)
    if cvd is not None:
        out["cvd"] = cvd
    if derivatives is not None:
        if price_change_1h is None:
            price_change_1h = price_change_pct(candles, OI_HOURS)
        oi_change = derivatives.open_interest_change_pct(OI_HOURS)
        out["open_interest"] = open_interest_score(oi_change, price_change_1h)
    return out


# --- across timeframes ----------------------------------------------------------------


def combine_timeframes(
    per_timeframe: Mapping[str, ConfluenceResult], weights: ConfluenceWeights
) -> ConfluenceResult:
    """Blend per-timeframe results with the timeframe weights renormalised over the present.

    Timeframes without a positive weight, or whose result had no available component,
    do not take part. ``score`` is the weighted mean of the timeframe scores; each
    component (and sub-score) is the weighted mean over the timeframes where it is
    available; ``weights_used`` is the effective component weight in ``score``
    (Σ timeframe weight · that timeframe's weights_used). Signal and reliability
    follow from the combined score and components.
    """
    present = {
        tf: w
        for tf, w in weights.timeframes.items()
        if w > 0 and tf in per_timeframe and per_timeframe[tf].weights_used
    }
    total = sum(present.values())
    tf_weights = {tf: w / total for tf, w in present.items()} if total > 0 else {}
    components = {name: _combine_component(name, per_timeframe, tf_weights) for name in COMPONENTS}
    score = blend({tf: per_timeframe[tf].score for tf in tf_weights}, tf_weights)
    score = NEUTRAL if score is None else score
    used: dict[str, float] = {}
    for tf, tf_w in tf_weights.items():
        for name, w in per_timeframe[tf].weights_used.items():
            used[name] = used.get(name, 0.0) + tf_w * w
    return ConfluenceResult(
        score=score,
        signal=evidenced_signal(score, components, weights),
        reliability=_reliability(components, weights),
        components=components,
        weights_used={name: used[name] for name in COMPONENTS if name in used},
    )


def _combine_component(
    name: str, per_timeframe: Mapping[str, ConfluenceResult], tf_weights: Mapping[str, float]
) -> ComponentScore:
    parts = [per_timeframe[tf].components[name] for tf in tf_weights]
    weights = dict(enumerate(tf_weights.values()))

    def mean(values: list[float | None]) -> float | None:
        return weighted(dict(enumerate(values)), weights)

    keys = list(dict.fromkeys(k for part in parts for k in part.sub_scores))
    subs = {k: mean([part.sub_scores.get(k) for part in parts]) for k in keys}
    score = mean([part.score for part in parts])
    reasons = dict.fromkeys(p.reason for p in parts if p.reason)
    reason = None if score is not None else ("; ".join(reasons) or "no timeframe available")
    return ComponentScore(name, score, subs, reason)
