"""Fault injection against the running app: the exchange (the loopback fake Bybit
through real ccxt) failing, slow or back; Memcached and Redis killed and restarted.
Every loop is bounded in count and time."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.errors import MarketDataError
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.guarded import GuardedSource, RetryPolicy
from app.resilience.breaker import BreakerConfig
from tests.conftest import (
    FAKE_EXCHANGE_RATE_LIMIT_MS,
    RATE_LIMITS_OFF,
    ManualClock,
    eventually,
    make_settings,
    state_of,
)
from tests.support.markets import CountingMarket
from tools.fake_bybit import TICKERS_PATH, FakeBybit

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
# A quick breaker so the test sees every transition within seconds.
QUICK = BreakerConfig(
    window_seconds=10,
    minimum_calls=3,
    failure_rate=0.5,
    # Past ccxt's own rate-limit queue (a dozen candle calls at once wait their turn
    # inside the call): only an exchange that is really slow counts as slow.
    slow_call_seconds=1.0,
    slow_call_rate=0.8,
    consecutive_failures=3,
    open_seconds=1.0,
    max_open_seconds=2.0,
)


def guarded(fake: FakeBybit, clock: Callable[[], float] = time.monotonic) -> GuardedSource:
    """The fake exchange through real ccxt, behind the QUICK breakers on ``clock``
    (monotonic seconds: their windows, open times and call durations)."""
    exchange = CcxtMarketSource(
        "bybit",
        base_url=fake.base_url,
        timeout_ms=2000,
        rate_limit_ms=float(FAKE_EXCHANGE_RATE_LIMIT_MS),
    )
    return GuardedSource(
        exchange,
        breaker_config=QUICK,
        timeout_seconds=3,
        retry=RetryPolicy(max_retries=1, base_seconds=0.05, cap_seconds=0.1),
        clock=clock,
    )


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


@pytest.fixture
def breaker_clock() -> ManualClock:
    """Monotonic seconds for the exchange's breakers that move only when a test says so:
    an open breaker stays open until the test moves past its wait (a call measures no
    time on it: the slow-call test keeps the real clock)."""
    return ManualClock(now=0.0)


async def started_exchange_app(
    fake: FakeBybit, memcached, redis, clock: ManualClock, breaker_clock: Callable[[], float]
) -> AsyncIterator[QuartTestApp]:
    settings = tiered_settings(
        memcached,
        redis,
        VIRTUOSO_EXCHANGE="bybit",
        VIRTUOSO_EXCHANGE_URL=fake.base_url,
        VIRTUOSO_REFRESH_SECONDS="1",
    )
    app = create_app(settings, guarded(fake, breaker_clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


@pytest_asyncio.fixture
async def exchange_app(fake, memcached, redis, clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    """The app on the fake exchange, its breakers on the real monotonic clock."""
    async for test_app in started_exchange_app(fake, memcached, redis, clock, time.monotonic):
        yield test_app


@pytest_asyncio.fixture
async def held_exchange_app(
    fake, memcached, redis, clock: ManualClock, breaker_clock: ManualClock
) -> AsyncIterator[QuartTestApp]:
    """The app on the fake exchange, its breakers on ``breaker_clock``."""
    async for test_app in started_exchange_app(fake, memcached, redis, clock, breaker_clock):
        yield test_app


async def refresh_now(app: QuartTestApp) -> None:
    """One refresh of the app's pipeline now (besides its own each second); a failing
    exchange fails it, as it fails the refresher's."""
    with contextlib.suppress(MarketDataError):
        await state_of(app).pipeline.refresh(force=True)


def tiered_settings(memcached, redis, **extra: str):
    """The simulated market's three symbols over real Memcached and Redis."""
    return make_settings(
        VIRTUOSO_SYMBOLS=SYMBOLS,
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
        VIRTUOSO_MEMCACHED_URL=memcached.address,
        VIRTUOSO_REDIS_URL=f"redis://{redis.address}/0",
        **extra,
    )


def tickers_breaker(app: QuartTestApp):
    return state_of(app).pipeline.source.breakers()["tickers"]


async def get_json(app: QuartTestApp, path: str) -> tuple[int, dict]:
    response = await app.test_client().get(path)
    return response.status_code, orjson.loads(await response.get_data())


