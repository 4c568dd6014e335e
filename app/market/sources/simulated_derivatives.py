"""The simulated market's perpetual swaps: funding, open interest, the long/short
account ratio and liquidations, read off the same price path as its candles and tickers.

Every USDT-quoted simulated pair has a linear perpetual (``BTC/USDT:USDT``); its
positioning is a deterministic function of the pair's price path, so it is as
reproducible as the prices (same seed and clock, same values) and moves with them: a
drop shows falling price, funding turning down, longs thinning and long liquidations.

The model (hourly boundary prices ``P(t)``, ``r₈(t) = ln P(t) / P(t − 8 h)``, ``σ`` the
pair's hourly volatility, ``z = ln P(t) / P(t − 1 h) / σ``):

- funding rate per 8 h: ``clip(0.0001 + 0.02 · r₈, ±0.0075)`` — Bybit's baseline
  interest (0.01 % per 8 h) plus a premium that follows the trend, within Bybit's cap;
  settled at 00/08/16 UTC, and predicted between settlements from the live price
  against the close of the minute that ended 8 h before;
- open interest (contracts): ``base · exp(L)``, ``L(t) = Σⱼ₌₀²⁸⁷ dʲ · f(z(t − j h))``,
  ``f(z) = 0.006 (|z| − √(2/π)) + 0.01 z`` (``z`` clipped to ±10), ``d = 2^(−1/48)``
  (a 48 h half-life): it grows when moves are large and with the trend, and on a
  random walk's average moves stays near ``base`` (1.5 days of the pair's turnover at
  its listed price) — it changes by a few percent a day, as on an exchange;
- long/short account ratio: ``exp(0.5 · tanh((funding − 0.0001) / 0.001))``: above 1
  when funding says longs are crowded, below 1 when shorts are;
- liquidations over the last hour, as fractions of open interest value:
  ``5·10⁻⁵ + 2·10⁻⁴ · max(0, D − 1)²`` (at most 5 %), ``D`` the hour's deepest drawdown
  in ``σ`` (long positions) or its highest run-up (short positions).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from app.market.models.derivatives import HOUR_MS, Derivatives, Liquidations, Point

BASELINE_FUNDING = 0.0001
"""Bybit's interest component of the funding rate: 0.01 % per 8 h."""
FUNDING_CAP = 0.0075
"""Bybit's cap on a linear perpetual's funding rate (±0.75 % per 8 h)."""
FUNDING_PER_RETURN = 0.02
"""Premium per unit of 8 h log return."""
FUNDING_INTERVAL_MS = 8 * HOUR_MS
FUNDING_SETTLEMENTS = 21
"""Settlements in the funding history: a week."""
HISTORY_HOURS = 49
"""Hourly points of open interest and long/short history: 48 h back and the newest."""
OI_WINDOW = 288
"""Hours of returns in the open interest level (its weight is then 1.6 % of the newest)."""
OI_DECAY = 2 ** (-1 / 48)
OI_ON_MOVE = 0.006
OI_ON_TREND = 0.01
OI_Z_CLIP = 10.0
"""An hour's move counts at most this many σ for open interest (keeps it finite)."""
OI_TURNOVER_DAYS = 1.5
"""The relaxed open interest value, in days of the pair's quote turnover."""
RATIO_LEAN = 0.5
RATIO_SCALE = 0.001
LIQUIDATION_FLOOR = 5e-5
LIQUIDATION_ON_MOVE = 2e-4
LIQUIDATION_CAP = 0.05
LIQUIDATION_ORDER = 1e-5
"""A typical liquidation order, as a fraction of open interest value (at least 100)."""
_MEAN_ABS_NORMAL = math.sqrt(2 / math.pi)


@dataclass(frozen=True, slots=True)
class PerpetualPath:
    """What a pair's perpetual is read from, at ``now_ms``: the live ``price``; the
    price at each hour boundary (``hour_ms`` epoch ms ascending, hourly, the last at or
    before now; ``hour_price``); the 1-minute candles of the last 9 hours
    (``minute_ms`` starts, ``minute_high``, ``minute_low``, ``minute_close``, the
    newest possibly forming); ``hourly_vol`` the σ of an hour's log return and
    ``base_open_interest`` the relaxed open interest (contracts)."""

    symbol: str
    contract: str
    now_ms: int
    price: float
    hour_ms: np.ndarray
    hour_price: np.ndarray
    minute_ms: np.ndarray
    minute_high: np.ndarray
    minute_low: np.ndarray
    minute_close: np.ndarray
    hourly_vol: float
    base_open_interest: float


