"""Market sources for tests: the simulated market, counting calls and failing on demand."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Callable, Sequence

from app.market.errors import ExchangeUnavailable
from app.market.models import Candles, OrderBook, Ticker
from app.market.sources.simulated import SimulatedMarket


class CountingMarket(SimulatedMarket):
    """The simulated market, counting calls and failing on demand."""

    def __init__(self, clock: Callable[[], float]) -> None:
        super().__init__(seed=7, clock=clock)
        self.calls: Counter[str] = Counter()
        self.fail_tickers = False
        self.fail_books_for: set[str] = set()
        self.fail_candles_for: set[str] = set()
        self.ticker_delay = 0.0

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        self.calls["tickers"] += 1
        await asyncio.sleep(self.ticker_delay)
        if self.fail_tickers:
            raise ExchangeUnavailable("simulated outage")
        return await super().fetch_tickers(symbols)

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        self.calls[f"candles/{timeframe}"] += 1
        if symbol in self.fail_candles_for:
            raise ExchangeUnavailable(f"no candles for {symbol}")
        return await super().fetch_candles(symbol, timeframe, limit)

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        self.calls["books"] += 1
        if symbol in self.fail_books_for:
            raise ExchangeUnavailable(f"no book for {symbol}")
        return await super().fetch_order_book(symbol, depth)