async def test_exchange_outage_opens_the_breaker_serves_stale_and_recovers(
    held_exchange_app: QuartTestApp,
    fake: FakeBybit,
    clock: ManualClock,
    breaker_clock: ManualClock,
) -> None:
    exchange_app = held_exchange_app
    breaker = tickers_breaker(exchange_app)
    fake.error_rate(1.0, status=503)
    await eventually(lambda: breaker.state == "open", seconds=15)
    # the last good overview: a refresh in flight when the exchange failed may have
    # published one after the failure began, none can while the breaker is open
    _, before = await get_json(exchange_app, "/api/market/overview")
    assert before["stale"] is False
    # While open, exchange calls fall to the probe rate: refreshes go on (the refresher's
    # every second, and these), but none reaches the exchange until the breaker's wait
    # (1 s, then 2 s) has run out, and then one probe does (and its one retry).
    calls_at_open = fake.count(TICKERS_PATH)
    for _ in range(3):
        await refresh_now(exchange_app)
    assert fake.count(TICKERS_PATH) == calls_at_open
    breaker_clock.advance(QUICK.open_seconds)
    for _ in range(3):
        await refresh_now(exchange_app)
    # The probe failed (ours, or the refresher's still in flight when ours returned).
    await eventually(lambda: breaker.state == "open", seconds=15)
    assert breaker.snapshot()["transitions"].get("half_open->open", 0) == 1
    assert 1 <= fake.count(TICKERS_PATH) - calls_at_open <= 2
    clock.advance(61)  # every view is past its TTL and grace: served stale-if-error
    statuses = []
    for path in (
        "/api/dashboard/data",
        "/api/dashboard/mobile",
        "/api/market/overview",
        "/api/bitcoin-beta",
        "/api/confluence/BTCUSDT",
    ) * 10:
        status, body = await get_json(exchange_app, path)
        statuses.append(status)
        assert body["stale"] is True, path
    assert set(statuses) == {200}  # zero 5xx
    _, stale = await get_json(exchange_app, "/api/market/overview")
    assert stale["overview"] == before["overview"] and stale["age_ms"] >= 61_000
    status, ready = await get_json(exchange_app, "/health/ready")
    assert status == 200 and ready["status"] == "degraded"
    assert any("bybit:tickers" in reason for reason in ready["reasons"])

    fake.clear_faults()  # the exchange is back: the next probe closes the breaker
    breaker_clock.advance(QUICK.max_open_seconds)  # past every breaker's wait
    await eventually(lambda: breaker.state == "closed", seconds=15)

    async def fresh() -> bool:
        return not (await get_json(exchange_app, "/api/market/overview"))[1]["stale"]

    for _ in range(50):
        if await fresh():
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError("fresh data did not return after the exchange recovered")
    breakers = state_of(exchange_app).pipeline.source.breakers()
    await eventually(lambda: breakers["order_book"].state == "closed", seconds=15)
    assert all(b.state != "open" for b in breakers.values())
    # Readiness says ok once every backend has answered again: a breaker left half-open
    # (candles are fetched only when due) closes at its next call, so candles are made
    # due until every breaker has closed and a fresh snapshot is in.
    for _ in range(40):
        status, ready = await get_json(exchange_app, "/health/ready")
        if ready["status"] == "ok":
            break
        if any(b.state == "half_open" for b in breakers.values()):
            clock.advance(60)
        await asyncio.sleep(0.5)
    assert status == 200 and ready["status"] == "ok", ready


async def test_a_slow_exchange_opens_the_breaker(
    exchange_app: QuartTestApp, fake: FakeBybit
) -> None:
    breaker = tickers_breaker(exchange_app)
    fake.latency(1.5, path=TICKERS_PATH)  # slower than the 1 s slow-call threshold
    await eventually(lambda: breaker.state != "closed", seconds=20)
    assert breaker.snapshot()["transitions"].get("closed->open", 0) >= 1
    status, body = await get_json(exchange_app, "/api/dashboard/data")
    assert status == 200 and body["symbols"]


async def test_memcached_killed_and_restarted_under_load(
    memcached, redis, clock: ManualClock
) -> None:
    app = create_app(tiered_settings(memcached, redis), CountingMarket(clock), clock)
    paths = [
        "/api/dashboard/data",
        "/api/dashboard/mobile",
        "/api/market/movers",
        "/api/confluence/ETHUSDT?timeframe=5m",
        "/api/market/candles/SOLUSDT?timeframe=5m",
    ]
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        cache = state_of(test_app).runtime.cache
        statuses: list[int] = []
        for i in range(300):
            if i == 100:
                memcached.kill()
            if i == 200:
                memcached.restart()
            if i % 10 == 0:
                cache.l1.clear()  # force reads through the shared tiers
                clock.advance(3)
            if i % 50 == 25:
                await state_of(test_app).pipeline.refresh(force=True)
            response = await test_app.test_client().get(paths[i % len(paths)])
            statuses.append(response.status_code)
        assert statuses.count(200) == 300, sorted(set(statuses))
        await eventually(lambda: state_of(test_app).runtime.memcached.available, seconds=10)


