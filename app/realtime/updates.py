"""What a new snapshot tells the live clients: one update per (channel, symbol)
whose value changed since the last snapshot (the first snapshot sends all)."""

from __future__ import annotations

from typing import Any

import orjson

from app.realtime.broadcaster import Broadcaster
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot


class LiveUpdates:
    def __init__(self, broadcaster: Broadcaster) -> None:
        self.broadcaster = broadcaster
        self._last: dict[tuple[str, str | None], bytes] = {}

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        at = snapshot.fetched_at_ms
        for channel, symbol, data in updates_of(snapshot, analysis):
            encoded = orjson.dumps(data)
            if self._last.get((channel, symbol)) == encoded:
                continue
            self._last[(channel, symbol)] = encoded
            await self.broadcaster.publish(channel, symbol, data, at)

    async def announce_alert(self, alert: dict, generated_at_ms: int) -> None:
        await self.broadcaster.publish_alert(alert, generated_at_ms)


def updates_of(snapshot: Snapshot, analysis: Analysis) -> list[tuple[str, str | None, Any]]:
    """(channel, symbol or None for the whole channel, data) of one snapshot."""
    updates: list[tuple[str, str | None, Any]] = []
    for symbol, ticker in snapshot.tickers.items():
        updates.append(
            (
                "market",
                symbol,
                {
                    "price": ticker.last,
                    "bid": ticker.bid,
                    "ask": ticker.ask,
                    "change_24h": round(ticker.change_24h_pct, 4),
                    "high_24h": ticker.high_24h,
                    "low_24h": ticker.low_24h,
                    "volume_24h": round(ticker.quote_volume_24h, 2),
                },
            )
        )
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        if combined is not None:
            updates.append(
                (
                    "confluence",
                    symbol,
                    {
                        "score": round(combined.score, 2),
                        "signal": combined.signal,
                        "reliability": round(combined.reliability, 3),
                        "components": {
                            n: None if c.score is None else round(c.score, 1)
                            for n, c in combined.components.items()
                        },
                    },
                )
            )
        beta = analysis.headline_beta(symbol)
        if beta is not None:
            updates.append(
                (
                    "beta",
                    symbol,
                    {
                        "beta": round(beta.beta, 3),
                        "correlation": round(beta.correlation, 3),
                        "risk_band": beta.risk_band,
                        "timeframe": beta.timeframe,
                    },
                )
            )
    if analysis.signals is not None:
        updates.append(("signals", None, {"signals": analysis.signals}))
    updates.append(
        (
            "dashboard",
            None,
            {
                "overview": analysis.overview,
                "movers": analysis.movers,
                "beta": analysis.beta_overview,
                "errors": snapshot.missing | analysis.errors,
            },
        )
    )
    return updates
