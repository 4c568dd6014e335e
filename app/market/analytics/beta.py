"""Bitcoin beta of each asset: how much of its move is BTC's move, per timeframe.

Returns are log returns of closes, taken only between candles that both series have
(timestamp intersection) and that are consecutive in time (one timeframe apart), so a
missing candle never produces a two-period return. The last ``window`` such returns
are used (``BETA_WINDOWS``: 4h x 180, 1h x 168, 5m x 288); fewer than ``MIN_POINTS``
(30) gives no estimate.

One estimator throughout: the sample covariance matrix with ddof=1 (``np.cov``).
beta = cov(a, b) / var(b); alpha = mean(a) - beta * mean(b) (per period, log returns);
correlation = cov / (sd(a) * sd(b)); r_squared = correlation^2 (the R^2 of the OLS fit);
volatility_ratio = sd(a) / sd(b). The original mixed a ddof=1 covariance with a ddof=0
variance, which biased beta by n/(n-1); that is not repeated.

Statistics undefined on the data are null with a reason, never a made-up number, and
are left out of the market aggregates (``beta_overview``): fewer than ``MIN_POINTS``
aligned returns or zero BTC variance give no estimate at all (``explain_beta`` says
why); zero asset variance (a pegged stablecoin) gives beta 0 (the OLS slope is
defined) but correlation and r_squared null (0/0), named in ``BetaStats.undefined``.

Risk bands, each including its lower bound: beta < 0.5 defensive, [0.5, 0.9) low,
[0.9, 1.1) neutral, [1.1, 1.5) moderate, >= 1.5 high.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from app.market.models.candles import Candles
from app.market.models.timeframes import TIMEFRAME_SECONDS

BETA_WINDOWS: dict[str, int] = {"4h": 180, "1h": 168, "5m": 288}
MIN_POINTS = 30

RISK_BANDS: tuple[str, ...] = ("defensive", "low", "neutral", "moderate", "high")
_BAND_FLOORS: tuple[tuple[float, str], ...] = (
    (1.5, "high"),
    (1.1, "moderate"),
    (0.9, "neutral"),
    (0.5, "low"),
)

CRASH_BTC_PCT = -5.0
CRASH_CORRELATION = 0.7
RISK_OFF_BTC_PCT = -2.0
RISK_ON_BTC_PCT = 2.0
RISK_ON_MARKET_BETA = 1.0


@dataclass(frozen=True, slots=True)
class BetaStats:
    """Beta of one asset against BTC on one timeframe, from ``points`` return pairs."""

    timeframe: str
    points: int
    beta: float
    alpha: float
    correlation: float | None
    r_squared: float | None
    volatility_ratio: float
    risk_band: str
    undefined: Mapping[str, str] = field(default_factory=dict)
    """Statistic name → why it is None (e.g. zero variance of the asset's returns)."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly; ratios rounded to 4 decimals, the per-period alpha to 8; an
        undefined statistic is null and named in ``undefined`` with its reason."""
        return {  # field by field: ``asdict`` (a deep copy) was a hot spot of view building
            "timeframe": self.timeframe,
            "points": self.points,
            "beta": _round4(self.beta),
            "alpha": round(self.alpha, 8),
            "correlation": _round4(self.correlation),
            "r_squared": _round4(self.r_squared),
            "volatility_ratio": _round4(self.volatility_ratio),
            "risk_band": self.risk_band,
            "undefined": dict(self.undefined),
        }


def _round4(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def risk_band(beta: float) -> str:
    """The band of ``beta``; each band includes its lower bound (0.9 is neutral)."""
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta}")
    return next((band for floor, band in _BAND_FLOORS if beta >= floor), "defensive")


def aligned_returns(asset: Candles, btc: Candles) -> tuple[np.ndarray, np.ndarray]:
    """Log returns of both series over the candles they share, consecutive pairs only."""
    if asset.timeframe != btc.timeframe:
        raise ValueError(f"timeframes differ: {asset.timeframe} vs {btc.timeframe}")
    times, ia, ib = np.intersect1d(asset.timestamp_ms, btc.timestamp_ms, return_indices=True)
    if times.shape[0] < 2:
        return np.empty(0), np.empty(0)
    step = np.diff(times)
    period_ms = TIMEFRAME_SECONDS.get(asset.timeframe, 0) * 1000 or int(step.min())
    with np.errstate(divide="ignore", invalid="ignore"):
        ra = np.diff(np.log(asset.close[ia]))
        rb = np.diff(np.log(btc.close[ib]))
    keep = (step == period_ms) & np.isfinite(ra) & np.isfinite(rb)
    return ra[keep], rb[keep]


def compute_beta(asset: Candles, btc: Candles, window: int) -> BetaStats | None:
    """Beta statistics over the last ``window`` aligned returns; None when beta itself
    is undefined (see ``explain_beta`` for the reason)."""
    return explain_beta(asset, btc, window)[0]


def explain_beta(asset: Candles, btc: Candles, window: int) -> tuple[BetaStats | None, str]:
    """(statistics, "") or (None, why): fewer than MIN_POINTS aligned consecutive
    returns, zero or non-finite BTC variance."""
    ra, rb = aligned_returns(asset, btc)
    ra, rb = ra[-window:], rb[-window:]
    n = int(ra.shape[0])
    if n < max(MIN_POINTS, 2):
        return None, f"too few aligned points: {n} returns, at least {MIN_POINTS} needed"
    cov = np.cov(ra, rb, ddof=1)
    var_a, var_b, cov_ab = float(cov[0, 0]), float(cov[1, 1]), float(cov[0, 1])
    if not (var_b > 0 and math.isfinite(var_b) and math.isfinite(var_a)):
        return None, f"zero variance: BTC's price did not move over {n} returns"
    beta = cov_ab / var_b
    alpha = float(ra.mean()) - beta * float(rb.mean())
    ratio = math.sqrt(var_a / var_b)
    if not all(math.isfinite(x) for x in (beta, alpha, ratio)):
        return None, "non-finite statistics from the returns"
    correlation, undefined = _correlation(cov_ab, var_a, var_b, n)
    stats = BetaStats(
        timeframe=asset.timeframe,
        points=n,
        beta=beta,
        alpha=alpha,
        correlation=correlation,
        r_squared=None if correlation is None else correlation * correlation,
        volatility_ratio=ratio,
        risk_band=risk_band(beta),
        undefined=undefined,
    )
    return stats, ""


def _correlation(
    cov_ab: float, var_a: float, var_b: float, n: int
) -> tuple[float | None, dict[str, str]]:
    """Pearson correlation clipped to [-1, 1]; None with reasons when the asset's
    returns have zero variance (0/0: a pegged asset)."""
    if not var_a > 0:
        reason = f"zero variance: the asset's price did not move over {n} returns"
        return None, {"correlation": reason, "r_squared": reason}
    correlation = cov_ab / math.sqrt(var_a * var_b)
    if not math.isfinite(correlation):
        reason = "non-finite correlation"
        return None, {"correlation": reason, "r_squared": reason}
    return min(1.0, max(-1.0, correlation)), {}


def market_regime(
    btc_change_24h_pct: float, market_beta: float | None, average_correlation: float | None
) -> str:
    """First match wins:

    * CORRELATED_CRASH: BTC 24h <= -5 % and average correlation >= 0.7
    * RISK_OFF: BTC 24h <= -2 %
    * RISK_ON: BTC 24h >= +2 % and market beta >= 1 (alts amplify the rally)
    * NEUTRAL otherwise (also when there are no betas to judge).
    """
    crash = average_correlation is not None and average_correlation >= CRASH_CORRELATION
    if btc_change_24h_pct <= CRASH_BTC_PCT and crash:
        return "CORRELATED_CRASH"
    if btc_change_24h_pct <= RISK_OFF_BTC_PCT:
        return "RISK_OFF"
    if btc_change_24h_pct >= RISK_ON_BTC_PCT and (market_beta or 0.0) >= RISK_ON_MARKET_BETA:
        return "RISK_ON"
    return "NEUTRAL"


def beta_overview(stats_by_symbol: Mapping[str, BetaStats], btc_change_24h_pct: float) -> dict:
    """Market beta (mean beta), band counts (all bands, zero-filled), mean correlation,
    regime. Means are None when there are no symbols; a symbol whose correlation is
    undefined (a pegged asset) is left out of the mean correlation and listed in
    ``excluded`` with the reason (``correlation_symbols`` counts those averaged)."""
    if not math.isfinite(btc_change_24h_pct):
        raise ValueError(f"btc_change_24h_pct must be finite, got {btc_change_24h_pct}")
    stats = list(stats_by_symbol.values())
    market_beta = float(np.mean([s.beta for s in stats])) if stats else None
    correlations = [s.correlation for s in stats if s.correlation is not None]
    correlation = float(np.mean(correlations)) if correlations else None
    excluded = {
        symbol: s.undefined.get("correlation", "correlation undefined")
        for symbol, s in stats_by_symbol.items()
        if s.correlation is None
    }
    bands = dict.fromkeys(RISK_BANDS, 0)
    for s in stats:
        bands[s.risk_band] += 1
    return {
        "symbols": len(stats),
        "market_beta": None if market_beta is None else round(market_beta, 4),
        "average_correlation": None if correlation is None else round(correlation, 4),
        "correlation_symbols": len(correlations),
        "excluded": excluded,
        "bands": bands,
        "btc_change_24h_pct": round(btc_change_24h_pct, 4),
        "regime": market_regime(btc_change_24h_pct, market_beta, correlation),
    }
