"""What a new snapshot tells the live clients: one update per (channel, symbol)
whose value changed since the last snapshot (the first snapshot sends all)."""

from __future__ import annotations

from typing import Any

import orjson

from app.realtime.broadcaster import Broadcaster
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot
from app.services.views import beta_brief, component_scores, delisted_list, ticker_fields


class LiveUpdates:
    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self._last: dict[tuple[str, str | None], bytes] = {}

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        at = snapshot.fetched_at_ms
        for symbol in snapshot.listing:  # when it is back, its scores are sent again
            self._last.pop(("confluence", symbol), None)
        for channel, symbol, data in updates_of(snapshot, analysis):
            encoded = orjson.dumps(data)
            if self._last.get((channel, symbol)) == encoded:
                continue
            self._last[(channel, symbol)] = encoded
            await self.broadcaster.publish(channel, symbol, data, at)

    async def announce_alert(self, alert: dict, generated_at_ms: int) -> None:
        await self.broadcaster.publish_alert(alert, generated_at_ms)


def updates_of(snapshot: Snapshot, analysis: Analysis) -> list[tuple[str, str | None, Any]]:
    """(channel, symbol or None for the whole channel, data) of one snapshot. A market
    update carries the symbol's ``listing`` (null while the exchange lists and serves
    it), so open pages mark a delisted pair — and unmark it when it is back."""
    updates: list[tuple[str, str | None, Any]] = []
    for symbol in snapshot.symbols:  # a symbol that lost its price gets nulls, not silence
        market = ticker_fields(snapshot.tickers.get(symbol))
        updates.append(("market", symbol, market | {"listing": snapshot.listing_of(symbol)}))
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        if combined is not None:
            confluence = {
                "score": round(combined.score, 2),
                "signal": combined.signal,
                "reliability": round(combined.reliability, 3),
                "components": component_scores(combined),
            }
            updates.append(("confluence", symbol, confluence))
        beta = beta_brief(analysis.headline_beta(symbol))
        if beta is not None or symbol in snapshot.listing:  # null: its beta is gone
            updates.append(("beta", symbol, beta))
    if analysis.signals is not None:
        updates.append(("signals", None, {"signals": analysis.signals}))
    dashboard = {
        "overview": analysis.overview,
        "movers": analysis.movers,
        "beta": analysis.beta_overview,
        "errors": snapshot.missing | analysis.errors,
        "delisted": delisted_list(snapshot),
    }
    updates.append(("dashboard", None, dashboard))
    return updates
