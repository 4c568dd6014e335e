"""Order books from the exchange's stream (ccxt.pro ``watch_order_book_for_symbols``):
a snapshot, then deltas, with our own sequence check.

ccxt 4.5.90's bybit applies every delta without looking at its update id (``u``) or
``seq`` (no checksum either), so a lost delta would leave stale levels in its book
until the exchange happens to send a new snapshot. This reader wraps the exchange
instance's ``handle_order_book`` to check, per topic, that each delta's ``u`` is the
previous one + 1 (a snapshot sets it). On a gap the symbol's book is out of sync: it is
not served, and its topic is unsubscribed and subscribed again
(``un_watch_order_book_for_symbols`` then the batch's next watch, which subscribes only
what is missing), since a new subscription begins with a snapshot. A batch whose watch
fails waits for fresh snapshots too (ccxt's new connection subscribes anew).

A book whose best bid reaches its best ask (crossed or locked) after a message is
corrupt state however well its update ids follow: it is not served, counted
(``crossed``, and ``book_crossed`` in ``data_quality``) and subscribed again like a
gap. Levels out of the plausible bounds (``app.market.sources.quality``) are left out
of what ``book`` serves and counted on arrival (``implausible_value``); a message
stamped more than ``FUTURE_TOLERANCE_MS`` ahead of our clock is counted
(``future_timestamp``) and the book served with the time we received it.

Bybit's spot books come at depths 1, 50 and 200: the stream takes the smallest of
``depths`` at least the depth wanted (the largest if none is) and ``book`` cuts it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from enum import Enum
from typing import Any

from app.market.models.order_book import OrderBook
from app.market.sources.quality import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    DataQualityCounters,
    clean_levels,
    exchange_time,
    from_future,
    now_ms,
    plausible_level,
)
from app.market.sources.stream_batches import (
    DEFAULT_BATCHING,
    Batching,
    SymbolStream,
)

log = logging.getLogger(__name__)

BYBIT_BOOK_DEPTHS = (1, 50, 200)
"""The depths Bybit's public spot stream serves (ccxt would also pass 1000)."""


class Sync(Enum):
    """Where a topic's book stands: waiting for its first snapshot, consistent, or
    broken by a lost update (waiting for a re-snapshot)."""

    WAITING = "waiting"
    SYNCED = "synced"
    GAPPED = "gapped"


def stream_depth(wanted: int, depths: Sequence[int]) -> int:
    """The smallest of ``depths`` at least ``wanted``, else the largest."""
    if wanted < 1 or not depths:
        raise ValueError("depth must be >= 1 and depths non-empty")
    return min((d for d in depths if d >= wanted), default=max(depths))


