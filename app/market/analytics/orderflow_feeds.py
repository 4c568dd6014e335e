"""Orderflow sub-scores from feeds beyond the candles: open interest against price, and
the cumulative volume delta of real trades (taker side). 0-100, 50 neutral, None when
the feed gives nothing usable (``s(x, scale) = 50 + 50·tanh(x / scale)``, see
``scoring``).

open_interest  x = tanh(ΔP / 0.2) · ΔOI · k, scale 1, over the same hour: ΔOI the open
               interest change and ΔP the price change, both in percent; k = 1 when
               open interest rises, 0.6 when it falls. Rising OI with a rising price (new
               positions behind the move) scores above 50, rising OI with a falling price
               below; falling OI (positions closing) is the weaker signal against the
               move (short covering in a rally, long exits in a drop). 50 when either
               change is 0; ``100 - s`` when the price change is reversed. A 1 h OI change
               of 1 % behind a 0.2 % move scores 50 + 50·tanh(0.76) ≈ 82. Source:
               Virtuoso's ``_calculate_open_interest_score`` (virtexvirtuoso/Virtuoso,
               src/indicators/orderflow_indicators.py): the same four quadrants, with the
               closing quadrants at 30/50 of the opening ones' strength (our k); we make
               its thresholded steps continuous.
cvd (trades)   x = (Σ buy amount - Σ sell amount) / Σ amount over the trades kept (taker
               side; base units), scale 0.3 — the scale of the candle CVD, whose
               x (OLS slope of cumulative delta ÷ mean volume) estimates the same taker
               imbalance from candle shapes. Needs at least 20 valid trades (finite,
               positive amount); otherwise the candle approximation stands. Source:
               Virtuoso's ``_calculate_cvd`` takes the same Σ signed ÷ Σ amount.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from app.market.analytics.scoring import squash
from app.market.models.candles import Candles
from app.market.models.derivatives import HOUR_MS
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.models.trades import PublicTrade

OI_HOURS = 1.0  # horizon of the open-interest and price changes
OI_SCALE = 1.0  # percent of open interest over the hour
OI_PRICE_SCALE = 0.2  # percent price move read as a clear direction (tanh(1))
OI_CLOSING_FACTOR = 0.6  # falling OI: Virtuoso's 30/50
TRADE_CVD_SCALE = 0.3  # the candle CVD's scale
MIN_TRADES = 20
SIDES = ("buy", "sell")


def open_interest_score(
    oi_change_pct: float | None, price_change_pct: float | None
) -> float | None:
    """0-100 from the open interest change and the price change over the same hour
    (percent each): ``squash(tanh(ΔP/0.2) · ΔOI · k, 1)``, k = 0.6 when ΔOI < 0;
    None when either is missing or non-finite."""
    if oi_change_pct is None or price_change_pct is None:
        return None
    if not (math.isfinite(oi_change_pct) and math.isfinite(price_change_pct)):
        return None
    direction = math.tanh(price_change_pct / OI_PRICE_SCALE)
    k = 1.0 if oi_change_pct >= 0 else OI_CLOSING_FACTOR
    return squash(direction * oi_change_pct * k, OI_SCALE)


def taker_imbalance(trades: Sequence[PublicTrade] | None) -> float | None:
    """(Σ buy - Σ sell amount) / Σ amount, in [-1, 1], over the trades with a finite,
    positive amount and a known side; None with fewer than ``MIN_TRADES`` of them (or
    an overflowing total)."""
    valid = [
        t for t in trades or () if math.isfinite(t.amount) and t.amount > 0 and t.side in SIDES
    ]
    if len(valid) < MIN_TRADES:
        return None
    signed = math.fsum(t.amount if t.side == "buy" else -t.amount for t in valid)
    total = math.fsum(t.amount for t in valid)
    return signed / total if math.isfinite(total) else None


def trade_cvd_score(trades: Sequence[PublicTrade] | None) -> float | None:
    """0-100 from the trades' taker imbalance: ``squash(taker_imbalance, 0.3)``; None
    when ``taker_imbalance`` is."""
    return squash(taker_imbalance(trades), TRADE_CVD_SCALE)


def price_change_pct(candles: Candles, hours: float = OI_HOURS) -> float | None:
    """The price change (percent) over ``hours`` from candles whose timeframe is at most
    that long: the last close against the close of the newest candle opened at least
    ``hours`` before the last one. None for a longer or unknown timeframe, candles not
    spanning ``hours``, or a non-finite or non-positive close."""
    span_ms = hours * HOUR_MS
    seconds = TIMEFRAME_SECONDS.get(candles.timeframe)
    ts = candles.timestamp_ms
    if seconds is None or seconds * 1000 > span_ms or len(candles) < 2:
        return None
    index = int(np.searchsorted(ts, ts[-1] - span_ms, side="right")) - 1
    if index < 0:
        return None
    now, then = float(candles.close[-1]), float(candles.close[index])
    if not (math.isfinite(now) and math.isfinite(then) and then > 0):
        return None
    return (now / then - 1.0) * 100.0
