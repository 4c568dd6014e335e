"""Public trades from the exchange's stream (ccxt.pro ``watch_trades_for_symbols``): a
bounded window of each symbol's recent trades, the input of cumulative volume delta.

Trades are read from ccxt's cache (``exchange.trades[symbol]``: with ``newUpdates`` a
watch returns only what resolved it), newest first back to the last one taken, and
kept oldest first in a bounded deque per symbol. A row without a time, a taker side
or a finite positive price and amount is dropped and counted (``dropped``); so is one
stamped more than ``FUTURE_TOLERANCE_MS`` ahead of our clock (``future_timestamp``) or
with a price or amount out of the plausible bounds (``implausible_value``), those two
also in ``data_quality`` by canonical symbol (``app.market.sources.quality``).

Trades missed while a batch was failing or silent are gone (the stream has no
history): ``complete_since_ms`` says from when a symbol's window has no such hole.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections import deque
from collections.abc import Mapping
from typing import Any

from app.market.models.trades import PublicTrade
from app.market.sources.quality import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    DataQualityCounters,
    finite,
    from_future,
    implausible,
    now_ms,
    price,
    volume,
)
from app.market.sources.stream_batches import Batching, SymbolStream

log = logging.getLogger(__name__)

TRADE_BATCHING = Batching(silent_after=30.0)


class TradeStream(SymbolStream):
    """Watches the public trades of ``symbols`` (ccxt symbol → canonical symbol) on
    ``exchange`` (a ccxt.pro instance whose markets are loaded) until ``stop``,
    keeping the newest ``keep`` trades of each symbol.

    ``batching``: as ``BatchedStream`` (trades come only when someone trades, so the
    default waits 30 s before a batch is not live). Counters: ``updates`` (trades
    kept), ``dropped`` (bad rows), and the inherited ones; ``data_quality``: trades
    from the future or out of bound, by canonical symbol.
    """

    kind = "trade"

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        *,
        keep: int = 1_000,
        batching: Batching = TRADE_BATCHING,
    ) -> None:
        if keep < 1:
            raise ValueError("keep must be >= 1")
        super().__init__(exchange, symbols, batching)
        self.keep = keep
        self.updates = 0
        self.dropped = 0
        self.data_quality = DataQualityCounters()
        self._trades: dict[str, deque[PublicTrade]] = {
            name: deque(maxlen=keep) for name in self.symbols
        }
        self._taken: dict[str, Any] = {}  # ccxt symbol → the newest cache entry taken
        self._complete_since: dict[str, int] = {}

    # ----- reading --------------------------------------------------------------------

    def recent(self, symbol: str) -> list[PublicTrade] | None:
        """Canonical ``symbol``'s kept trades, oldest first (empty: none yet); None
        while its batch is not live (or for a symbol not watched)."""
        name = self._ccxt_of.get(symbol)
        if name is None or not self.key_live(name):
            return None
        return list(self._trades[name])

    def last_trade_ms(self, symbol: str) -> int | None:
        """Exchange time (epoch ms) of canonical ``symbol``'s newest kept trade."""
        name = self._ccxt_of.get(symbol)
        kept = self._trades.get(name) if name is not None else None
        return kept[-1].timestamp_ms if kept else None

    def complete_since_ms(self, symbol: str) -> int | None:
        """Epoch ms from which no trade of canonical ``symbol`` was missed (the first
        trade taken after its batch last (re)started delivering, or that moment if it
        brought none); None before its first delivery."""
        name = self._ccxt_of.get(symbol)
        return None if name is None else self._complete_since.get(name)

    # ----- BatchedStream ----------------------------------------------------------------

    async def _watch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.watch_trades_for_symbols(list(batch))

    async def _unwatch(self, batch: tuple[str, ...]) -> None:
        await self.exchange.un_watch_trades_for_symbols(list(batch))

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        for name in batch:
            fresh = self._take(name)
            if fresh:
                self._heard(name)
            if recovered:
                first = fresh[0].timestamp_ms if fresh else int(time.time() * 1000)
                self._complete_since[name] = first
            self._trades[name].extend(fresh)
            self.updates += len(fresh)

    def _take(self, name: str) -> list[PublicTrade]:
        """The cache's trades of ``name`` after the last one taken, oldest first."""
        cache = self.exchange.trades.get(name)
        if not cache:
            return []
        newer = list(
            itertools.takewhile(lambda row: row is not self._taken.get(name), reversed(cache))
        )
        if newer:
            self._taken[name] = newer[0]
        now = now_ms()
        trades = [self._parse(self.symbols[name], row, now) for row in reversed(newer)]
        return [trade for trade in trades if trade is not None]

    def _parse(self, symbol: str, row: Any, now: int) -> PublicTrade | None:
        """A ccxt trade of canonical ``symbol`` received at ``now`` (epoch ms) →
        ``PublicTrade``; None (counted) for a bad row."""
        if not isinstance(row, dict):
            self.dropped += 1
            return None
        stamp, side = finite(row.get("timestamp")), row.get("side")
        paid, amount = price(row.get("price")), volume(row.get("amount"))
        problem = _problem(row, now)
        if problem is not None:
            self.dropped += 1
            if self.data_quality.observe(symbol, [problem], ()):
                log.warning("trade stream: %s trade of %s dropped", problem, symbol)
            return None
        if stamp is None or paid is None or not amount or side not in ("buy", "sell"):
            self.dropped += 1
            return None
        return PublicTrade(int(stamp), paid, amount, side)


def _problem(row: dict[str, Any], now: int) -> str | None:
    """The data-quality kind of a trade from the future or out of bound, else None."""
    if from_future(row.get("timestamp"), now):
        return FUTURE_TIMESTAMP
    if implausible(row.get("price"), price) and (finite(row.get("price")) or 0) > 0:
        return IMPLAUSIBLE_VALUE
    if implausible(row.get("amount"), volume) and (finite(row.get("amount")) or 0) > 0:
        return IMPLAUSIBLE_VALUE
    return None
