"""The indicator wrappers return TA-Lib's own last value, or an independent numpy result."""

from __future__ import annotations

import numpy as np
import pytest
import talib

from app.market.analytics import indicators as ind


@pytest.fixture(scope="module")
def ohlcv() -> tuple[np.ndarray, ...]:
    rng = np.random.default_rng(7)
    n = 300
    close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, n)))
    open_ = np.r_[100.0, close[:-1]]
    high = np.maximum(open_, close) * (1 + rng.uniform(0, 0.005, n))
    low = np.minimum(open_, close) * (1 - rng.uniform(0, 0.005, n))
    volume = rng.lognormal(3, 0.6, n)
    return open_, high, low, close, volume


def test_talib_wrappers_equal_talib_last_value(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v = ohlcv
    assert ind.rsi(c) == talib.RSI(c, 14)[-1]
    assert ind.atr(h, lo, c) == talib.ATR(h, lo, c, 14)[-1]
    assert ind.cci(h, lo, c) == talib.CCI(h, lo, c, 14)[-1]
    assert ind.adx(h, lo, c) == talib.ADX(h, lo, c, 14)[-1]
    assert ind.williams_r(h, lo, c) == talib.WILLR(h, lo, c, 14)[-1]
    assert ind.macd_histogram(c) == talib.MACD(c, 12, 26, 9)[2][-1]
    assert ind.directional_indicators(h, lo, c) == (
        talib.PLUS_DI(h, lo, c, 14)[-1],
        talib.MINUS_DI(h, lo, c, 14)[-1],
    )
    np.testing.assert_array_equal(ind.obv(c, v), talib.OBV(c, v))
    np.testing.assert_array_equal(ind.ad(h, lo, c, v), talib.AD(h, lo, c, v))


def test_awesome_oscillator_is_sma5_minus_sma34_of_median(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, _, _ = ohlcv
    median = (h + lo) / 2
    expected = median[-5:].mean() - median[-34:].mean()
    assert ind.awesome_oscillator(h, lo) == pytest.approx(expected, rel=1e-9, abs=1e-12)


def test_cmf_matches_money_flow_volume_sum(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v = ohlcv
    multiplier = ((c - lo) - (h - c)) / (h - lo)
    expected = (multiplier * v)[-20:].sum() / v[-20:].sum()
    assert ind.cmf(h, lo, c, v, 20) == pytest.approx(expected, rel=1e-7, abs=1e-9)
    # exactly `period` candles: the A/D line starts at zero before the first
    short = [a[-20:].copy() for a in (h, lo, c, v)]
    assert ind.cmf(*short, period=20) == pytest.approx(expected, rel=1e-7, abs=1e-9)


def test_vwap_and_relative_volume(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v = ohlcv
    typical = (h + lo + c) / 3
    assert ind.vwap(h, lo, c, v) == pytest.approx(np.sum(typical * v) / np.sum(v), rel=1e-12)
    assert ind.relative_volume(v, 20) == pytest.approx(v[-1] / np.mean(v[-21:-1]), rel=1e-12)


def test_wrappers_accept_non_contiguous_views(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, _ = ohlcv
    assert ind.rsi(c[::2]) == talib.RSI(np.ascontiguousarray(c[::2]), 14)[-1]
    assert ind.atr(h[::2], lo[::2], c[::2]) == pytest.approx(
        talib.ATR(h[::2].copy(), lo[::2].copy(), c[::2].copy(), 14)[-1]
    )


def test_too_short_input_gives_none(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v = ohlcv
    cut = {k: a[:13] for k, a in zip("hlcv", (h, lo, c, v), strict=True)}
    hh, ll, cc, vv = cut["h"], cut["l"], cut["c"], cut["v"]
    assert ind.rsi(c[:14]) is None  # needs 15
    assert ind.rsi(c[:15]) is not None
    assert ind.atr(h[:14], lo[:14], c[:14]) is None
    assert ind.cci(hh, ll, cc) is None
    assert ind.williams_r(hh, ll, cc) is None
    assert ind.adx(h[:27], lo[:27], c[:27]) is None  # needs 28
    assert ind.adx(h[:28], lo[:28], c[:28]) is not None
    assert ind.directional_indicators(h[:14], lo[:14], c[:14]) is None
    assert ind.macd_histogram(c[:33]) is None  # needs 34
    assert ind.macd_histogram(c[:34]) is not None
    assert ind.awesome_oscillator(h[:33], lo[:33]) is None
    assert ind.cmf(hh, ll, cc, vv, 20) is None
    assert ind.relative_volume(v[:20], 20) is None
    empty = np.empty(0)
    assert ind.vwap(empty, empty, empty, empty) is None
    assert ind.obv(empty, empty) is None
    assert ind.ad(empty, empty, empty, empty) is None


def test_non_finite_or_zero_volume_gives_none(ohlcv: tuple[np.ndarray, ...]) -> None:
    _, h, lo, c, v = ohlcv
    broken = c.copy()
    broken[-1] = np.nan
    assert ind.rsi(broken) is None
    zero = np.zeros_like(v)
    assert ind.vwap(h, lo, c, zero) is None
    assert ind.cmf(h, lo, c, zero) is None
    assert ind.relative_volume(zero) is None
