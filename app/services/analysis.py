"""Every analytic of one Snapshot, computed once: the views only arrange these results.

Each section (confluence per symbol, beta, overview, movers, signals) is computed
on its own: one that cannot be had is None and named in ``errors`` with the
reason, and the others are still served — a partial dashboard, not a blank one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Protocol, TypeVar

from app.market.analytics.beta import BETA_WINDOWS, BetaStats, beta_overview, explain_beta
from app.market.analytics.confluence import ConfluenceResult, combine_timeframes, score_timeframe
from app.market.analytics.overview import BTC, market_overview, top_movers
from app.market.models.confluence_weights import ConfluenceWeights
from app.market.models.ticker import Ticker
from app.services.positioning import positioning_of
from app.services.snapshot import Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

COMBINED = "all"  # the confluence across timeframes
PRIMARY_BETA_WINDOWS = tuple(BETA_WINDOWS)  # preference order for a symbol's headline beta


@dataclass(frozen=True, slots=True)
class AnalysisSettings:
    """What the analysis is tuned by: the confluence weights and signal thresholds, and
    the movers' cut (how many each way, the least 24h quote volume to count)."""

    weights: ConfluenceWeights
    movers_count: int
    movers_min_quote_volume: float


@dataclass(frozen=True, slots=True)
class Analysis:
    confluence: dict[str, dict[str, ConfluenceResult]]  # symbol → timeframe | "all"
    beta: dict[str, dict[str, BetaStats]] | None  # symbol → timeframe
    beta_overview: dict | None
    overview: dict | None
    movers: dict | None
    signals: list[dict] | None
    errors: dict[str, str] = field(default_factory=dict)  # section → why it is missing
    # symbol → timeframe → why beta is undefined there (too few aligned points, ...)
    beta_unavailable: dict[str, dict[str, str]] = field(default_factory=dict)

    def headline_beta(self, symbol: str) -> BetaStats | None:
        return _first((self.beta or {}).get(symbol, {}))


def analyse(snapshot: Snapshot, settings: AnalysisSettings) -> Analysis:
    """CPU-bound (TA-Lib + numpy): run it in a worker thread. A symbol the exchange no
    longer lists or serves (``snapshot.listing``) gets no confluence, signal or beta:
    its candles are the older ones kept, and no one can trade it.

    Everything is computed from scratch (REST polling); for snapshots built many times
    a second, ``IncrementalAnalyser`` (``app.services.incremental_analysis``) reuses
    what did not change, with the staleness it documents."""
    errors: dict[str, str] = {}
    weights = settings.weights
    confluence = {}
    for symbol in traded(snapshot):
        result = section(
            errors, f"confluence/{symbol}", partial(_confluence, snapshot, symbol, weights)
        )
        if result:
            confluence[symbol] = result
    unavailable: dict[str, dict[str, str]] = {}
    beta = section(errors, "beta", lambda: _all_betas(snapshot, errors, unavailable))
    return assemble(snapshot, settings, Expensive(confluence, beta, unavailable), errors)


@dataclass(frozen=True, slots=True)
class Expensive:
    """The sections that cost (TA-Lib, regressions), already computed: confluence per
    symbol (timeframe | ``COMBINED``), beta per symbol and timeframe (None when the
    section failed) and why beta is undefined where it is."""

    confluence: dict[str, dict[str, ConfluenceResult]]
    beta: dict[str, dict[str, BetaStats]] | None
    beta_unavailable: dict[str, dict[str, str]]


class SectionRunner(Protocol):
    """Runs one section: its value, or None with the reason put in ``errors[name]``."""

    def __call__(self, errors: dict[str, str], name: str, compute: Callable[[], T], /) -> T | None:
        """Never raises what ``compute`` raises."""
        ...


def assemble(
    snapshot: Snapshot,
    settings: AnalysisSettings,
    expensive: Expensive,
    errors: dict[str, str],
    run: SectionRunner | None = None,
) -> Analysis:
    """The Analysis of ``snapshot`` from its expensive sections and the cheap ones
    computed now from its tickers (beta overview, market overview with BTC's 5m
    volatility, movers, signals: well under a millisecond for 25 symbols), which move
    with every price. ``errors`` (section → reason, already holding the expensive
    sections' failures) gets the cheap sections' failures, run through ``run``
    (default ``section``)."""
    run = run or section
    beta = expensive.beta
    confluence = expensive.confluence
    return Analysis(
        confluence=confluence,
        beta=beta,
        beta_overview=None
        if beta is None
        else run(errors, "beta", lambda: _beta_overview(snapshot, beta)),
        overview=run(
            errors,
            "overview",
            lambda: market_overview(snapshot.tickers, snapshot.candles.get(BTC, {}).get("5m")),
        ),
        movers=run(
            errors,
            "movers",
            lambda: top_movers(
                snapshot.tickers, settings.movers_count, settings.movers_min_quote_volume
            ),
        ),
        signals=run(errors, "signals", lambda: _signals(snapshot, confluence)),
        errors=errors,
        beta_unavailable=expensive.beta_unavailable,
    )


