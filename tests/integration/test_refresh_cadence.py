"""The refresh cadence is start to start: with a 5 s interval and refreshes that take 2 s
a snapshot comes every 5 s (not 7), a refresh longer than the interval is followed by
the next at once (no pile-up), and across replicas the recent-refresh marker lives until
0.9 intervals after the refresh's start, so the next scheduled start is not skipped.

The refresher runs on a monotonic clock the test moves: the source's tickers call moves
it by the refresh's duration, and the refresher's sleep by the delay it asked for."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from app.backends.keyspace import Keyspace
from app.backends.locks import RedisLock
from app.main.collector import pipeline_settings
from app.market.models.ticker import Ticker
from app.resilience.redis_breaker import redis_guard
from app.services.coordination import RefreshCoordinator
from app.services.pipeline import Pipeline
from tests.conftest import ManualClock, make_settings
from tests.support.markets import CountingMarket

INTERVAL = 5.0


class SlowMarket(CountingMarket):
    """Each refresh's tickers call notes when the refresh started (on ``monotonic``)
    and moves that clock by ``takes`` seconds: the refresh's duration."""

    def __init__(self, clock: ManualClock, monotonic: ManualClock, takes: float) -> None:
        super().__init__(clock)
        self.monotonic = monotonic
        self.takes = takes
        self.started_at: list[float] = []

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        self.started_at.append(self.monotonic())
        self.monotonic.advance(self.takes)
        return await super().fetch_tickers(symbols)


class DrivenSleep:
    """The refresher's sleep: records each delay, moves the clock by it, and after
    ``rounds`` sleeps holds the refresher until it is stopped."""

    def __init__(self, monotonic: ManualClock, rounds: int) -> None:
        self.monotonic = monotonic
        self.rounds = rounds
        self.delays: list[float] = []
        self.done = asyncio.Event()

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.monotonic.advance(seconds)
        if len(self.delays) >= self.rounds:
            self.done.set()
            await asyncio.Event().wait()  # until the pipeline stops
        await asyncio.sleep(0)


async def scheduled_starts(takes: float, rounds: int) -> tuple[list[float], list[float]]:
    """The start times of the scheduled refreshes (seconds since the first) and the
    delays the refresher slept, over ``rounds`` refreshes taking ``takes`` s each."""
    clock, monotonic = ManualClock(), ManualClock(1000.0)
    market = SlowMarket(clock, monotonic, takes)
    settings = make_settings(VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT", VIRTUOSO_REFRESH_SECONDS="5")
    sleep = DrivenSleep(monotonic, rounds)

    async def publish(bodies: dict[str, bytes], generated_at_ms: int) -> None:
        return None

    pipeline = Pipeline(
        pipeline_settings(settings), market, publish, clock=clock, monotonic=monotonic, sleep=sleep
    )
    await pipeline.start()
    try:
        await asyncio.wait_for(sleep.done.wait(), 60)
    finally:
        await pipeline.stop()
    assert pipeline.cadence.starts == rounds
    first = market.started_at[0]
    return [at - first for at in market.started_at], sleep.delays


async def test_a_snapshot_every_interval_whatever_the_refresh_takes() -> None:
    starts, delays = await scheduled_starts(takes=2.0, rounds=4)
    assert starts == [0, 5, 10, 15]  # start to start; waiting 5 s after each made it 7
    assert delays == [3, 3, 3, 3]


async def test_a_refresh_longer_than_the_interval_is_followed_at_once_without_pile_up() -> None:
    starts, delays = await scheduled_starts(takes=7.0, rounds=4)
    assert starts == [0, 7, 14, 21]  # one at a time, each as soon as the last ended
    assert delays == [0, 0, 0, 0]


@pytest.mark.parametrize(("takes", "marker_ms"), [(0.5, 4000), (2.0, 2500), (4.5, 0), (6.0, 0)])
async def test_the_recent_refresh_marker_counts_from_the_start(
    redis_client, takes: float, marker_ms: int
) -> None:
    """Another replica's scheduled start skips while the marker lives: it ends 0.9
    intervals after the refresh started, so this replica's next start (one interval
    after) is never skipped because its own refresh was slow."""
    keyspace = Keyspace("cadence-test")
    monotonic = ManualClock(0)
    guard = redis_guard(timeout_seconds=5)
    locks = RedisLock(redis_client, guard=guard, keyspace=keyspace)
    coordinator = RefreshCoordinator(redis_client, locks, INTERVAL, "a", keyspace, clock=monotonic)
    assert coordinator.marker_ttl_ms(takes) == marker_ms

    async def refresh() -> str:
        monotonic.advance(takes)
        return "published"

    assert await coordinator.run(refresh, force=False) == "published"
    ttl = await redis_client.pttl(coordinator.marker)
    if marker_ms == 0:
        assert ttl == -2  # no marker: the next start is due already
    else:
        assert 0 < ttl <= marker_ms
        assert await coordinator.run(refresh, force=False) is None  # within it: skipped
