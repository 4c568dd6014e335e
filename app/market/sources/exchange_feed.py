"""The MarketFeed of a real exchange: its public WebSocket streams through ccxt.pro, on
the same ccxt instance as the REST calls (one market load, one rate limiter).

Each kind of data has its stream reader (``ticker_stream``, and the candle, book and
trade streams); this module starts them for the listed symbols and answers the feed's
questions from what they hold, only while they are live.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.feed import OnTicker
from app.market.sources.ticker_stream import TickerStream

NEEDED_METHODS = ("watchTickers",)
"""The ccxt.pro methods the feed uses; an exchange without them is polled (REST)."""


def supports_streams(market: CcxtMarketSource) -> bool:
    """Whether the exchange's ccxt class streams everything the feed reads."""
    has = getattr(market.exchange, "has", {}) or {}
    return all(has.get(method) is True for method in NEEDED_METHODS)


class ExchangeStreams:
    """The streams of ``market``'s exchange for ``symbols`` (canonical, listed);
    ``silent_after``: seconds without a message after which a stream is not live."""

    def __init__(
        self, market: CcxtMarketSource, symbols: Sequence[str], *, silent_after: float
    ) -> None:
        self.name = market.name
        self.market = market
        self.symbols = tuple(symbols)
        self.silent_after = silent_after
        self.tickers: TickerStream | None = None

    def start(self, on_ticker: OnTicker) -> None:
        """Starts every stream (once)."""
        if self.tickers is not None:
            return
        exchange = self.market.exchange
        self.tickers = TickerStream(
            exchange,
            self.market.ccxt_symbols(self.symbols),
            on_ticker=on_ticker,
            silent_after=self.silent_after,
        )
        self.tickers.start()

    async def stop(self) -> None:
        """Stops every stream (the exchange is closed with the source)."""
        if self.tickers is not None:
            await self.tickers.stop()

    def is_live(self) -> bool:
        """Whether every stream delivered within ``silent_after``."""
        return self.tickers is not None and self.tickers.is_live()

    def live_tickers(self) -> dict[str, Ticker]:
        """The newest ticker of each symbol whose batch is live."""
        if self.tickers is None:
            return {}
        silent = set(self.tickers.silent_symbols())
        return {s: t for s, t in self.tickers.latest.items() if s not in silent}

    def candles(self, symbol: str, timeframe: str) -> Candles | None:
        """Not streamed yet: REST answers."""
        return None

    def book(self, symbol: str) -> OrderBook | None:
        """Not streamed yet: REST answers."""
        return None

    def status(self) -> dict[str, Any]:
        """Per stream: live, updates, errors, silent symbols."""
        tickers = self.tickers
        return {
            "tickers": None
            if tickers is None
            else {
                "live": tickers.is_live(),
                "updates": tickers.updates,
                "errors": tickers.errors,
                "silent": tickers.silent_symbols(),
            }
        }
