"""SimulatedFeed: the simulated market's ticks pushed to ``on_ticker``, driven here by
the test's clock and sleep (no real-time waits)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest

from app.market.models.ticker import Ticker
from app.market.simulated_universe import SIMULATED_UNIVERSE
from app.market.sources.feed import MarketFeed
from app.market.sources.simulated import TICKS_PER_SECOND, SimulatedMarket
from app.market.sources.simulated_feed import SimulatedFeed
from tests.conftest import START, ManualClock

SYMBOLS = [asset.symbol for asset in SIMULATED_UNIVERSE]
START_MS = round(START * 1000)


async def until(condition: Callable[[], bool], turns: int = 10_000) -> None:
    """Lets the event loop turn until ``condition`` holds (bounded in turns, not time)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError(f"not met within {turns} loop turns")


class DrivenTime:
    """The feed's sleep: each one ends, moving the clock by its delay, only when the
    test lets it pass."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.delays: list[float] = []
        self._passes: asyncio.Queue[None] = asyncio.Queue()

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        await self._passes.get()
        self.clock.advance(seconds)

    async def parked(self) -> None:
        """Waits until the feed sleeps (after its first tick)."""
        await until(lambda: len(self.delays) > 0)

    async def run(self, sleeps: int) -> None:
        """Lets ``sleeps`` sleeps pass, one at a time, each followed by the feed's tick."""
        for _ in range(sleeps):
            asleep_again = self._slept_more_than(len(self.delays))
            self._passes.put_nowait(None)
            await until(asleep_again)

    def _slept_more_than(self, count: int) -> Callable[[], bool]:
        return lambda: len(self.delays) > count


@pytest.fixture
async def market(clock: ManualClock) -> SimulatedMarket:
    market = SimulatedMarket(seed=7, clock=clock)
    await market.start()
    return market


@pytest.fixture
def time_driver(clock: ManualClock) -> DrivenTime:
    return DrivenTime(clock)


@pytest.fixture
async def feed(market: SimulatedMarket, time_driver: DrivenTime) -> AsyncIterator[SimulatedFeed]:
    feed = SimulatedFeed(market, SYMBOLS, sleep=time_driver.sleep)
    yield feed
    await feed.stop()


async def test_it_is_a_market_feed(feed: SimulatedFeed) -> None:
    typed: MarketFeed = feed
    assert typed.name == "simulated"
    assert feed.rate == TICKS_PER_SECOND
    assert feed.candles("BTCUSDT", "1m") is None and feed.book("BTCUSDT") is None


async def test_it_hands_on_every_tick_of_its_clock(
    feed: SimulatedFeed, time_driver: DrivenTime, market: SimulatedMarket
) -> None:
    heard: list[Ticker] = []
    assert not feed.is_live() and feed.live_tickers() == {}
    feed.start(heard.append)
    await time_driver.parked()
    seconds = 2
    await time_driver.run(seconds * TICKS_PER_SECOND)
    assert time_driver.delays == [1 / TICKS_PER_SECOND] * (seconds * TICKS_PER_SECOND + 1)
    ticks = [START_MS + i * 1000 // TICKS_PER_SECOND for i in range(seconds * TICKS_PER_SECOND + 1)]
    for symbol in SYMBOLS:  # each symbol once per tick, stamped with the tick's time
        assert [t.timestamp_ms for t in heard if t.symbol == symbol] == ticks
    assert len({t.last for t in heard if t.symbol == "BTCUSDT"}) > 1  # prices move
    assert feed.is_live()
    assert feed.live_tickers() == market.tickers_now(SYMBOLS)  # the newest of each
    assert feed.status() == {
        "running": True,
        "live": True,
        "ticks": len(ticks),
        "updates": len(heard),
        "errors": 0,
        "rate": TICKS_PER_SECOND,
        "symbols": len(SYMBOLS),
    }


async def test_an_unchanged_ticker_is_not_handed_on(
    market: SimulatedMarket, clock: ManualClock
) -> None:
    """At twice the market's tick rate, every other wake-up finds the same tick."""
    driver = DrivenTime(clock)
    feed = SimulatedFeed(market, ["BTCUSDT"], rate=2 * TICKS_PER_SECOND, sleep=driver.sleep)
    heard: list[Ticker] = []
    feed.start(heard.append)
    await driver.parked()
    await driver.run(8)
    await feed.stop()
    assert feed.status()["ticks"] == 9
    assert [t.timestamp_ms for t in heard] == [START_MS + i * 250 for i in range(5)]


async def test_stop_stops_it(feed: SimulatedFeed, time_driver: DrivenTime) -> None:
    heard: list[Ticker] = []
    feed.start(heard.append)
    await time_driver.parked()
    await time_driver.run(2)
    await feed.stop()
    count = len(heard)
    time_driver.clock.advance(10)
    for _ in range(100):
        await asyncio.sleep(0)
    assert len(heard) == count
    assert not feed.is_live() and feed.live_tickers() == {}
    assert feed.status()["running"] is False


async def test_a_delisted_symbol_gets_no_ticker(
    feed: SimulatedFeed, time_driver: DrivenTime, market: SimulatedMarket
) -> None:
    heard: list[Ticker] = []
    feed.start(heard.append)
    await time_driver.parked()
    market.delist("SOLUSDT")
    assert "SOLUSDT" not in feed.live_tickers()  # at once, not at the next tick
    heard.clear()
    await time_driver.run(2)
    assert heard and "SOLUSDT" not in {t.symbol for t in heard}
    assert "SOLUSDT" not in feed.live_tickers() and "BTCUSDT" in feed.live_tickers()
    market.relist("SOLUSDT")
    await time_driver.run(1)
    assert "SOLUSDT" in {t.symbol for t in heard} and "SOLUSDT" in feed.live_tickers()


async def test_it_is_not_live_while_the_market_cannot_answer(clock: ManualClock) -> None:
    market = SimulatedMarket(seed=7, clock=clock)  # not started yet
    driver = DrivenTime(clock)
    feed = SimulatedFeed(market, SYMBOLS, sleep=driver.sleep)
    heard: list[Ticker] = []
    feed.start(heard.append)
    await driver.parked()
    assert not feed.is_live() and feed.live_tickers() == {} and heard == []
    assert feed.status()["errors"] == 1 and feed.status()["running"] is True
    await market.start()
    await driver.run(1)
    assert feed.is_live() and set(feed.live_tickers()) == set(SYMBOLS)
    await feed.stop()


async def test_a_failing_listener_does_not_stop_the_ticks(
    feed: SimulatedFeed, time_driver: DrivenTime
) -> None:
    heard: list[Ticker] = []

    def listener(ticker: Ticker) -> None:
        if ticker.symbol == "ETHUSDT":
            raise RuntimeError("listener bug")
        heard.append(ticker)

    feed.start(listener)
    await time_driver.parked()
    await time_driver.run(1)
    assert feed.is_live() and feed.status()["errors"] == 2
    assert len({t.timestamp_ms for t in heard if t.symbol == "BTCUSDT"}) == 2


def test_it_refuses_unknown_symbols_and_rates(market: SimulatedMarket) -> None:
    with pytest.raises(ValueError, match="FOOUSDT"):
        SimulatedFeed(market, ["BTCUSDT", "FOOUSDT"])
    with pytest.raises(ValueError, match="rate"):
        SimulatedFeed(market, SYMBOLS, rate=0)
