"""Named technical indicators over candle columns, returning the newest value.

Every scalar function returns the indicator's latest value as a ``float``, or
``None`` when it cannot be computed: too few candles for the indicator's
lookback, or a non-finite result. The two series functions (``obv``, ``ad``)
return the whole float64 series, or ``None`` for empty or non-finite input.

TA-Lib does the work wherever it has the indicator (RSI, ATR, CCI, ADX, ±DI,
Williams %R, MACD, OBV, Chaikin A/D line, SMA). What TA-Lib lacks is built on
it or on numpy:

* Awesome oscillator: ``SMA5(median) - SMA34(median)``, median = (high + low) / 2,
  both SMAs from ``talib.SMA``.
* Chaikin money flow: the money-flow volume summed over ``period`` candles divided by
  the volume over the same candles. The sum is read off TA-Lib's A/D line, which is
  the cumulative money-flow volume: ``AD[-1] - AD[-period-1]`` (0 before the first).
* VWAP: Σ typical·volume / Σ volume over the given window, typical = (H + L + C) / 3.
* Relative volume: the last volume over the mean volume of the ``period`` candles
  before it.

Input containing NaN or infinity gives ``None`` (TA-Lib would quietly return numbers,
e.g. RSI 0 for a NaN close). Degenerate inputs are reported as TA-Lib reports them
(RSI and Williams %R of a constant series are 0 in TA-Lib); interpreting them is the
caller's job. Zero volume makes CMF, VWAP and relative volume ``None``.
"""

from __future__ import annotations

import math

import numpy as np
import talib


def _inputs(need: int, *columns: np.ndarray) -> tuple[np.ndarray, ...] | None:
    """The columns as contiguous float64 when there are ``need`` rows and all are finite.

    TA-Lib does not reject NaN; it quietly returns numbers (RSI 0 for a NaN close),
    so non-finite input is refused here.
    """
    arrays = tuple(np.ascontiguousarray(col, dtype=np.float64) for col in columns)
    if len(arrays[0]) < max(need, 1) or not all(np.isfinite(a).all() for a in arrays):
        return None
    return arrays


def _last(series: np.ndarray) -> float | None:
    if series.size == 0:
        return None
    value = float(series[-1])
    return value if math.isfinite(value) else None


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def rsi(close: np.ndarray, period: int = 14) -> float | None:
    """Relative strength index (Wilder), 0-100. Needs ``period + 1`` candles."""
    cols = _inputs(period + 1, close)
    return None if cols is None else _last(talib.RSI(cols[0], timeperiod=period))


def awesome_oscillator(
    high: np.ndarray, low: np.ndarray, fast: int = 5, slow: int = 34
) -> float | None:
    """Awesome oscillator: SMA(fast) - SMA(slow) of the median price. Needs ``slow`` candles."""
    cols = _inputs(slow, high, low)
    if cols is None:
        return None
    median = (cols[0] + cols[1]) / 2.0
    fast_sma = _last(talib.SMA(median, timeperiod=fast))
    slow_sma = _last(talib.SMA(median, timeperiod=slow))
    if fast_sma is None or slow_sma is None:
        return None
    return fast_sma - slow_sma


def atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> float | None:
    """Average true range (Wilder), price units. Needs ``period + 1`` candles."""
    cols = _inputs(period + 1, high, low, close)
    return None if cols is None else _last(talib.ATR(cols[0], cols[1], cols[2], timeperiod=period))


def cci(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> float | None:
    """Commodity channel index (unbounded, ±100 is the usual band). Needs ``period`` candles."""
    cols = _inputs(period, high, low, close)
    return None if cols is None else _last(talib.CCI(cols[0], cols[1], cols[2], timeperiod=period))


def adx(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14) -> float | None:
    """Average directional index, 0-100 (trend strength). Needs ``2 * period`` candles."""
    cols = _inputs(2 * period, high, low, close)
    return None if cols is None else _last(talib.ADX(cols[0], cols[1], cols[2], timeperiod=period))


def directional_indicators(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14
) -> tuple[float, float] | None:
    """(+DI, -DI), each 0-100 (trend direction). Needs ``period + 1`` candles."""
    cols = _inputs(period + 1, high, low, close)
    if cols is None:
        return None
    plus = _last(talib.PLUS_DI(cols[0], cols[1], cols[2], timeperiod=period))
    minus = _last(talib.MINUS_DI(cols[0], cols[1], cols[2], timeperiod=period))
    if plus is None or minus is None:
        return None
    return plus, minus


def williams_r(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int = 14
) -> float | None:
    """Williams %R, -100 (close at the period low) … 0 (at the high). Needs ``period`` candles."""
    cols = _inputs(period, high, low, close)
    if cols is None:
        return None
    return _last(talib.WILLR(cols[0], cols[1], cols[2], timeperiod=period))


def macd_histogram(
    close: np.ndarray, fast: int = 12, slow: int = 26, signal: int = 9
) -> float | None:
    """MACD line - signal line. Needs ``slow + signal - 1`` candles."""
    cols = _inputs(slow + signal - 1, close)
    if cols is None:
        return None
    _, _, hist = talib.MACD(cols[0], fastperiod=fast, slowperiod=slow, signalperiod=signal)
    return _last(hist)


def obv(close: np.ndarray, volume: np.ndarray) -> np.ndarray | None:
    """On-balance volume series (TA-Lib starts it at the first volume)."""
    cols = _inputs(1, close, volume)
    return None if cols is None else talib.OBV(*cols)


def ad(
    high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray
) -> np.ndarray | None:
    """Chaikin accumulation/distribution line: cumulative money-flow volume."""
    cols = _inputs(1, high, low, close, volume)
    return None if cols is None else talib.AD(*cols)


def cmf(
    high: np.ndarray,
    low: np.ndarray,
    close: np.ndarray,
    volume: np.ndarray,
    period: int = 20,
) -> float | None:
    """Chaikin money flow over the last ``period`` candles, -1 … 1.

    Σ money-flow volume / Σ volume, the numerator taken from TA-Lib's A/D line.
    """
    line = ad(high, low, close, volume) if len(close) >= period else None
    if line is None:
        return None
    before = float(line[-period - 1]) if len(line) > period else 0.0
    total = float(np.sum(volume[-period:]))
    if not total > 0:
        return None
    return _finite((float(line[-1]) - before) / total)


def vwap(high: np.ndarray, low: np.ndarray, close: np.ndarray, volume: np.ndarray) -> float | None:
    """Volume-weighted average typical price over the whole given window."""
    cols = _inputs(1, high, low, close, volume)
    if cols is None:
        return None
    h, lo, c, vol = cols
    total = float(vol.sum())
    if not total > 0:
        return None
    return _finite(float(((h + lo + c) / 3.0) @ vol) / total)


def relative_volume(volume: np.ndarray, period: int = 20) -> float | None:
    """Last volume / mean of the ``period`` volumes before it. Needs ``period + 1`` candles."""
    cols = _inputs(period + 1, volume[-period - 1 :])
    if cols is None:
        return None
    mean = float(cols[0][:-1].mean())
    return float(cols[0][-1]) / mean if mean > 0 else None
