"""The simulated market's ticks pushed as a ``MarketFeed``, so the embedded default
streams like an exchange does: one task wakes at every tick of the market's clock and
hands on each ticker that changed.

The market is in memory and answers at once, so this feed holds only the tickers:
``candles`` and ``book`` are always None (the caller reads the market itself). It is
live while its task runs and the market answers; a ``delist``-ed symbol gets no ticker.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.backends.tasks import cancel_and_wait
from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.feed import OnTicker
from app.market.sources.simulated import TICKS_PER_SECOND, SimulatedMarket

log = logging.getLogger(__name__)


class SimulatedFeed:
    """The ``MarketFeed`` of a started ``SimulatedMarket`` for ``symbols`` (canonical).

    ``rate``: wake-ups per second, aligned to multiples of 1/rate of ``clock`` (the
    market's ticks by default); ``clock`` (epoch seconds, the market's by default) and
    ``sleep`` are injectable so tests drive time. ValueError for a rate ≤ 0 or a symbol
    the market does not trade."""

    name = "simulated"

    def __init__(
        self,
        market: SimulatedMarket,
        symbols: Sequence[str],
        *,
        rate: float = TICKS_PER_SECOND,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        unknown = sorted(set(symbols).difference(market.market_assets()))
        if unknown:
            raise ValueError(f"not in the simulated market: {', '.join(unknown)}")
        if not rate > 0:
            raise ValueError(f"rate must be > 0 ticks per second, not {rate}")
        self.market = market
        self.symbols = tuple(symbols)
        self.rate = rate
        self.clock = clock if clock is not None else market.clock
        self.sleep = sleep
        self.ticks = 0  # wake-ups
        self.updates = 0  # tickers handed on
        self.errors = 0  # wake-ups that failed (market not started, a failing on_ticker)
        self._latest: dict[str, Ticker] = {}
        self._failing = False  # the last read of the market failed
        self._refusing = False  # on_ticker failed in the last tick
        self._task: asyncio.Task[None] | None = None

    # --- MarketFeed ---------------------------------------------------------------------

    def start(self, on_ticker: OnTicker) -> None:
        """Starts the ticking task (once while it runs); the first tick is at once."""
        if self._task is None or self._task.done():
            self._failing = False
            self._task = asyncio.get_running_loop().create_task(
                self._run(on_ticker), name="simulated feed"
            )

    async def stop(self) -> None:
        """Cancels the ticking task and waits for it; the feed is then not live."""
        task, self._task = self._task, None
        await cancel_and_wait([task])
        self._latest = {}

    def is_live(self) -> bool:
        """Whether the task runs and its last tick read the market."""
        return self._running() and not self._failing

    def live_tickers(self) -> dict[str, Ticker]:
        """The newest ticker of each listed symbol while live; empty otherwise."""
        if not self.is_live():
            return {}
        listed = self.market.listed_symbols()
        return {symbol: t for symbol, t in self._latest.items() if symbol in listed}

    def candles(self, symbol: str, timeframe: str) -> Candles | None:
        """None: the market's candles are in memory; read the market."""
        return None

    def book(self, symbol: str) -> OrderBook | None:
        """None: the market's books are in memory; read the market."""
        return None

    def status(self) -> dict[str, Any]:
        """``running``, ``live``, ``ticks`` (wake-ups), ``updates`` (tickers handed on),
        ``errors``, ``rate`` (per second) and ``symbols`` (count)."""
        return {
            "running": self._running(),
            "live": self.is_live(),
            "ticks": self.ticks,
            "updates": self.updates,
            "errors": self.errors,
            "rate": self.rate,
            "symbols": len(self.symbols),
        }

    # --- the ticking task ---------------------------------------------------------------

    def _running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def _run(self, on_ticker: OnTicker) -> None:
        while True:
            self._tick(on_ticker)
            now = self.clock()
            await self.sleep(max(0.0, (math.floor(now * self.rate) + 1) / self.rate - now))

    def _tick(self, on_ticker: OnTicker) -> None:
        """Reads the market's tickers and hands on those whose price or time changed.
        A failed read makes the feed not live until a read succeeds; a failing
        ``on_ticker`` is counted and logged, and the other tickers are still handed on."""
        self.ticks += 1
        try:
            tickers = self.market.tickers_now(self.symbols)
        except Exception:
            self._fail("reading the market")
            return
        if self._failing:
            log.info("simulated feed: ticks again")
        self._failing = False
        changed = [t for s, t in tickers.items() if not _same(self._latest.get(s), t)]
        self._latest = tickers
        refused = False
        for ticker in changed:
            self.updates += 1
            try:
                on_ticker(ticker)
            except Exception:
                self.errors += 1
                if not (refused or self._refusing):  # one line per episode
                    log.exception("simulated feed: on_ticker failed for %s", ticker.symbol)
                refused = True
        self._refusing = refused

    def _fail(self, doing: str) -> None:
        self.errors += 1
        if not self._failing:  # one line per episode
            log.exception("simulated feed: %s failed; ticking on", doing)
        self._failing = True


def _same(old: Ticker | None, new: Ticker) -> bool:
    """Neither the price nor the tick's time changed."""
    return old is not None and old.timestamp_ms == new.timestamp_ms and old.last == new.last
