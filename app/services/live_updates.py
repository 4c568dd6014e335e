"""What a new snapshot tells the live clients: one update per (channel, symbol)
whose value changed since the last snapshot (the first snapshot sends all).

A per-symbol value that stops existing (a delisted pair's confluence, a beta no longer
computed, a symbol no longer collected) is published as null, so the kept snapshot and
the open pages drop it instead of showing the last value; when it returns it differs
from that null and is sent again.

A (channel, symbol) is published at most ``per_second`` times a second: a change that
comes sooner waits for its turn, and only the newest value of a key is sent then (ticks
coalesced; a busy market cannot flood clients). A market update is stamped with the
exchange's own event time of its ticker (``generated_at``), so the page and the bench
see exchange→screen latency; the broadcaster adds ``published_at``.

The projection sits next to the views it shares helpers with; it hands its updates to a
``LivePublisher`` (the realtime broadcaster, passed in by the composition), so realtime
knows nothing of snapshots and analyses.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from app.backends.tasks import cancel_and_wait
from app.market.analytics.confluence import ConfluenceResult
from app.services.analysis import COMBINED, Analysis
from app.services.derivatives_view import derivatives_row, sentiment_of
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


log = logging.getLogger(__name__)

Key = tuple[str, str | None]


class LiveUpdates:
    """The pipeline's snapshot listener that publishes what changed to ``broadcaster``,
    each (channel, symbol) at most ``per_second`` times a second (``clock``: monotonic
    seconds). ``coalesced``: changes replaced by a newer one before their turn."""

    def __init__(
        self,
        broadcaster: LivePublisher,
        *,
        per_second: float = 4.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if per_second <= 0:
            raise ValueError("per_second must be > 0")
        self.broadcaster = broadcaster
        self.interval = 1.0 / per_second
        self.clock = clock
        self.coalesced = 0
        self._last: dict[Key, bytes] = {}  # the last value sent
        self._sent_at: dict[Key, float] = {}
        self._waiting: dict[Key, tuple[Any, bytes, int]] = {}  # newest change held back
        self._stamp: dict[Key, int] = {}  # the newest generated_at sent or held
        self._flush: asyncio.Task[None] | None = None

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        """Publishes every (channel, symbol) whose value changed since the last snapshot
        (a value gone: null), stamped with the snapshot's ``fetched_at_ms`` — a market
        update with its ticker's event time."""
        at = snapshot.fetched_at_ms
        updates = updates_of(snapshot, analysis)
        present = {(channel, symbol) for channel, symbol, _ in updates}
        gone = [key for key in self._last if key[1] is not None and key not in present]
        updates += [(channel, symbol, None) for channel, symbol in gone]
        for channel, symbol, data in updates:
            stamp = event_time(snapshot, symbol, at) if channel == "market" else at
            await self._offer((channel, symbol), data, stamp)

    async def announce_alert(self, alert: dict, generated_at_ms: int) -> None:
        """Publishes an alert (new or changed) to the live clients (never held back)."""
        await self.broadcaster.publish_alert(alert, generated_at_ms)

    async def close(self) -> None:
        """Stops the flush of held-back changes (they are dropped)."""
        await cancel_and_wait([self._flush])

    async def _offer(self, key: Key, data: Any, at: int) -> None:
        if key[0] == "market" and at < self._stamp.get(key, 0):
            return  # an older price than the one sent or held: the screen never steps back
        encoded = orjson.dumps(data)
        if self._last.get(key) == encoded:
            if self._waiting.pop(key, None) is not None:  # back to what clients have
                self.coalesced += 1
            return
        if self.clock() - self._sent_at.get(key, -float("inf")) >= self.interval:
            self._waiting.pop(key, None)  # superseded by this newer value
            await self._send(key, data, encoded, at)
            return
        if key in self._waiting:
            self.coalesced += 1
        self._waiting[key] = (data, encoded, at)
        self._stamp[key] = max(at, self._stamp.get(key, 0))
        if self._flush is None or self._flush.done():
            self._flush = asyncio.create_task(self._flush_waiting(), name="live-coalesced")

    async def _send(self, key: Key, data: Any, encoded: bytes, at: int) -> None:
        self._last[key] = encoded
        self._sent_at[key] = self.clock()
        self._stamp[key] = max(at, self._stamp.get(key, 0))
        await self.broadcaster.publish(key[0], key[1], data, at)

    async def _flush_waiting(self) -> None:
        """Sends each held-back change when its key's turn comes: one key at a time,
        its turn checked again after every await (a newer value may have been sent
        meanwhile, which took the held one's place)."""
        while self._waiting:
            now = self.clock()
            key = min(self._waiting, key=lambda k: self._sent_at.get(k, now))
            due = self._sent_at.get(key, now) + self.interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            data, encoded, at = self._waiting.pop(key)
            try:
                await self._send(key, data, encoded, at)
            except Exception as error:  # the next change of the key is sent anew
                log.warning("live update %s/%s not sent: %s", key[0], key[1], error)


def event_time(snapshot: Snapshot, symbol: str | None, fallback_ms: int) -> int:
    """The exchange's event time of the symbol's ticker (epoch ms), or ``fallback_ms``
    when there is none or it is implausible (after ``fallback_ms``, or a day before)."""
    ticker = snapshot.tickers.get(symbol) if symbol is not None else None
    stamp = 0 if ticker is None else ticker.timestamp_ms
    return stamp if stamp > 0 and fallback_ms - 86_400_000 < stamp <= fallback_ms else fallback_ms


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
        updates.append(("derivatives", symbol, derivatives_update(snapshot, analysis, symbol)))
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


def derivatives_update(snapshot: Snapshot, analysis: Analysis, symbol: str) -> dict | None:
    """The symbol's derivatives row as the view shows it (``derivatives_row``); None
    for a symbol without a perpetual (or no data yet)."""
    derivatives = snapshot.derivatives.by_symbol.get(symbol)
    if derivatives is None:
        return None
    return derivatives_row(derivatives, sentiment_of(analysis, symbol))


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
