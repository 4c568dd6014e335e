"""Tickers from the exchange's public WebSocket stream (ccxt.pro ``watch_tickers``), the
first of the streams the collector reads instead of polling REST.

The symbols are watched in batches of at most ``topics_per_request`` (Bybit's spot
stream refuses a subscribe request with more than 10 topics, and ccxt sends all the
symbols of one call in one request), one task per batch. Each update is read from
ccxt's ticker cache (with ``newUpdates`` a watch returns only what resolved it),
converted like a REST ticker (``ticker_from_ccxt``) and handed to ``on_ticker`` when it
changed. A batch whose watch fails (a dropped connection, a refused subscription) is
watched again after a jittered back-off; ccxt reconnects on the next watch.

A stream can also go silent while its connection answers pings: ccxt then waits
forever without an error. So liveness is measured, never assumed: ``is_live()`` holds
only while every batch has delivered within ``silent_after`` seconds, and the caller
falls back to REST when it does not (a frozen stream is never shown as fresh).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.market.models.ticker import Ticker
from app.market.sources.ccxt import ticker_from_ccxt

log = logging.getLogger(__name__)

TOPICS_PER_REQUEST = 10  # Bybit spot: "args size >10" beyond this

OnTicker = Callable[[Ticker], None]


class TickerStream:
    """Watches ``symbols`` (ccxt symbol → canonical symbol) on ``exchange`` (a ccxt.pro
    instance whose markets are loaded) until ``stop``. ``latest``: the newest ticker of
    each canonical symbol; ``errors``: failed watches; ``updates``: tickers handed on.
    ``retry``: the first and longest wait (seconds) before watching a failed batch
    again; ``clock``: monotonic seconds."""

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        *,
        on_ticker: OnTicker | None = None,
        topics_per_request: int = TOPICS_PER_REQUEST,
        silent_after: float = 5.0,
        retry: tuple[float, float] = (0.5, 10.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if topics_per_request < 1 or silent_after <= 0:
            raise ValueError("topics_per_request >= 1 and silent_after > 0")
        self.exchange = exchange
        self.symbols = dict(symbols)
        self.on_ticker = on_ticker
        self.silent_after = silent_after
        self.retry = retry
        self.clock = clock
        names = sorted(self.symbols)
        self.batches: list[tuple[str, ...]] = [
            tuple(names[i : i + topics_per_request])
            for i in range(0, len(names), topics_per_request)
        ]
        self.latest: dict[str, Ticker] = {}
        self.errors = 0
        self.updates = 0
        self._heard: dict[tuple[str, ...], float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        """One watching task per batch (once)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._watch(batch), name=f"tickers {batch[0]}…")
                for batch in self.batches
            ]

    async def stop(self) -> None:
        """Stops watching (the exchange is the caller's to close)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def is_live(self) -> bool:
        """Whether every batch delivered within ``silent_after`` seconds."""
        now = self.clock()
        return all(
            now - self._heard.get(batch, -float("inf")) <= self.silent_after
            for batch in self.batches
        )

    def silent_symbols(self) -> list[str]:
        """Canonical symbols whose batch has not delivered within ``silent_after``."""
        now = self.clock()
        return sorted(
            self.symbols[name]
            for batch in self.batches
            if now - self._heard.get(batch, -float("inf")) > self.silent_after
            for name in batch
        )

    async def _watch(self, batch: Sequence[str]) -> None:
        delay = self.retry[0]
        failing = False
        while True:
            try:
                await self.exchange.watch_tickers(list(batch))
            except asyncio.CancelledError:
                raise
            except Exception as error:  # ccxt's NetworkError, ExchangeError, …
                self.errors += 1
                if not failing:  # one line per episode
                    log.warning("ticker stream %s… failed (%s); watching again", batch[0], error)
                failing = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(self.retry[1], delay * 2)
                continue
            if failing:
                log.info("ticker stream %s… delivers again", batch[0])
            failing, delay = False, self.retry[0]
            self._take(batch)

    def _take(self, batch: Sequence[str]) -> None:
        self._heard[tuple(batch)] = self.clock()
        now_ms = int(time.time() * 1000)
        cache = self.exchange.tickers
        for name in batch:
            entry = cache.get(name)
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
