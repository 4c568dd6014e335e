"""Bitcoin beta: recovery of a known factor model, one ddof, alignment, bands, regimes."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from app.market.analytics.beta import (
    BETA_WINDOWS,
    MIN_POINTS,
    RISK_BANDS,
    BetaStats,
    aligned_returns,
    beta_overview,
    compute_beta,
    explain_beta,
    risk_band,
)
from app.market.models.candles import Candles
from app.market.models.timeframes import TIMEFRAME_SECONDS

SIGMA_BTC = 0.01
SIGMA_NOISE = 0.006
ALPHA = 0.0002


def candles(close: np.ndarray, timeframe: str = "5m", ts: np.ndarray | None = None) -> Candles:
    step = TIMEFRAME_SECONDS[timeframe] * 1000
    times = np.arange(close.shape[0], dtype=np.int64) * step if ts is None else ts
    return Candles("X", timeframe, times, close, close * 1.001, close * 0.999, close, close * 0)


def factor_model(beta: float, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Closes (asset, btc) whose log returns are a = ALPHA + beta·b + noise."""
    rng = np.random.default_rng(seed)
    rb = rng.normal(0, SIGMA_BTC, n)
    ra = ALPHA + beta * rb + rng.normal(0, SIGMA_NOISE, n)
    btc = 60_000 * np.exp(np.r_[0.0, np.cumsum(rb)])
    asset = 2.5 * np.exp(np.r_[0.0, np.cumsum(ra)])
    return asset, btc


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("true_beta", [0.4, 1.0, 1.6])
def test_recovers_known_beta_within_four_standard_errors(true_beta: float, seed: int) -> None:
    """Tolerance: 4 standard errors of the OLS slope, SE = s_resid / sqrt(Σ(b - b̄)²).

    With n = 288, sigma_noise = 0.006 and sigma_btc = 0.01 the theoretical SE is
    0.006 / (0.01·√287) ≈ 0.035, so the tolerance is about ±0.14; the sample SE used
    below is checked to be close to that value, so the bound is not loose by accident.
    """
    n = BETA_WINDOWS["5m"]
    asset, btc = factor_model(true_beta, n, seed)
    stats = compute_beta(candles(asset), candles(btc), n)
    assert stats is not None and stats.points == n
    ra, rb = np.diff(np.log(asset)), np.diff(np.log(btc))
    resid = ra - stats.alpha - stats.beta * rb
    se = math.sqrt(resid @ resid / (n - 2)) / math.sqrt(((rb - rb.mean()) ** 2).sum())
    theoretical = SIGMA_NOISE / (SIGMA_BTC * math.sqrt(n - 1))
    assert 0.75 * theoretical < se < 1.25 * theoretical
    assert abs(stats.beta - true_beta) < 4 * se
    expected_corr = true_beta * SIGMA_BTC / math.hypot(true_beta * SIGMA_BTC, SIGMA_NOISE)
    assert stats.correlation == pytest.approx(expected_corr, abs=0.08)
    expected_ratio = math.hypot(true_beta * SIGMA_BTC, SIGMA_NOISE) / SIGMA_BTC
    assert stats.volatility_ratio == pytest.approx(expected_ratio, rel=0.15)
    assert stats.risk_band == risk_band(stats.beta)


def test_single_ddof_estimator() -> None:
    asset, btc = factor_model(1.3, 200, seed=42)
    stats = compute_beta(candles(asset), candles(btc), 500)
    assert stats is not None
    ra, rb = np.diff(np.log(asset)), np.diff(np.log(btc))
    cov = np.cov(ra, rb, ddof=1)
    assert stats.beta == cov[0, 1] / cov[1, 1]
    mixed = cov[0, 1] / np.var(rb, ddof=0)  # the original's inconsistent estimator
    assert abs(stats.beta - mixed) > 1e-4
    assert stats.alpha == pytest.approx(ra.mean() - stats.beta * rb.mean(), rel=1e-12)
    assert stats.correlation == pytest.approx(np.corrcoef(ra, rb)[0, 1], rel=1e-12)
    assert stats.r_squared == pytest.approx(stats.correlation**2, rel=1e-12)
    ratio = np.std(ra, ddof=1) / np.std(rb, ddof=1)
    assert stats.volatility_ratio == pytest.approx(ratio, rel=1e-12)
    # R² of the OLS fit equals correlation²
    resid = ra - stats.alpha - stats.beta * rb
    r2_fit = 1 - (resid @ resid) / (((ra - ra.mean()) ** 2).sum())
    assert stats.r_squared == pytest.approx(r2_fit, rel=1e-9)


