"""Views: the JSON payloads the API serves, arranged from one Snapshot and its Analysis.

Nothing is computed here that the Analysis already holds; desktop and mobile
are two arrangements of the same results. Each view gets the common freshness
fields ``generated_at``, ``source``, ``exchange``, ``version`` and ``errors``
(``age_ms`` and ``stale`` are added when served, see ``app.web.responses``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from app.market.analytics.beta import BetaStats
from app.market.analytics.confluence import ConfluenceResult
from app.market.models.candles import CandleQuality, Candles
from app.market.models.symbols import split_symbol
from app.market.models.ticker import Ticker
from app.services.analysis import COMBINED, Analysis, known_change
from app.services.catalogue import (
    BETA,
    CONFLUENCE,
    DASHBOARD_OVERVIEW,
    DERIVATIVES,
    DESKTOP,
    MARKET_OVERVIEW,
    MOBILE,
    MOVERS,
    SIGNALS,
    SYMBOLS,
)
from app.services.derivatives_view import derivatives_payload
from app.services.snapshot import Snapshot

log = logging.getLogger(__name__)
T = TypeVar("T")

MOBILE_SIGNALS = 10
MOBILE_ALERTS = 10
BETA_EXTREMES = 3


@dataclass(frozen=True, slots=True)
class ViewSettings:
    """What the views show besides the analysis: the confluence signal thresholds
    (score points, 0–100), the confluence timeframes offered (``1m``…, in the configured
    order) and how many symbol cards the phone's dashboard carries."""

    long_threshold: float
    short_threshold: float
    timeframes: tuple[str, ...]
    mobile_symbols: int


def build_views(
    snapshot: Snapshot,
    analysis: Analysis,
    settings: ViewSettings,
    critical_alerts: list[dict] | None = None,
) -> dict[str, dict]:
    """Every view of this snapshot, by name. Dashboards always come, with a missing
    section as null; a view that is only that section is left out (its last good
    version keeps being served, marked stale)."""
    errors: dict[str, str] = {}
    rows = [
        row
        for s in _by_volume(snapshot)
        if (row := _per_symbol(errors, s, "row", partial(_symbol_row, snapshot, analysis, s)))
    ]
    beta_summary = (
        None if analysis.beta_overview is None else _beta_summary(analysis, analysis.beta_overview)
    )
    views = {
        DESKTOP.name: {
            "overview": analysis.overview,
            "symbols": rows,
            "movers": analysis.movers,
            "signals": analysis.signals,
            "beta": beta_summary,
        },
        MOBILE.name: _mobile(
            analysis, rows, _funding_rates(snapshot), beta_summary, settings, critical_alerts or []
        ),
        DASHBOARD_OVERVIEW.name: {
            "overview": analysis.overview,
            "movers": analysis.movers,
            "signal_counts": _signal_counts(analysis),
            "beta": beta_summary,
        },
        SYMBOLS.name: _symbols_view(snapshot, settings, errors),
    }
    if analysis.signals is not None:
        views[SIGNALS.name] = {
            "signals": analysis.signals,
            "thresholds": {
                "long": settings.long_threshold,
                "short": settings.short_threshold,
            },
        }
    if analysis.overview is not None:
        views[MARKET_OVERVIEW.name] = {"overview": analysis.overview}
    if analysis.movers is not None:
        views[MOVERS.name] = analysis.movers
    views[DERIVATIVES.name] = derivatives_payload(snapshot, analysis)
    if analysis.beta is not None and analysis.beta_overview is not None:
        views[BETA.name] = _beta_view(analysis)
    for symbol, results in analysis.confluence.items():
        for timeframe, result in results.items():
            view = _per_symbol(
                errors,
                symbol,
                f"confluence/{timeframe}",
                partial(_confluence_view, snapshot, symbol, timeframe, result),
            )
            if view is not None:
                views[CONFLUENCE.named(symbol, timeframe)] = view
    meta = {
        "generated_at": snapshot.fetched_at_ms,
        "source": snapshot.source,
        "exchange": snapshot.exchange,
        "version": snapshot.version,
        "errors": snapshot.missing | analysis.errors | errors,
        "delisted": delisted_list(snapshot),
    }
    return {name: meta | payload for name, payload in views.items()}


