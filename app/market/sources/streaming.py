"""A market source that answers from pushed data while it is live, and from REST
otherwise: exchange streams first, REST for what streams cannot give.

``StreamingSource`` wraps the polled source (REST, behind its guard) and a
``MarketFeed``. Each fetch is answered per symbol from the feed when the feed has
current data for it (a live stream, a backfilled candle series, an in-sequence book),
and from REST for the rest — so a stream that dies or goes silent falls back to REST
polling for exactly what it no longer delivers, and the feed takes over again as soon
as it delivers. The feed's own silence bound is the breaker: a stream that errors
repeatedly or is silent beyond it is not live, and a frozen stream is never served.

It also hands the pipeline the tickers the feed pushed (``next_ticks``), so cheap views
move with every tick between the full refreshes.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from app.market.models.candles import Candles
from app.market.models.derivatives import DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.models.trades import PublicTrade
from app.market.sources.base import MarketSource, data_quality_of, fetch_derivatives
from app.market.sources.feed import MarketFeed
from app.market.sources.quality import Counts, MergedCounters

log = logging.getLogger(__name__)

STOP_SECONDS = 5.0

FeedFactory = Callable[[MarketSource, Sequence[str]], MarketFeed]
"""Builds the feed for the listed symbols once the source has started (markets loaded)."""

READER_LISTS = ("tickers", "books", "trades", "candle_streams", "liquidation_streams")
"""The feed's lists of stream readers (``ExchangeStreams``) whose ``data_quality`` counts
bad streamed data; a feed without them (the simulated market's) has none."""


class StreamingSource:
    """The MarketSource ``source`` with ``feed`` in front of it. ``symbols``: the
    canonical symbols to stream (those the source lists at start). Counters:
    ``answered`` (by ``feed`` / ``rest``) and ``fallbacks`` (times the feed stopped
    being live). ``data_quality``: the bad-data counts of the REST source and of the
    feed's stream readers, summed (``{symbol: {kind: count}}`` from ``snapshot()``)."""

    def __init__(
        self,
        source: MarketSource,
        feed_factory: FeedFactory,
        symbols: Sequence[str],
    ) -> None:
        self.source = source
        self.name = source.name
        self.feed_factory = feed_factory
        self.symbols = tuple(symbols)
        self.feed: MarketFeed | None = None
        self.answered = {"feed": 0, "rest": 0}
        self.fallbacks = 0
        self._live: bool | None = None  # the last mode seen (None: not yet)
        self._pending: dict[str, Ticker] = {}
        self._ticked = asyncio.Event()
        self.data_quality = MergedCounters(self._quality_counts)

    async def start(self) -> None:
        """Starts the REST source (markets), then the feed for the listed symbols."""
        await self.source.start()
        if self.feed is None:
            listed = self.source.listed_symbols()
            self.feed = self.feed_factory(self.source, [s for s in self.symbols if s in listed])
            self.feed.start(self._on_ticker)

    async def close(self) -> None:
        """Stops the feed (waiting at most ``STOP_SECONDS``: a half-dead connection must
        not hold a shutdown), then closes the source."""
        if self.feed is not None:
            try:
                await asyncio.wait_for(self.feed.stop(), STOP_SECONDS)
            except TimeoutError:
                log.warning("%s streams did not stop within %g s", self.name, STOP_SECONDS)
        await self.source.close()

    def listed_symbols(self) -> frozenset[str]:
        """The REST source's listing (markets are not streamed)."""
        return self.source.listed_symbols()

    def streaming(self) -> bool:
        """Whether the feed is live now (logs and counts each change of mode)."""
        live = self.feed is not None and self.feed.is_live()
        if live != self._live:
            if live:
                log.info("%s streams are live: REST polling only for history", self.name)
            elif self._live is None:  # never live yet: said once, not counted as a fallback
                log.warning("%s streams are not live yet: polling REST meanwhile", self.name)
            else:
                self.fallbacks += 1
                log.warning("%s streams are not live: falling back to REST polling", self.name)
            self._live = live
        return live

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """Live streamed tickers; REST (one batch call) for the symbols without one."""
        self.streaming()  # the mode, logged and counted when it changes
        live = self.feed.live_tickers() if self.feed is not None else {}
        found = {s: live[s] for s in symbols if s in live}
        rest = [s for s in symbols if s not in found]
        if rest:
            found |= await self.source.fetch_tickers(rest)
        self._count(len(symbols) - len(rest), len(rest))
        return {s: found[s] for s in symbols if s in found}

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        """The streamed series (backfilled, live) cut to ``limit``, else REST's."""
        series = self.feed.candles(symbol, timeframe) if self.feed is not None else None
        if series is not None and len(series) >= min(limit, 2):
            self._count(1, 0)
            return series.tail(limit)
        self._count(0, 1)
        return await self.source.fetch_candles(symbol, timeframe, limit)

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        """The streamed book (live, in sequence) cut to ``depth``, else REST's."""
        book = self.feed.book(symbol) if self.feed is not None else None
        if book is not None:
            self._count(1, 0)
            return book.top(depth)
        self._count(0, 1)
        return await self.source.fetch_order_book(symbol, depth)

    def recent_trades(self, symbol: str) -> list[PublicTrade] | None:
        """The symbol's streamed public trades, oldest first, while its trade stream is
        live; None otherwise (a feed without trades, such as the simulated market's)."""
        read = getattr(self.feed, "recent_trades", None)
        return read(symbol) if callable(read) else None

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        """The REST source's derivatives read, with the liquidations the feed streamed
        (``liquidations(symbol)``, where the feed has them) added to each symbol."""
        read = await fetch_derivatives(self.source, symbols)
        window = getattr(self.feed, "liquidations", None)
        if not callable(window):
            return read
        by_symbol = {
            s: replace(d, liquidations=window(s) or d.liquidations)
            for s, d in read.by_symbol.items()
        }
        return DerivativesRead(by_symbol, read.unavailable, read.partial)

    async def next_ticks(self) -> dict[str, Ticker]:
        """Waits for the feed's next tickers and returns every one pushed since the last
        call (newest per symbol)."""
        while not self._pending:
            self._ticked.clear()
            await self._ticked.wait()
        ticks, self._pending = self._pending, {}
        return ticks

    def status(self) -> dict[str, Any]:
        """Mode, counters, the feed's own status (health and metrics), and
        ``data_quality``: the bad exchange data counted so far by kind, all symbols
        summed (by symbol in the metrics)."""
        totals: Counter[str] = Counter()
        for kinds in self.data_quality.snapshot().values():
            totals.update(kinds)
        return {
            "mode": "streaming" if self.streaming() else "polling",
            "answered": dict(self.answered),
            "fallbacks": self.fallbacks,
            "feed": None if self.feed is None else self.feed.status(),
            "data_quality": dict(sorted(totals.items())),
        }

    def _quality_counts(self) -> Iterator[Counts]:
        yield data_quality_of(self.source)
        for name in READER_LISTS:
            for reader in getattr(self.feed, name, None) or ():
                counters = getattr(reader, "data_quality", None)
                if counters is not None:
                    yield counters.snapshot()

    def _on_ticker(self, ticker: Ticker) -> None:
        self._pending[ticker.symbol] = ticker
        self._ticked.set()

    def _count(self, feed: int, rest: int) -> None:
        self.answered["feed"] += feed
        self.answered["rest"] += rest
