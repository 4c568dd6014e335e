"""The derivatives view (``GET /api/market/derivatives``) and the derivatives live
updates: one row per symbol with a perpetual, as the exchange gives the values, with
the 1 h and 24 h open-interest changes and the symbol's sentiment score beside them."""

from __future__ import annotations

import math
from typing import Any

from app.market.analytics.sentiment import funding_interval_hours
from app.market.models.derivatives import Derivatives
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot

FUNDING_HISTORY_SHOWN = 21
"""Settled funding rates a row carries (a week of 8-hour settlements)."""


def derivatives_payload(snapshot: Snapshot, analysis: Analysis) -> dict[str, Any]:
    """``{"derivatives": [row…], "unavailable": [{"symbol", "reason"}…]}`` for the
    snapshot's symbols, rows in the snapshot's symbol order (see ``derivatives_row``)."""
    read = snapshot.derivatives
    rows = [
        derivatives_row(read.by_symbol[s], sentiment_of(analysis, s))
        for s in snapshot.symbols
        if s in read.by_symbol
    ]
    unavailable = [
        {"symbol": s, "reason": _why_none(snapshot, s)}
        for s in [*snapshot.symbols, *(s for s in snapshot.listing if s not in snapshot.symbols)]
        if s not in read.by_symbol
    ]
    return {"derivatives": rows, "unavailable": unavailable}


NOT_READ_YET = "no derivatives read for it yet"


def _why_none(snapshot: Snapshot, symbol: str) -> str:
    """Why ``symbol`` has no row: the read's reason, else its listing issue (a pair the
    exchange no longer lists or serves is not read), else not read yet."""
    reason = snapshot.derivatives.unavailable.get(symbol)
    if reason is not None:
        return reason
    issue = snapshot.listing.get(symbol)
    return NOT_READ_YET if issue is None else issue.reason


def derivatives_row(d: Derivatives, sentiment: float | None) -> dict[str, Any]:
    """One symbol's row: ``funding_rate`` (a fraction per funding interval),
    ``funding_interval_hours`` (the settlements' spacing: 8 on Bybit's usual contracts,
    8 when unknown), ``next_funding_time`` and ``updated_at`` (epoch ms),
    ``open_interest`` (contracts),
    ``open_interest_value`` (quote currency), ``open_interest_change_pct_1h`` / ``_24h``
    (percent), ``long_short_ratio`` (accounts long ÷ short), ``liquidations`` (the last
    hour's, or null), ``funding_history`` (``[epoch ms, rate]``, oldest first) and
    ``sentiment`` (the confluence's sentiment component, 0–100, or null)."""
    return {
        "symbol": d.symbol,
        "contract": d.contract,
        "funding_rate": _finite(d.funding_rate),
        "next_funding_time": d.next_funding_time_ms,
        "open_interest": _finite(d.open_interest),
        "open_interest_value": _finite(d.open_interest_value),
        "open_interest_change_pct_1h": _rounded(d.open_interest_change_pct(1), 3),
        "open_interest_change_pct_24h": _rounded(d.open_interest_change_pct(24), 3),
        "long_short_ratio": _rounded(d.long_short_ratio, 4),
        "liquidations": None if d.liquidations is None else d.liquidations.to_dict(),
        "funding_interval_hours": funding_interval_hours(d.funding_history),
        "funding_history": [[t, r] for t, r in d.funding_history[-FUNDING_HISTORY_SHOWN:]],
        "updated_at": d.timestamp_ms,
        "sentiment": _rounded(sentiment, 2),
    }


def sentiment_of(analysis: Analysis, symbol: str) -> float | None:
    """The symbol's sentiment component score across timeframes, or None."""
    combined = analysis.confluence.get(symbol, {}).get(COMBINED)
    component = None if combined is None else combined.components.get("sentiment")
    return None if component is None else component.score


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def _rounded(value: float | None, digits: int) -> float | None:
    finite = _finite(value)
    return None if finite is None else round(finite, digits)
