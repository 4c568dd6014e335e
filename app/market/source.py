"""The one interface every market data source implements."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from app.market.models import Candles, OrderBook, Ticker


class MarketSource(Protocol):
    """A source of tickers, candles and order books for canonical symbols (``BTCUSDT``).

    ``start`` loads what the source needs once (markets); ``close`` releases
    connections. Fetch methods raise ``app.market.errors.MarketDataError`` subclasses.
    """

    name: str
    """``simulated`` or the ccxt exchange id."""

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def listed_symbols(self) -> frozenset[str]:
        """Every canonical symbol this source can serve (valid after ``start``)."""
        ...

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]: ...

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles: ...

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook: ...
