"""Tickers from the exchange's public WebSocket stream (ccxt.pro ``watch_tickers``), the
first of the streams the collector reads instead of polling REST.

The symbols are watched in batches of at most ``topics_per_request`` (Bybit's spot
stream refuses a subscribe request with more than 10 topics, and ccxt sends all the
symbols of one call in one request), one task per batch, failed batches watched again
after a jittered back-off, liveness measured per batch (``BatchedStream``). Each update
is read from ccxt's ticker cache (with ``newUpdates`` a watch returns only what resolved
it), converted like a REST ticker (``ticker_from_ccxt``) and handed to ``on_ticker``
when it changed.

A stream can go silent while its connection answers pings: ``is_live()`` holds only
while every batch has delivered within ``silent_after`` seconds, and the caller falls
back to REST when it does not (a frozen stream is never shown as fresh).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from app.market.models.ticker import Ticker
from app.market.sources.ccxt import ticker_from_ccxt
from app.market.sources.stream_batches import (
    DEFAULT_BATCHING,
    TOPICS_PER_REQUEST,
    Batching,
    SymbolStream,
)

__all__ = ["TOPICS_PER_REQUEST", "OnTicker", "TickerStream"]

OnTicker = Callable[[Ticker], None]


class TickerStream(SymbolStream):
    """Watches ``symbols`` (ccxt symbol → canonical symbol) on ``exchange`` (a ccxt.pro
    instance whose markets are loaded) until ``stop``. ``latest``: the newest ticker of
    each canonical symbol; ``updates``: tickers handed on (and ``BatchedStream``'s
    counters); ``batching``: as ``BatchedStream``."""

    kind = "ticker"

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        *,
        on_ticker: OnTicker | None = None,
        batching: Batching = DEFAULT_BATCHING,
    ) -> None:
        super().__init__(exchange, symbols, batching)
        self.on_ticker = on_ticker
        self.latest: dict[str, Ticker] = {}
        self.updates = 0
        self._entries: dict[str, Any] = {}  # ccxt symbol → the cache entry last read

    async def _watch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.watch_tickers(list(batch))

    async def _unwatch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.un_watch_tickers(list(batch))

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        now_ms = int(time.time() * 1000)
        cache = self.exchange.tickers
        for name in batch:
            entry = cache.get(name)
            if entry is not None and entry is not self._entries.get(name):
                self._entries[name] = entry  # ccxt parses each message into a new entry
                self._heard(name)
            ticker = ticker_from_ccxt(self.symbols[name], entry, now_ms) if entry else None
            if ticker is None or _same(self.latest.get(ticker.symbol), ticker):
                continue
            self.latest[ticker.symbol] = ticker
            self.updates += 1
            if self.on_ticker is not None:
                self.on_ticker(ticker)


def _same(old: Ticker | None, new: Ticker) -> bool:
    """Unchanged but for when it was read."""
    return old is not None and old.timestamp_ms == new.timestamp_ms and old.last == new.last
