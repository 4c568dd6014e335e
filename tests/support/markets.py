"""Market sources for tests: the simulated market, counting calls and failing on demand."""

from __future__ import annotations

import asyncio
import contextlib
import copy
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest

from app.market.errors import ExchangeUnavailable
from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.simulated import SimulatedMarket
from tests.conftest import ManualClock

BUILD_HISTORY = SimulatedMarket._build_history  # the market's own build, unremembered
# The attributes ``_build_history`` (re)assigned, per (seed, universe, instant).
_HISTORIES: dict[tuple[object, ...], dict[str, Any]] = {}


@contextlib.contextmanager
def remembered_simulated_histories() -> Iterator[None]:
    """While open, a simulated market on a ``ManualClock`` builds its 31-day history once
    per (seed, universe, instant) and later ones start from a deep copy of it.

    The history is a pure function of those three (seeded draws), so each market still
    starts in exactly the state it would have built; this only saves the 1-3 s of numpy
    work that nearly every app test would otherwise repeat. Markets on any other clock
    (time.time) build as usual, and so do tests marked ``fresh_simulated_history``.
    """
    build = BUILD_HISTORY

    def build_once(market: SimulatedMarket) -> None:
        if not isinstance(market.clock, ManualClock):
            build(market)
            return
        key = (market.seed, market.assets, market.clock())
        history = _HISTORIES.get(key)
        if history is None:
            before = dict(vars(market))
            build(market)
            assigned = {k: v for k, v in vars(market).items() if before.get(k) is not v}
            _HISTORIES[key] = copy.deepcopy(assigned)
        else:
            vars(market).update(copy.deepcopy(history))

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(SimulatedMarket, "_build_history", build_once)
        yield


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