def perpetual_positioning(path: PerpetualPath) -> Derivatives:
    """The ``Derivatives`` of the path's perpetual at ``path.now_ms`` (see the module
    for the model). Histories are oldest first; ValueError for a path with fewer than
    ten hour boundaries."""
    if path.hour_ms.size < 10:
        raise ValueError(f"{path.symbol}: {path.hour_ms.size} hour boundaries, need 10")
    log_price = np.log(path.hour_price)
    funding = funding_rates(log_price[8:] - log_price[:-8])
    funding_ms = path.hour_ms[8:]
    rate = float(funding_rates(np.array([_return_over(path, 8 * HOUR_MS)]))[0])
    open_interest, oi_history = _open_interest(path, log_price)
    ratios = long_short_ratios(funding)
    value = open_interest * path.price
    return Derivatives(
        symbol=path.symbol,
        contract=path.contract,
        timestamp_ms=path.now_ms,
        funding_rate=rate,
        next_funding_time_ms=(path.now_ms // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS,
        open_interest=open_interest,
        open_interest_value=round(value, 2),
        long_short_ratio=float(long_short_ratios(np.array([rate]))[0]),
        funding_history=_settlements(funding_ms, funding),
        open_interest_history=oi_history,
        long_short_history=_points(funding_ms[-HISTORY_HOURS:], ratios[-HISTORY_HOURS:]),
        liquidations=_liquidations(path, value),
    )


def funding_rates(returns_8h: np.ndarray) -> np.ndarray:
    """Funding rates (fraction per 8 h, rounded to 10⁻⁸) for 8-hour log returns:
    ``clip(0.0001 + 0.02 · r₈, ±0.0075)``."""
    premium = FUNDING_PER_RETURN * np.nan_to_num(returns_8h)
    return np.round(np.clip(BASELINE_FUNDING + premium, -FUNDING_CAP, FUNDING_CAP), 8)


def long_short_ratios(funding: np.ndarray) -> np.ndarray:
    """Accounts long ÷ short (rounded to 10⁻⁴) for funding rates:
    ``exp(0.5 · tanh((funding − 0.0001) / 0.001))``, within [0.60, 1.65]."""
    lean = np.tanh((funding - BASELINE_FUNDING) / RATIO_SCALE)
    return np.round(np.exp(RATIO_LEAN * lean), 4)


def open_interest_level(z: np.ndarray) -> np.ndarray:
    """``L`` (log of open interest over its base) at each hour from the hourly
    standardised returns ``z`` (oldest first): the ``OI_WINDOW``-hour decayed sum of
    ``f(z)``, one value per hour with a full window (fewer hours: one, over them all)."""
    window = min(OI_WINDOW, z.size)
    weights = OI_DECAY ** np.arange(window)
    return np.convolve(_oi_impulse(z), weights, mode="full")[window - 1 : z.size]


def _oi_impulse(z: np.ndarray) -> np.ndarray:
    """``f(z) = 0.006 (|z| − √(2/π)) + 0.01 z``, ``z`` clipped to ±10: zero on average
    for a random walk."""
    z = np.clip(z, -OI_Z_CLIP, OI_Z_CLIP)
    return OI_ON_MOVE * (np.abs(z) - _MEAN_ABS_NORMAL) + OI_ON_TREND * z


def _open_interest(path: PerpetualPath, log_price: np.ndarray) -> tuple[float, tuple[Point, ...]]:
    """The open interest now (contracts) and its hourly history (contracts at each hour
    boundary, the last ``HISTORY_HOURS``)."""
    z = np.diff(log_price) / path.hourly_vol
    level = open_interest_level(z)
    contracts = np.round(path.base_open_interest * np.exp(level), 3)
    current = path.base_open_interest * math.exp(_level_now(path, z, float(level[-1])))
    history = _points(path.hour_ms[-level.size :][-HISTORY_HOURS:], contracts[-HISTORY_HOURS:])
    return round(current, 3), history


def _level_now(path: PerpetualPath, z: np.ndarray, last: float) -> float:
    """``L`` now: the level ``last`` at the last boundary moved on by the hour's return
    so far, ``φ`` the elapsed fraction of the hour — ``L(t + φ) = d^φ L(t) + f_φ(z_φ) −
    φ d^W f(z(t − W + 1))`` (the hour leaving the window), with ``f_φ`` expecting
    ``√φ · √(2/π)`` of movement: it is ``L(t)`` at ``φ = 0`` and meets the next
    boundary's level at ``φ = 1`` when the price meets that hour's close."""
    phi = min(1.0, max(0.0, (path.now_ms - int(path.hour_ms[-1])) / HOUR_MS))
    partial = math.log(path.price / float(path.hour_price[-1])) / path.hourly_vol
    partial = min(OI_Z_CLIP, max(-OI_Z_CLIP, partial))
    impulse = OI_ON_MOVE * (abs(partial) - _MEAN_ABS_NORMAL * math.sqrt(phi))
    impulse += OI_ON_TREND * partial
    window = min(OI_WINDOW, z.size)
    oldest = z[z.size - window : z.size - window + 1]
    leaving = float(_oi_impulse(oldest)[0]) if window == OI_WINDOW else 0.0
    return OI_DECAY**phi * last + impulse - phi * OI_DECAY**window * leaving


def _settlements(stamps: np.ndarray, funding: np.ndarray) -> tuple[Point, ...]:
    """The funding of the hours that are settlements (00/08/16 UTC), the last week."""
    settled = stamps % FUNDING_INTERVAL_MS == 0
    return _points(stamps[settled][-FUNDING_SETTLEMENTS:], funding[settled][-FUNDING_SETTLEMENTS:])


def _points(stamps: np.ndarray, values: np.ndarray) -> tuple[Point, ...]:
    return tuple((int(s), float(v)) for s, v in zip(stamps, values, strict=True))


def _return_over(path: PerpetualPath, span_ms: int) -> float:
    """Log return from the close of the minute ending at or before ``now − span_ms`` to
    the live price (0 without such a minute)."""
    ends = path.minute_ms + 60_000
    before = np.flatnonzero(ends <= path.now_ms - span_ms)
    if before.size == 0:
        return 0.0
    return math.log(path.price / float(path.minute_close[before[-1]]))


def _liquidations(path: PerpetualPath, value: float) -> Liquidations:
    """Long and short liquidations over the last hour (see the module)."""
    recent = path.minute_ms + 60_000 > path.now_ms - HOUR_MS
    highs = np.log(np.append(path.minute_high[recent], path.price))
    lows = np.log(np.append(path.minute_low[recent], path.price))
    drawdown = float(np.max(np.maximum.accumulate(highs) - lows)) / path.hourly_vol
    run_up = float(np.max(highs - np.minimum.accumulate(lows))) / path.hourly_vol
    long_value, long_count = _liquidated(drawdown, value)
    short_value, short_count = _liquidated(run_up, value)
    return Liquidations(HOUR_MS, path.now_ms, long_value, short_value, long_count, short_count)


def _liquidated(move: float, value: float) -> tuple[float, int]:
    """(value, count) liquidated on one side for a move of ``move`` σ against it."""
    share = LIQUIDATION_FLOOR + LIQUIDATION_ON_MOVE * max(0.0, move - 1.0) ** 2
    liquidated = round(value * min(LIQUIDATION_CAP, share), 2)
    order = max(100.0, value * LIQUIDATION_ORDER)
    return liquidated, max(1, round(liquidated / order)) if liquidated > 0 else 0


def hourly_volatility(beta: float, idio_vol: float, btc_annual_vol: float) -> float:
    """σ of a pair's hourly log return in the factor model: ``√((β σ_BTC)² + σ_idio²)``
    annualised, over √(365 · 24)."""
    return math.sqrt((beta * btc_annual_vol) ** 2 + idio_vol**2) / math.sqrt(365 * 24)


def perpetual_of(base: str, quote: str) -> str:
    """The ccxt name of the linear perpetual of a pair: ``BTC/USDT:USDT``."""
    return f"{base}/{quote}:{quote}"


def no_perpetual_reason(symbol: str, quote: str) -> str | None:
    """Why a listed pair has no simulated perpetual (None: it has one): only
    USDT-quoted pairs have linear (USDT-margined) perpetuals."""
    if quote == "USDT":
        return None
    return f"no linear perpetual: {symbol} is quoted in {quote}, perpetuals are USDT-margined"