def test_misaligned_timestamps_are_aligned_and_gaps_skipped() -> None:
    asset, btc = factor_model(0.8, 300, seed=3)
    step = TIMEFRAME_SECONDS["1h"] * 1000
    ts = np.arange(301, dtype=np.int64) * step + 1_700_000_000_000
    missing = [100, 101, 200]
    keep = np.setdiff1d(np.arange(301), missing)
    # BTC has 10 extra candles before and 5 after; the asset misses three candles
    btc_ts = np.r_[ts[0] - step * np.arange(10, 0, -1), ts, ts[-1] + step * np.arange(1, 6)]
    btc_close = np.r_[np.full(10, btc[0]), btc, np.full(5, btc[-1])]
    stats = compute_beta(
        candles(asset[keep], "1h", ts[keep]), candles(btc_close, "1h", btc_ts), 1000
    )
    assert stats is not None
    ra_full, rb_full = np.diff(np.log(asset)), np.diff(np.log(btc))
    valid = np.ones(300, dtype=bool)
    for i in missing:  # return i spans candles i and i+1
        valid[i - 1] = valid[i] = False
    ra, rb = ra_full[valid], rb_full[valid]
    assert stats.points == ra.shape[0] == 300 - 5
    cov = np.cov(ra, rb, ddof=1)
    assert stats.beta == pytest.approx(cov[0, 1] / cov[1, 1], rel=1e-12)
    got_a, got_b = aligned_returns(
        candles(asset[keep], "1h", ts[keep]), candles(btc_close, "1h", btc_ts)
    )
    np.testing.assert_allclose(got_a, ra, rtol=1e-12)
    np.testing.assert_allclose(got_b, rb, rtol=1e-12)


def test_uses_the_last_window_returns() -> None:
    asset, btc = factor_model(1.0, 400, seed=9)
    full = compute_beta(candles(asset), candles(btc), 100)
    tail = compute_beta(candles(asset[-101:]), candles(btc[-101:]), 100)
    assert full is not None and tail is not None
    assert full.points == 100
    assert full.beta == pytest.approx(tail.beta, rel=1e-12)


def test_fewer_than_min_points_gives_none() -> None:
    asset, btc = factor_model(1.0, MIN_POINTS, seed=1)
    assert compute_beta(candles(asset[:-1]), candles(btc[:-1]), 500) is None  # 29 returns
    stats = compute_beta(candles(asset), candles(btc), 500)
    assert stats is not None and stats.points == MIN_POINTS
    assert compute_beta(candles(asset), candles(btc), MIN_POINTS - 1) is None


def test_no_overlap_gives_none() -> None:
    asset, btc = factor_model(1.0, 100, seed=1)
    later = np.arange(101, dtype=np.int64) * 300_000 + 10**12
    assert compute_beta(candles(asset), candles(btc, ts=later), 100) is None


def test_zero_btc_variance_gives_none() -> None:
    asset, _ = factor_model(1.0, 100, seed=2)
    assert compute_beta(candles(asset), candles(np.full(101, 60_000.0)), 100) is None


def test_constant_asset_has_zero_beta_and_an_undefined_correlation() -> None:
    _, btc = factor_model(1.0, 100, seed=2)
    stats = compute_beta(candles(np.full(101, 1.0)), candles(btc), 100)
    assert stats is not None
    assert stats.beta == 0.0 and stats.correlation is None and stats.r_squared is None
    assert "zero variance" in stats.undefined["correlation"]
    assert stats.risk_band == "defensive"
    assert stats.to_dict()["correlation"] is None
    assert json.loads(json.dumps(stats.to_dict()))["undefined"]["r_squared"]


def test_undefined_beta_says_why() -> None:
    asset, btc = factor_model(1.0, 100, seed=2)
    few = explain_beta(candles(asset[:20]), candles(btc[:20]), 100)
    assert few[0] is None and "too few aligned points: 19" in few[1]
    flat = explain_beta(candles(asset), candles(np.full(101, 60_000.0)), 100)
    assert flat[0] is None and "BTC" in flat[1]
    fine = explain_beta(candles(asset), candles(btc), 100)
    assert fine[0] is not None and fine[1] == ""


def test_non_positive_prices_are_skipped() -> None:
    asset, btc = factor_model(1.0, 100, seed=4)
    asset[50] = 0.0
    stats = compute_beta(candles(asset), candles(btc), 100)
    assert stats is not None and stats.points == 98
    assert all(math.isfinite(v) for v in (stats.beta, stats.alpha, stats.correlation))