def delisted_list(snapshot: Snapshot) -> list[dict]:
    """Every configured symbol the exchange does not list or serve now, by symbol:
    ``{"symbol", "status", "since", "reason", "last_price", "last_seen"}`` (status
    ``delisted``, ``unserved`` or ``not_listed``; ``since``/``last_seen`` epoch ms)."""
    return [snapshot.listing[s].to_dict() for s in sorted(snapshot.listing)]


_failing: set[str] = set()  # "SYMBOL/part" whose view failed last time (log episodes)


def _per_symbol(errors: dict[str, str], symbol: str, part: str, build: Callable[[], T]) -> T | None:
    """One symbol's part of the views, or None with the reason in ``errors`` under
    ``SYMBOL/part``: a symbol's failure is that symbol's error, never the refresh's.
    Logged once per episode."""
    key = f"{symbol}/{part}"
    try:
        value = build()
    except Exception as error:
        errors[key] = f"{type(error).__name__}: {error}"
        if key not in _failing:
            _failing.add(key)
            log.warning("view part %s left out: %s", key, error, exc_info=True)
        return None
    if key in _failing:
        _failing.discard(key)
        log.info("view part %s works again", key)
    return value


def _by_volume(snapshot: Snapshot) -> list[str]:
    """Symbols by 24h turnover, those without a price last."""
    ranked = sorted(
        snapshot.tickers, key=lambda s: snapshot.tickers[s].quote_volume_24h, reverse=True
    )
    return [*ranked, *snapshot.unpriced]


def _symbol_row(snapshot: Snapshot, analysis: Analysis, symbol: str) -> dict:
    ticker = snapshot.tickers.get(symbol)
    results = analysis.confluence.get(symbol, {})
    combined = results.get(COMBINED)
    return {
        "symbol": symbol,
        **ticker_fields(ticker),
        "base_volume_24h": None if ticker is None else _known(ticker, "volume_24h", 6),
        "tick_size": snapshot.tick_sizes.get(symbol),
        "confluence": _confluence_summary(combined, results),
        "beta": beta_brief(analysis.headline_beta(symbol)),
        "data_quality": data_quality(snapshot, symbol),
        "listing": snapshot.listing_of(symbol),
    }


def data_quality(snapshot: Snapshot, symbol: str) -> dict | None:
    """The symbol's note of what the exchange sent that was missing or had to be
    cleaned, or None when nothing: ``ticker_missing`` (the ticker fields that were
    null/empty, ``["price"]`` when there is no usable price), candle counts summed over
    the timeframes held, and ``by_timeframe`` for the timeframes that were not clean
    (``app.market.sources.quality``)."""
    note: dict = {}
    ticker = snapshot.tickers.get(symbol)
    if symbol in snapshot.unpriced:
        note["ticker_missing"] = list(TICKER_FIELDS)
    elif ticker is not None and ticker.missing:
        note["ticker_missing"] = list(ticker.missing)
    by_timeframe = {
        tf: c.quality.to_dict()
        for tf, c in snapshot.candles.get(symbol, {}).items()
        if not c.quality.clean
    }
    for counts in by_timeframe.values():
        for kind, amount in counts.items():
            note[kind] = note.get(kind, 0) + amount
    if by_timeframe:
        note["by_timeframe"] = by_timeframe
    return note or None


def data_quality_ticker(snapshot: Snapshot, symbol: str) -> list[str]:
    """The ticker fields the exchange did not send for ``symbol`` (all when no price)."""
    if symbol in snapshot.unpriced:
        return list(TICKER_FIELDS)
    ticker = snapshot.tickers.get(symbol)
    return [] if ticker is None else list(ticker.missing)


def _timeframe_quality(snapshot: Snapshot, symbol: str, timeframe: str) -> dict:
    """One timeframe's candle note (all timeframes summed for the combined score);
    ``gaps_bridged``: the gaps the indicators ran across (they assume continuity)."""
    held = snapshot.candles.get(symbol, {})
    chosen = (
        held.values() if timeframe == COMBINED else [held[timeframe]] if timeframe in held else []
    )
    totals = CandleQuality().to_dict()
    for candles in chosen:
        for kind, amount in candles.quality.to_dict().items():
            totals[kind] += amount
    return {**totals, "gaps_bridged": totals["gaps"]}