def traded(snapshot: Snapshot) -> list[str]:
    """The snapshot's symbols the exchange lists and serves now."""
    return [s for s in snapshot.symbols if s not in snapshot.listing]


def section(errors: dict[str, str], name: str, compute: Callable[[], T], /) -> T | None:
    """The section's value, or None with the reason (``"TypeName: message"``) recorded
    in ``errors[name]`` and logged with its traceback; never an exception."""
    try:
        return compute()
    except Exception as error:
        log.warning("section %s unavailable: %s", name, error, exc_info=True)
        errors[name] = failure_reason(error)
        return None


def failure_reason(error: BaseException) -> str:
    """How ``errors`` names a failed section's cause: ``"TypeName: message"``."""
    return f"{type(error).__name__}: {error}"


def _all_betas(
    snapshot: Snapshot, errors: dict[str, str], unavailable: dict[str, dict[str, str]]
) -> dict[str, dict[str, BetaStats]]:
    """Betas of every symbol; one that fails is named in ``errors`` under
    ``beta/SYMBOL`` and left out, never the whole section; a window where beta is
    undefined on the data is named in ``unavailable`` with the reason."""
    if not snapshot.candles.get(BTC):
        raise LookupError("no BTC candles to measure beta against")
    betas = {}
    for symbol in traded(snapshot):
        if symbol == BTC:
            continue
        result = section(errors, f"beta/{symbol}", partial(_betas, snapshot, symbol, unavailable))
        if result is not None:
            betas[symbol] = result
    return betas


def _beta_overview(snapshot: Snapshot, beta: dict[str, dict[str, BetaStats]]) -> dict:
    btc = snapshot.tickers.get(BTC)
    change = btc.change_24h_pct if btc and math.isfinite(btc.change_24h_pct) else 0.0
    headline = {s: stats for s in beta if (stats := _first(beta[s])) is not None}
    return beta_overview(headline, change)


def _confluence(
    snapshot: Snapshot, symbol: str, weights: ConfluenceWeights
) -> dict[str, ConfluenceResult]:
    candles = snapshot.candles.get(symbol, {})
    book = snapshot.books.get(symbol)
    inputs = positioning_of(snapshot, symbol).score_inputs()
    per_timeframe = {
        tf: score_timeframe(candles[tf], book, weights, **inputs)
        for tf in weights.timeframes
        if tf in candles
    }
    if per_timeframe:
        per_timeframe[COMBINED] = combine_timeframes(per_timeframe, weights)
    return per_timeframe


def _betas(
    snapshot: Snapshot, symbol: str, unavailable: dict[str, dict[str, str]]
) -> dict[str, BetaStats]:
    asset = snapshot.candles.get(symbol, {})
    btc = snapshot.candles.get(BTC, {})
    result = {}
    for timeframe, window in BETA_WINDOWS.items():
        if timeframe in asset and timeframe in btc:
            stats, reason = explain_beta(asset[timeframe], btc[timeframe], window)
            if stats is not None:
                result[timeframe] = stats
            else:
                unavailable.setdefault(symbol, {})[timeframe] = reason
    return result


def known_change(ticker: Ticker) -> float | None:
    """The 24h change in percent rounded to 4 decimals; None when the exchange gave none."""
    change = ticker.change_24h_pct
    return round(change, 4) if math.isfinite(change) else None


def _first(windows: dict[str, BetaStats]) -> BetaStats | None:
    return next((windows[tf] for tf in PRIMARY_BETA_WINDOWS if tf in windows), None)


def _signals(snapshot: Snapshot, confluence: dict[str, dict[str, ConfluenceResult]]) -> list[dict]:
    """Symbols whose combined confluence is at or beyond the long/short thresholds,
    strongest first."""
    rows = []
    for symbol, results in confluence.items():
        combined = results.get(COMBINED)
        if combined is None or combined.signal == "neutral":
            continue
        ticker = snapshot.tickers.get(symbol)
        rows.append(
            {
                "symbol": symbol,
                "signal": combined.signal,
                "score": round(combined.score, 2),
                "reliability": round(combined.reliability, 3),
                "price": None if ticker is None else ticker.last,
                "change_24h": None if ticker is None else known_change(ticker),
                "timeframes_agreeing": [
                    tf
                    for tf, r in results.items()
                    if tf != COMBINED and r.signal == combined.signal
                ],
            }
        )
    return sorted(rows, key=lambda row: abs(row["score"] - 50), reverse=True)
