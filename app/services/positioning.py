"""What the confluence reads besides candles and the book: a symbol's derivatives
positioning and its streamed public trades, taken from the snapshot once per symbol
and handed to every timeframe's score (``score_timeframe``'s keyword arguments)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.market.analytics.orderflow_feeds import price_change_pct
from app.market.models.derivatives import Derivatives
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.models.trades import PublicTrade
from app.market.sources.base import NO_DERIVATIVES
from app.services.snapshot import Snapshot

PositioningKey = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class Positioning:
    """One symbol's extra inputs: its ``derivatives`` (or None and ``reason``), its
    streamed ``trades`` (oldest first; empty without a live trade stream) and its
    price change over the last hour (percent; None when no candles span it)."""

    derivatives: Derivatives | None
    reason: str
    trades: tuple[PublicTrade, ...]
    price_change_1h_pct: float | None

    def score_inputs(self) -> dict[str, Any]:
        """``score_timeframe``'s keyword arguments."""
        return {
            "derivatives": self.derivatives,
            "derivatives_reason": self.reason,
            "trades": self.trades or None,
            "price_change_1h_pct": self.price_change_1h_pct,
        }

    def key(self) -> PositioningKey:
        """Equal while the slow inputs are: the derivatives read (a new read is a new
        value) and the hour's change (closed candles). Trades are left out on purpose:
        they change with every refresh, and rescoring every timeframe of every symbol
        each time for one order-flow sub-score cost the tick path its latency (the
        bench's exchange → client p99); a timeframe takes the trades whenever it is
        scored again (each candle close, each derivatives read)."""
        return (self.derivatives, self.price_change_1h_pct)


def positioning_of(snapshot: Snapshot, symbol: str) -> Positioning:
    """The symbol's positioning inputs in ``snapshot``."""
    read = snapshot.derivatives
    derivatives = read.by_symbol.get(symbol)
    reason = read.unavailable.get(symbol, NO_DERIVATIVES)
    return Positioning(
        derivatives,
        reason,
        snapshot.trades.get(symbol, ()),
        _hour_change(snapshot, symbol),
    )


def _hour_change(snapshot: Snapshot, symbol: str) -> float | None:
    """The price change over the hour up to the last closed candle of the finest
    timeframe held that spans it. Closed candles only: the input then moves once a
    candle (a minute), not with every tick, so streamed ticks do not rescore every
    timeframe."""
    held = snapshot.candles.get(symbol, {})
    for timeframe in sorted(held, key=lambda tf: TIMEFRAME_SECONDS.get(tf, 1 << 30)):
        change = price_change_pct(held[timeframe].closed())
        if change is not None:
            return change
    return None
