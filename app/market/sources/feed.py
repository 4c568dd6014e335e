"""Pushed market data: what an exchange's WebSocket streams (or the simulated market's
ticks) deliver between the snapshots a source is polled for.

A feed never blocks: it keeps the newest data it has been sent and answers from memory,
and it says honestly what is current. ``live_tickers``, ``candles`` and ``book`` hand out
only data whose stream is live (has delivered within its silence bound); everything else
is None, and the caller asks the source (REST) instead — a frozen stream is never shown
as fresh.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker

OnTicker = Callable[[Ticker], None]
"""Told of each ticker that changed (canonical symbol inside), on the event loop."""


class MarketFeed(Protocol):
    """Market data pushed by the exchange for a fixed set of canonical symbols."""

    name: str
    """``simulated`` or the ccxt exchange id."""

    def start(self, on_ticker: OnTicker) -> None:
        """Starts the streams (once); ``on_ticker`` hears every changed ticker."""
        ...

    async def stop(self) -> None:
        """Stops the streams (the exchange connection is the owner's to close)."""
        ...

    def is_live(self) -> bool:
        """Whether every stream delivered within its silence bound."""
        ...

    def live_tickers(self) -> dict[str, Ticker]:
        """The newest ticker of each symbol whose stream is live, by canonical symbol."""
        ...

    def candles(self, symbol: str, timeframe: str) -> Candles | None:
        """The symbol's candle series at ``timeframe`` (oldest first, no gap) while its
        stream is live and the series backfilled; None otherwise (ask REST)."""
        ...

    def book(self, symbol: str) -> OrderBook | None:
        """The symbol's order book while its stream is live and in sequence; None
        otherwise (ask REST)."""
        ...

    def status(self) -> dict[str, Any]:
        """Counters and state for health and metrics (JSON-ready)."""
        ...
