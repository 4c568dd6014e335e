"""What a new snapshot tells the live clients: one update per (channel, symbol)
whose value changed since the last snapshot (the first snapshot sends all).

A per-symbol value that stops existing (a delisted pair's confluence, a beta no longer
computed, a symbol no longer collected) is published as null, so the kept snapshot and
the open pages drop it instead of showing the last value; when it returns it differs
from that null and is sent again.

The projection sits next to the views it shares helpers with; it hands its updates to a
``LivePublisher`` (the realtime broadcaster, passed in by the composition), so realtime
knows nothing of snapshots and analyses.
"""

from __future__ import annotations

from typing import Any, Protocol

import orjson

from app.market.analytics.confluence import ConfluenceResult
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot
from app.services.views import beta_brief, component_scores, delisted_list, ticker_fields


class LivePublisher(Protocol):
    """Where live updates go (``app.realtime.broadcaster.Broadcaster`` has this shape)."""

    async def publish(
        self, channel: str, symbol: str | None, data: Any, generated_at_ms: int
    ) -> int:
        """Sends ``data`` to the subscribers of (channel, symbol); returns its seq."""
        ...

    async def publish_alert(self, alert: dict[str, Any], generated_at_ms: int) -> int:
        """Sends an alert (``Alert.to_dict()`` shape); returns its seq."""
        ...


class LiveUpdates:
    """The pipeline's snapshot listener that publishes what changed to ``broadcaster``."""

    def __init__(self, broadcaster: LivePublisher) -> None:
        self.broadcaster = broadcaster
        self._last: dict[tuple[str, str | None], bytes] = {}

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        """Publishes every (channel, symbol) whose value changed since the last snapshot
        (a value gone: null), stamped with the snapshot's ``fetched_at_ms``."""
        at = snapshot.fetched_at_ms
        updates = updates_of(snapshot, analysis)
        present = {(channel, symbol) for channel, symbol, _ in updates}
        gone = [key for key in self._last if key[1] is not None and key not in present]
        updates += [(channel, symbol, None) for channel, symbol in gone]
        for channel, symbol, data in updates:
            encoded = orjson.dumps(data)
            if self._last.get((channel, symbol)) == encoded:
                continue
            self._last[(channel, symbol)] = encoded
            await self.broadcaster.publish(channel, symbol, data, at)

    async def announce_alert(self, alert: dict, generated_at_ms: int) -> None:
        """Publishes an alert (new or changed) to the live clients."""
        await self.broadcaster.publish_alert(alert, generated_at_ms)


def updates_of(snapshot: Snapshot, analysis: Analysis) -> list[tuple[str, str | None, Any]]:
    """(channel, symbol or None for the whole channel, data) of one snapshot. A market
    update carries the symbol's ``listing`` (null while the exchange lists and serves
    it), so open pages mark a delisted pair — and unmark it when it is back. Every
    collected symbol has a confluence and a beta update: null when it has none."""
    updates: list[tuple[str, str | None, Any]] = []
    for symbol in snapshot.symbols:  # a symbol that lost its price gets nulls, not silence
        market = ticker_fields(snapshot.tickers.get(symbol))
        updates.append(("market", symbol, market | {"listing": snapshot.listing_of(symbol)}))
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        updates.append(("confluence", symbol, confluence_brief(combined)))
        updates.append(("beta", symbol, beta_brief(analysis.headline_beta(symbol))))
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


def confluence_brief(combined: ConfluenceResult | None) -> dict[str, Any] | None:
    """A symbol's combined confluence as a live update carries it; None without one."""
    if combined is None:
        return None
    return {
        "score": round(combined.score, 2),
        "signal": combined.signal,
        "reliability": round(combined.reliability, 3),
        "components": component_scores(combined),
    }