def test_different_timeframes_are_rejected() -> None:
    asset, btc = factor_model(1.0, 50, seed=4)
    with pytest.raises(ValueError):
        compute_beta(candles(asset, "5m"), candles(btc, "1h"), 50)


@pytest.mark.parametrize(
    "beta, band",
    [
        (-0.4, "defensive"),
        (0.0, "defensive"),
        (0.4999, "defensive"),
        (0.5, "low"),
        (0.8999, "low"),
        (0.9, "neutral"),
        (1.0999, "neutral"),
        (1.1, "moderate"),
        (1.4999, "moderate"),
        (1.5, "high"),
        (3.0, "high"),
    ],
)
def test_risk_band_boundaries(beta: float, band: str) -> None:
    assert risk_band(beta) == band


def test_risk_band_rejects_nan() -> None:
    with pytest.raises(ValueError):
        risk_band(math.nan)


def stat(beta: float, correlation: float) -> BetaStats:
    return BetaStats("1h", 100, beta, 0.0, correlation, correlation**2, 1.0, risk_band(beta))


@pytest.mark.parametrize(
    "btc_change, betas, correlation, regime",
    [
        (-6.0, [1.2, 1.4], 0.8, "CORRELATED_CRASH"),
        (-5.0, [1.0], 0.7, "CORRELATED_CRASH"),
        (-6.0, [1.2, 1.4], 0.5, "RISK_OFF"),
        (-2.0, [1.2], 0.9, "RISK_OFF"),
        (-1.9, [1.2], 0.9, "NEUTRAL"),
        (2.0, [1.0], 0.5, "RISK_ON"),
        (3.0, [0.8, 0.9], 0.5, "NEUTRAL"),
        (1.9, [1.5], 0.5, "NEUTRAL"),
    ],
)
def test_overview_regimes(
    btc_change: float, betas: list[float], correlation: float, regime: str
) -> None:
    stats = {f"S{i}": stat(b, correlation) for i, b in enumerate(betas)}
    assert beta_overview(stats, btc_change)["regime"] == regime


def test_overview_aggregates() -> None:
    stats = {"A": stat(0.3, 0.2), "B": stat(1.0, 0.6), "C": stat(1.7, 0.7), "D": stat(1.0, 0.9)}
    overview = beta_overview(stats, 0.5)
    assert overview["market_beta"] == pytest.approx(1.0)
    assert overview["average_correlation"] == pytest.approx(0.6)
    assert overview["bands"] == {"defensive": 1, "low": 0, "neutral": 2, "moderate": 0, "high": 1}
    assert list(overview["bands"]) == list(RISK_BANDS)
    assert overview["symbols"] == 4
    json.dumps(overview)


def test_overview_of_nothing() -> None:
    overview = beta_overview({}, 5.0)
    assert overview["market_beta"] is None and overview["average_correlation"] is None
    assert overview["bands"] == dict.fromkeys(RISK_BANDS, 0)
    assert overview["regime"] == "NEUTRAL"
    assert beta_overview({}, -3.0)["regime"] == "RISK_OFF"


def test_to_dict_is_json_friendly() -> None:
    asset, btc = factor_model(1.0, 100, seed=5)
    stats = compute_beta(candles(asset), candles(btc), 100)
    assert stats is not None
    data = json.loads(json.dumps(stats.to_dict()))
    assert data["beta"] == round(stats.beta, 4)
    assert data["timeframe"] == "5m" and data["points"] == 100


def test_a_pegged_asset_is_left_out_of_the_average_correlation() -> None:
    """The issue's case: three correlated alts at 0.9 and a stablecoin; the average
    stays 0.9 and the regime stays CORRELATED_CRASH."""
    stats = {f"S{i}": stat(1.2, 0.9) for i in range(3)}
    _, btc = factor_model(1.0, 100, seed=2)
    pegged = compute_beta(candles(np.full(101, 1.0)), candles(btc), 100)
    assert pegged is not None
    overview = beta_overview({**stats, "USDCUSDT": pegged}, -6.0)
    assert overview["average_correlation"] == pytest.approx(0.9)
    assert overview["correlation_symbols"] == 3 and overview["symbols"] == 4
    assert "zero variance" in overview["excluded"]["USDCUSDT"]
    assert overview["regime"] == "CORRELATED_CRASH"
    only_pegged = beta_overview({"USDCUSDT": pegged}, -6.0)
    assert only_pegged["average_correlation"] is None and only_pegged["regime"] == "RISK_OFF"