def ticker_fields(ticker: Ticker | None) -> dict:
    """A ticker as the dashboards and live updates show it; a field the exchange did not
    send (``Ticker.missing``), or every field when there is no ticker, is null."""
    if ticker is None:
        return dict.fromkeys(TICKER_FIELDS)
    values = {
        "price": ticker.last,
        "bid": ticker.bid,
        "ask": ticker.ask,
        "change_24h": known_change(ticker),
        "high_24h": ticker.high_24h,
        "low_24h": ticker.low_24h,
        "volume_24h": round(ticker.quote_volume_24h, 2),
    }
    return {name: None if name in ticker.missing else value for name, value in values.items()}


TICKER_FIELDS = ("price", "bid", "ask", "change_24h", "high_24h", "low_24h", "volume_24h")


def _known(ticker: Ticker, name: str, digits: int) -> float | None:
    return None if name in ticker.missing else round(ticker.base_volume_24h, digits)


def _confluence_summary(
    combined: ConfluenceResult | None, results: dict[str, ConfluenceResult]
) -> dict | None:
    if combined is None:
        return None
    return {
        "score": round(combined.score, 2),
        "signal": combined.signal,
        "sentiment": _sentiment(combined.signal),
        "reliability": round(combined.reliability, 3),
        "components": component_scores(combined),
        "timeframes": {tf: round(r.score, 2) for tf, r in results.items() if tf != COMBINED},
    }


def component_scores(result: ConfluenceResult) -> dict[str, float | None]:
    return {
        name: None if c.score is None else round(c.score, 1)
        for name, c in result.components.items()
    }


def _sentiment(signal: str) -> str:
    return {"long": "bullish", "short": "bearish"}.get(signal, "neutral")


def beta_brief(stats: BetaStats | None) -> dict | None:
    """The headline beta; an undefined statistic is null and named in ``undefined``."""
    if stats is None:
        return None
    return {
        "beta": round(stats.beta, 3),
        "correlation": _round_or_none(stats.correlation, 3),
        "r_squared": _round_or_none(stats.r_squared, 3),
        "risk_band": stats.risk_band,
        "timeframe": stats.timeframe,
        "undefined": dict(stats.undefined),
    }


def _round_or_none(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)


def _signal_counts(analysis: Analysis) -> dict[str, int] | None:
    if analysis.signals is None:
        return None
    longs = sum(1 for s in analysis.signals if s["signal"] == "long")
    return {"long": longs, "short": len(analysis.signals) - longs}


def _beta_summary(analysis: Analysis, overview: dict) -> dict:
    ranked = sorted(
        ((s, b) for s in analysis.beta or {} if (b := analysis.headline_beta(s)) is not None),
        key=lambda item: item[1].beta,
    )
    brief = [{"symbol": s, **(beta_brief(b) or {})} for s, b in ranked]
    return overview | {
        "highest": brief[::-1][:BETA_EXTREMES],
        "lowest": brief[:BETA_EXTREMES],
    }


def _beta_view(analysis: Analysis) -> dict:
    return {
        "overview": analysis.beta_overview,
        "symbols": [
            {
                "symbol": symbol,
                "windows": {tf: stats.to_dict() for tf, stats in windows.items()},
                "unavailable": analysis.beta_unavailable.get(symbol, {}),
            }
            for symbol, windows in (analysis.beta or {}).items()
        ],
    }


def _funding_rates(snapshot: Snapshot) -> dict[str, float]:
    """Each symbol's current funding rate (a fraction per interval), where its perpetual
    has a finite one."""
    by_symbol = snapshot.derivatives.by_symbol
    return {
        s: d.funding_rate
        for s, d in by_symbol.items()
        if d.funding_rate is not None and math.isfinite(d.funding_rate)
    }