class BookStream(SymbolStream):
    """Watches the order books of ``symbols`` (ccxt symbol → canonical symbol) on
    ``exchange`` (a ccxt.pro instance whose markets are loaded; one BookStream per
    instance) until ``stop``, ``depth`` levels a side served.

    ``depths``: the depths the exchange streams; ``batching``: as ``BatchedStream``.
    Counters: ``gaps``
    (deltas whose ``u`` did not follow the previous one), ``crossed`` (books found
    crossed or locked), ``resnapshots`` (topics subscribed again after a gap or a
    crossing), ``updates`` (book messages checked), and the inherited ``errors``,
    ``reconnects``, ``deliveries``; ``data_quality``: bad book data by canonical symbol.
    """

    kind = "order book"

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        depth: int,
        *,
        depths: Sequence[int] = BYBIT_BOOK_DEPTHS,
        batching: Batching = DEFAULT_BATCHING,
    ) -> None:
        super().__init__(exchange, symbols, batching)
        self.depth = depth
        self.stream_depth = stream_depth(depth, depths)
        self.gaps = 0
        self.crossed = 0
        self.resnapshots = 0
        self.updates = 0
        self.data_quality = DataQualityCounters()
        self._topic_of = {name: self._topic(name) for name in self.symbols}
        self._name_of = {topic: name for name, topic in self._topic_of.items()}
        self._ours = set(self._topic_of.values())
        self._received: dict[str, int] = {}  # topic → epoch ms of its last message
        self._sync: dict[str, Sync] = {}
        self._last_u: dict[str, int] = {}
        self._original: Any = None
        self._wrapper: Any = None

    def _topic(self, name: str) -> str:
        return f"orderbook.{self.stream_depth}.{self.exchange.market(name)['id']}"

    # ----- reading --------------------------------------------------------------------

    def book(self, symbol: str) -> OrderBook | None:
        """The top ``depth`` levels a side of canonical ``symbol``'s book; None unless
        its batch is live and its book in sync (or for a symbol not watched)."""
        name = self._ccxt_of.get(symbol)
        if name is None or not self.key_live(name) or not self.in_sync(symbol):
            return None
        held = self.exchange.orderbooks.get(name)
        if held is None:
            return None
        received = self._received.get(self._topic_of[name], now_ms())
        return OrderBook(
            symbol=symbol,
            bids=clean_levels(held.get("bids"), self.depth)[0],
            asks=clean_levels(held.get("asks"), self.depth)[0],
            timestamp_ms=exchange_time(held.get("timestamp"), received),
        )

    def in_sync(self, symbol: str) -> bool:
        """Whether canonical ``symbol``'s book has had a snapshot and every delta since."""
        name = self._ccxt_of.get(symbol)
        return name is not None and self._sync.get(self._topic_of[name]) is Sync.SYNCED

    # ----- running --------------------------------------------------------------------

    def start(self) -> None:
        """Install the sequence check on the exchange, then watch (once)."""
        if self._wrapper is None:
            self._install()
        super().start()

    async def stop(self) -> None:
        """Stop watching and take the sequence check off the exchange."""
        await super().stop()
        if self._wrapper is not None and self.exchange.handle_order_book is self._wrapper:
            self.exchange.handle_order_book = self._original
        self._wrapper = None

    def _install(self) -> None:
        original = self.exchange.handle_order_book

        def checked(client: Any, message: dict[str, Any]) -> Any:
            self._check(message)
            applied = original(client, message)
            self._check_crossed(message)
            return applied

        self._original, self._wrapper = original, checked
        self.exchange.handle_order_book = checked

    def _check(self, message: Any) -> None:
        """The sequence check of one book message (see the module docstring)."""
        topic = message.get("topic") if isinstance(message, dict) else None
        if topic not in self._ours:
            return
        self.updates += 1
        self._heard(self._name_of[topic])
        data = message.get("data")
        self._note_values(topic, message)
        update = data.get("u") if isinstance(data, dict) else None
        if message.get("type") == "snapshot" and isinstance(update, int):
            self._sync[topic], self._last_u[topic] = Sync.SYNCED, update
            return
        state, last = self._sync.get(topic), self._last_u.get(topic)
        if state is Sync.SYNCED and isinstance(update, int) and update - 1 == last:
            self._last_u[topic] = update
            return
        if state is not Sync.GAPPED:
            self.gaps += 1
            log.warning("%s: update %s after %s; re-snapshotting", topic, update, last)
        self._sync[topic] = Sync.GAPPED

    def _note_values(self, topic: str, message: dict[str, Any]) -> None:
        """Count a message stamped from the future or carrying implausible levels (a
        size of 0 deletes a level: not counted)."""
        now = self._received[topic] = now_ms()
        data = message.get("data")
        levels = [
            level
            for side in ("b", "a")
            for level in (data.get(side) if isinstance(data, dict) else None) or ()
        ]
        found = [FUTURE_TIMESTAMP] if from_future(message.get("ts"), now) else []
        if any(not plausible_level(level) and not _deletion(level) for level in levels):
            found.append(IMPLAUSIBLE_VALUE)
        symbol = self.symbols[self._name_of[topic]]
        for kind in self.data_quality.observe(symbol, found, (FUTURE_TIMESTAMP, IMPLAUSIBLE_VALUE)):
            log.warning("%s: %s, cleaned (counted in data quality)", topic, kind.replace("_", " "))

    def _check_crossed(self, message: Any) -> None:
        """After a message was applied: a synced book whose best bid reached its best
        ask is corrupt (see the module docstring)."""
        topic = message.get("topic") if isinstance(message, dict) else None
        if topic not in self._ours or self._sync.get(topic) is not Sync.SYNCED:
            return
        name = self._name_of[topic]
        held = self.exchange.orderbooks.get(name)
        bids, asks = (held.get("bids"), held.get("asks")) if held is not None else (None, None)
        if not bids or not asks or bids[0][0] < asks[0][0]:
            return
        self.crossed += 1
        self.data_quality.add(self.symbols[name], "book_crossed")
        log.warning(
            "%s: crossed book (best bid %s >= best ask %s); re-snapshotting",
            topic,
            bids[0][0],
            asks[0][0],
        )
        self._sync[topic] = Sync.GAPPED

    # ----- BatchedStream ----------------------------------------------------------------

    async def _watch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.watch_order_book_for_symbols(list(batch), self.stream_depth)

    async def _unwatch(self, batch: tuple[str, ...]) -> None:
        await self._unwatch_books(list(batch))

    def _failed(self, batch: tuple[str, ...]) -> None:
        for name in batch:  # a new connection starts with snapshots
            self._sync[self._topic_of[name]] = Sync.WAITING
            self._last_u.pop(self._topic_of[name], None)

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        gapped = [name for name in batch if self._sync.get(self._topic_of[name]) is Sync.GAPPED]
        if not gapped:
            return
        # The ack comes after the last message of the old subscription; the batch's
        # next watch subscribes these topics again, and the exchange starts each with
        # a snapshot.
        await asyncio.wait_for(self._unwatch_books(gapped), self.unwatch_timeout)
        for name in gapped:
            self._sync[self._topic_of[name]] = Sync.WAITING
        self.resnapshots += len(gapped)

    async def _unwatch_books(self, names: list[str]) -> None:
        await self.exchange.un_watch_order_book_for_symbols(names, {"limit": self.stream_depth})


def _deletion(level: Any) -> bool:
    """Whether a delta level ``[price, "0"]`` deletes its price level."""
    try:
        return float(level[1]) == 0
    except (TypeError, ValueError, IndexError, KeyError):
        return False
