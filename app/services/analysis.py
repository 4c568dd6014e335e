"""Every analytic of one Snapshot, computed once: the views only arrange these results."""

from __future__ import annotations

from dataclasses import dataclass

from app.market.beta import BETA_WINDOWS, BetaStats, beta_overview, compute_beta
from app.market.confluence import (
    ConfluenceResult,
    ConfluenceWeights,
    combine_timeframes,
    score_timeframe,
)
from app.market.overview import BTC, market_overview, top_movers
from app.services.snapshot import Snapshot
from app.settings import Settings

COMBINED = "all"  # the confluence across timeframes
PRIMARY_BETA_WINDOWS = tuple(BETA_WINDOWS)  # preference order for a symbol's headline beta


@dataclass(frozen=True, slots=True)
class Analysis:
    confluence: dict[str, dict[str, ConfluenceResult]]  # symbol → timeframe | "all"
    beta: dict[str, dict[str, BetaStats]]  # symbol → timeframe
    beta_overview: dict
    overview: dict
    movers: dict
    signals: list[dict]

    def headline_beta(self, symbol: str) -> BetaStats | None:
        return _first(self.beta.get(symbol, {}))


def analyse(snapshot: Snapshot, settings: Settings) -> Analysis:
    """CPU-bound (TA-Lib + numpy): run it in a worker thread."""
    weights = settings.confluence.as_weights()
    confluence = {s: _confluence(snapshot, s, weights) for s in snapshot.symbols}
    beta = {s: _betas(snapshot, s) for s in snapshot.symbols if s != BTC}
    btc = snapshot.tickers.get(BTC)
    headline = {s: stats for s in beta if (stats := _first(beta[s])) is not None}
    return Analysis(
        confluence=confluence,
        beta=beta,
        beta_overview=beta_overview(headline, btc.change_24h_pct if btc else 0.0),
        overview=market_overview(snapshot.tickers, snapshot.candles.get(BTC, {}).get("5m")),
        movers=top_movers(
            snapshot.tickers, settings.movers.count, settings.movers.min_quote_volume
        ),
        signals=_signals(snapshot, confluence),
    )


def _confluence(
    snapshot: Snapshot, symbol: str, weights: ConfluenceWeights
) -> dict[str, ConfluenceResult]:
    candles = snapshot.candles.get(symbol, {})
    book = snapshot.books.get(symbol)
    per_timeframe = {
        tf: score_timeframe(candles[tf], book, weights)
        for tf in weights.timeframes
        if tf in candles
    }
    if per_timeframe:
        per_timeframe[COMBINED] = combine_timeframes(per_timeframe, weights)
    return per_timeframe


def _betas(snapshot: Snapshot, symbol: str) -> dict[str, BetaStats]:
    asset = snapshot.candles.get(symbol, {})
    btc = snapshot.candles.get(BTC, {})
    result = {}
    for timeframe, window in BETA_WINDOWS.items():
        if timeframe in asset and timeframe in btc:
            stats = compute_beta(asset[timeframe], btc[timeframe], window)
            if stats is not None:
                result[timeframe] = stats
    return result


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
        ticker = snapshot.tickers[symbol]
        rows.append(
            {
                "symbol": symbol,
                "signal": combined.signal,
                "score": round(combined.score, 2),
                "reliability": round(combined.reliability, 3),
                "price": ticker.last,
                "change_24h": round(ticker.change_24h_pct, 4),
                "timeframes_agreeing": [
                    tf
                    for tf, r in results.items()
                    if tf != COMBINED and r.signal == combined.signal
                ],
            }
        )
    return sorted(rows, key=lambda row: abs(row["score"] - 50), reverse=True)