def _mobile(
    analysis: Analysis,
    rows: list[dict],
    funding_rates: dict[str, float],
    beta_summary: dict | None,
    settings: ViewSettings,
    critical_alerts: list[dict],
) -> dict:
    """The reduced view: top symbols by volume as cards, no sub-scores, no per-window
    beta; of the derivatives only the funding rate (null without a perpetual)."""
    cards = []
    for row in rows[: settings.mobile_symbols]:
        confluence = row["confluence"] or {}
        cards.append(
            {
                "symbol": row["symbol"],
                "score": confluence.get("score"),
                "sentiment": confluence.get("sentiment"),
                "signal": confluence.get("signal"),
                "reliability": confluence.get("reliability"),
                "price": row["price"],
                "tick_size": row.get("tick_size"),
                "change_24h": row["change_24h"],
                "volume_24h": row["volume_24h"],
                "high_24h": row["high_24h"],
                "low_24h": row["low_24h"],
                "components": confluence.get("components"),
                "listing": row.get("listing"),
                "funding_rate": funding_rates.get(row["symbol"]),
            }
        )
    return {
        "market_overview": analysis.overview,
        "confluence_scores": cards,
        "top_movers": None
        if analysis.movers is None
        else {"gainers": analysis.movers["gainers"], "losers": analysis.movers["losers"]},
        "signals": None if analysis.signals is None else analysis.signals[:MOBILE_SIGNALS],
        "critical_alerts": critical_alerts[:MOBILE_ALERTS],
        "beta_summary": beta_summary,
    }


def _symbols_view(snapshot: Snapshot, settings: ViewSettings, errors: dict[str, str]) -> dict:
    """Every symbol with its base and quote asset as the exchange defines them."""
    rows = []
    for symbol in snapshot.symbols:
        base, quote = assets_of(snapshot, symbol, errors)
        ticker = snapshot.tickers.get(symbol)
        rows.append(
            {
                "symbol": symbol,
                "base": base,
                "quote": quote,
                "price": None if ticker is None else ticker.last,
            }
        )
    return {"symbols": rows, "timeframes": [*settings.timeframes, COMBINED]}


def assets_of(
    snapshot: Snapshot, symbol: str, errors: dict[str, str]
) -> tuple[str | None, str | None]:
    """(base, quote) from the exchange's market definitions; else guessed from common
    quote suffixes; else (None, None) with the reason in ``errors[SYMBOL/assets]``."""
    if symbol in snapshot.assets:
        return snapshot.assets[symbol]
    try:
        return split_symbol(symbol)
    except ValueError as error:
        errors[f"{symbol}/assets"] = str(error)
        return None, None


def _confluence_view(
    snapshot: Snapshot, symbol: str, timeframe: str, result: ConfluenceResult
) -> dict:
    ticker = snapshot.tickers.get(symbol)
    return {
        "symbol": symbol,
        "timeframe": timeframe,
        "price": None if ticker is None else ticker.last,
        "change_24h": None if ticker is None else known_change(ticker),
        "ticker_missing": data_quality_ticker(snapshot, symbol),
        "listing": snapshot.listing_of(symbol),
        **result.to_dict(),
        "data_quality": _timeframe_quality(snapshot, symbol, timeframe),
    }


def candles_view(
    candles: Candles,
    exchange: str,
    generated_at_ms: int,
    errors: dict[str, str] | None = None,
    listing: dict | None = None,
) -> dict:
    """OHLCV rows ``[open time ms, open, high, low, close, volume]``, oldest first;
    ``listing``: the symbol's listing issue (see ``delisted_list``), None when served.

    Never a null or non-finite value, never a non-increasing time: the sources clean
    candles on arrival; a row that still breaks this is left out here and counted in
    ``data_quality.rows_withheld``.
    """
    rows = _chart_rows(candles)
    return {
        "generated_at": generated_at_ms,
        "source": "simulated" if exchange == "simulated" else "ccxt",
        "exchange": exchange,
        "errors": errors or {},
        "symbol": candles.symbol,
        "timeframe": candles.timeframe,
        "listing": listing,
        "candles": rows,
        "data_quality": {
            **candles.quality.to_dict(),
            "rows_withheld": len(candles) - len(rows),
        },
    }


def _chart_rows(candles: Candles) -> list[list[float]]:
    rows: list[list[float]] = []
    for t, o, h, lo, c, v in zip(
        candles.timestamp_ms,
        candles.open,
        candles.high,
        candles.low,
        candles.close,
        candles.volume,
        strict=True,
    ):
        row = [int(t), float(o), float(h), float(lo), float(c), float(v)]
        if all(math.isfinite(x) for x in row[1:]) and (not rows or row[0] > rows[-1][0]):
            rows.append(row)
    return rows