async def test_redis_killed_writes_fail_cleanly_and_nothing_stored_is_lost(
    memcached, persistent_redis, clock: ManualClock
) -> None:
    settings = tiered_settings(
        memcached, persistent_redis, VIRTUOSO_SECRET_KEY="session-secret-for-tests-0123456789"
    )
    app = create_app(settings, CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        client = test_app.test_client()
        saved = await client.put("/api/session/watchlist", json={"watchlist": ["SOLUSDT"]})
        cookie = saved.headers["Set-Cookie"].split(";")[0]
        persistent_redis.kill()
        write = await client.put(
            "/api/session/watchlist", json={"watchlist": ["BTCUSDT"]}, headers={"Cookie": cookie}
        )
        assert write.status_code == 503
        assert orjson.loads(await write.get_data())["error"] == "session_store_unavailable"
        for path in ("/api/dashboard/data", "/api/market/overview", "/health/ready"):
            assert (await client.get(path)).status_code == 200  # reads are fine
        persistent_redis.restart()
        redis_guard = state_of(test_app).runtime.redis_guard

        async def stored() -> dict | None:
            response = await client.get("/api/session/watchlist", headers={"Cookie": cookie})
            return orjson.loads(await response.get_data()) if response.status_code == 200 else None

        for _ in range(60):
            if redis_guard.available and (body := await stored()) is not None:
                assert body == {"watchlist": ["SOLUSDT"], "unserved": []}  # stored before: kept
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("the session store did not come back after the restart")


async def test_readiness_stays_degraded_through_half_open_probes(
    held_exchange_app: QuartTestApp, fake: FakeBybit, breaker_clock: ManualClock
) -> None:
    """A half-open breaker is not a recovered backend: with every exchange call
    failing, readiness never says "ok", whether a breaker is open or probing."""
    exchange_app = held_exchange_app
    breaker = tickers_breaker(exchange_app)
    fake.error_rate(1.0, status=503)
    await eventually(lambda: breaker.state == "open", seconds=15)
    samples = [await ready(exchange_app)]
    for wait in (QUICK.open_seconds, QUICK.max_open_seconds):  # two probes, both failing
        breaker_clock.advance(wait)
        samples.append(await ready(exchange_app))  # half-open (or probed already)
        # The probe: ours, or the refresher's (then ours is refused while that probe is
        # in flight, and returns before it fails).
        await refresh_now(exchange_app)
        await eventually(lambda: breaker.state == "open", seconds=15)
        samples.append(await ready(exchange_app))
    assert breaker.snapshot()["transitions"].get("half_open->open", 0) == 2
    assert [s["status"] for s in samples] == ["degraded"] * len(samples), samples
    # A breaker whose open time has run out probes on the next call: reading it now
    # shows it half-open, and readiness says so rather than "ok".
    breaker_clock.advance(QUICK.max_open_seconds)
    _, ready_now = await get_json(exchange_app, "/health/ready")
    assert ready_now["status"] == "degraded", ready_now
    assert any("half-open" in r or "is open" in r for r in ready_now["reasons"]), ready_now
    fake.clear_faults()
    await eventually(lambda: breaker.state == "closed", seconds=15)


async def ready(app: QuartTestApp) -> dict:
    """The app's /health/ready body."""
    return (await get_json(app, "/health/ready"))[1]


async def test_readiness_stays_degraded_while_memcached_is_down(
    memcached, redis, clock: ManualClock
) -> None:
    app = create_app(tiered_settings(memcached, redis), CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        runtime = state_of(test_app).runtime
        (breaker,) = runtime.memcached.breakers.values()
        memcached.kill()
        for _ in range(40):  # reads through the tiers trip the Memcached breaker
            runtime.cache.l1.clear()
            await test_app.test_client().get("/api/dashboard/data")
            if breaker.state != "closed":
                break
            await asyncio.sleep(0.1)
        assert breaker.state != "closed"
        samples = []

        def failed_probes() -> int:
            return breaker.snapshot()["transitions"].get("half_open->open", 0)

        # open, then half-open as its back-off (0.5 s, then 1 s) runs out, probes fail
        for _ in range(200):
            runtime.cache.l1.clear()
            await test_app.test_client().get("/api/dashboard/data")
            samples.append((await get_json(test_app, "/health/ready"))[1])
            if failed_probes() >= 2 and len(samples) >= 8:
                break
            await asyncio.sleep(0.1)
        assert failed_probes() >= 2, breaker.snapshot()
        assert [s["status"] for s in samples] == ["degraded"] * len(samples), samples
        public = " ".join(r for s in samples for r in s["reasons"])
        assert memcached.address not in public  # no backend address without details
        memcached.restart()

        async def ready_ok() -> bool:
            runtime.cache.l1.clear()
            await test_app.test_client().get("/api/dashboard/data")
            return (await get_json(test_app, "/health/ready"))[1]["status"] == "ok"

        for _ in range(80):
            if await ready_ok():
                break
            await asyncio.sleep(0.25)
        else:
            raise AssertionError("readiness did not return to ok after Memcached came back")
