"""Tickers from the exchange's public WebSocket stream (ccxt.pro ``watch_tickers``), the
first of the streams the collector reads instead of polling REST.

The symbols are watched in batches of at most ``topics_per_request`` (Bybit's spot
stream refuses a subscribe request with more than 10 topics, and ccxt sends all the
symbols of one call in one request), one task per batch, failed batches watched again
after a jittered back-off, liveness measured per batch (``BatchedStream``). Each update
is read from ccxt's ticker cache (with ``newUpdates`` a watch returns only what resolved
it), converted like a REST ticker (``ticker_from_ccxt``) and handed to ``on_ticker``
when it changed.

Bad tickers are cleaned as on REST and counted in ``data_quality`` (per canonical
symbol): an exchange time from the future is replaced by the time we received it
(``future_timestamp``); a price, volume or change out of bound is missing
(``implausible_value``); an update without a usable last price (empty, null, 0,
implausible, or unreadable: ``ticker_unpriced`` / ``ticker_unparsable``) replaces
nothing — the symbol keeps its last real ticker, which ages (it goes quiet, then
stale) rather than showing a price nobody traded (ccxt would derive one from the
open and the 24 h change: ``ccxt.tolerate_bad_tickers`` takes that back, installed on
the stream's instance at ``start``).

A stream can go silent while its connection answers pings: ``is_live()`` holds only
while every batch has delivered within ``silent_after`` seconds, and the caller falls
back to REST when it does not (a frozen stream is never shown as fresh).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from app.market.models.ticker import Ticker
from app.market.sources.ccxt import UNPARSABLE, ticker_from_ccxt, tolerate_bad_tickers
from app.market.sources.quality import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    DataQualityCounters,
    ticker_anomalies,
)
from app.market.sources.stream_batches import (
    DEFAULT_BATCHING,
    TOPICS_PER_REQUEST,
    Batching,
    SymbolStream,
)

__all__ = ["TOPICS_PER_REQUEST", "OnTicker", "TickerStream"]

log = logging.getLogger(__name__)

OnTicker = Callable[[Ticker], None]

WATCHED_KINDS = (FUTURE_TIMESTAMP, IMPLAUSIBLE_VALUE, "ticker_unpriced", "ticker_unparsable")
"""The data-quality kinds a streamed ticker is checked for."""


class TickerStream(SymbolStream):
    """Watches ``symbols`` (ccxt symbol → canonical symbol) on ``exchange`` (a ccxt.pro
    instance whose markets are loaded) until ``stop``. ``latest``: the newest ticker of
    each canonical symbol; ``updates``: tickers handed on (and ``BatchedStream``'s
    counters); ``data_quality``: bad tickers, by canonical symbol and kind (see the
    module docstring); ``batching``: as ``BatchedStream``."""

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
        self.data_quality = DataQualityCounters()
        self._taken: dict[str, tuple[int, tuple[Any, ...]]] = {}  # ccxt symbol → entry read

    def start(self) -> None:
        """Make the exchange instance keep bad tickers to themselves, then watch (once)."""
        tolerate_bad_tickers(self.exchange)
        super().start()

    async def _watch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.watch_tickers(list(batch))

    async def _unwatch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.un_watch_tickers(list(batch))

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        now_ms = int(time.time() * 1000)
        cache = self.exchange.tickers
        for name in batch:
            entry = cache.get(name)
            if not entry or self._taken.get(name) == (id(entry), _signature(entry)):
                continue  # read already (ccxt replaces or rewrites it on an update)
            self._taken[name] = (id(entry), _signature(entry))
            ticker = ticker_from_ccxt(self.symbols[name], entry, now_ms)
            self._note(self.symbols[name], entry, ticker is None, now_ms)
            if ticker is not None:  # a usable ticker: the topic speaks (an unpriced one
                self._heard(name)  # leaves the symbol to go quiet, honestly)
            if ticker is None or _same(self.latest.get(ticker.symbol), ticker):
                continue
            self.latest[ticker.symbol] = ticker
            self.updates += 1
            if self.on_ticker is not None:
                self.on_ticker(ticker)

    def _note(self, symbol: str, entry: Any, unpriced: bool, now_ms: int) -> None:
        """Count what was wrong with one streamed ticker; one log line per episode."""
        found = ticker_anomalies(entry, now_ms)
        if unpriced:
            found.append("ticker_unparsable" if entry.get(UNPARSABLE) else "ticker_unpriced")
        for kind in self.data_quality.observe(symbol, found, WATCHED_KINDS):
            log.warning(
                "ticker stream: %s for %s (cleaned, counted in data quality)",
                kind.replace("_", " "),
                symbol,
            )


def _signature(entry: Any) -> tuple[Any, ...]:
    """What tells one ccxt ticker update from the next."""
    return tuple(entry.get(key) for key in ("timestamp", "last", "close", "open"))


def _same(old: Ticker | None, new: Ticker) -> bool:
    """Unchanged but for when it was read."""
    return old is not None and old.timestamp_ms == new.timestamp_ms and old.last == new.last
