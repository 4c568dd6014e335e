"""Two replicas sharing a real Memcached and a real Redis, and the cache faults found
from outside that the collector/server split must not carry over.

- A replica whose cold read waited for another replica's refresh, and then finds that
  replica's copies unusable (Memcached lost its copy; the Redis copy corrupt, truncated,
  of another codec version, or missing too), recomputes and answers 200: a copy that
  cannot be read after someone else's refresh is a miss, never a 503 while data can
  be had.
- ``POST /api/cache/warm`` returns only once every hot view is in every shared tier
  (read back from Memcached and Redis directly), also after a Memcached ``flush_all``
  and for views the replica holds fresh in its L1 alone; when a tier cannot take them
  the answer names the views and tiers not warmed, with a 503.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

import orjson
import pytest
from quart.typing import TestAppProtocol as QuartTestApp

from app.cache.codec import CorruptEntry, decode
from app.cache.entry import CacheEntry
from app.cache.layered import LayeredCache
from app.cache.tier import SharedTier
from app.market.models.ticker import Ticker
from app.services.catalogue import DEFAULT_HOT_ON_DEMAND, HOT_VIEWS
from tests.conftest import ManualClock, eventually, state_of
from tests.support.markets import CountingMarket
from tests.support.replicas import TOKEN, replica
from tests.support.servers import LocalServer, empty_memcached

ADMIN = {"Authorization": f"Bearer {TOKEN}"}
DESKTOP = "/api/dashboard/data"


class GatedMarket(CountingMarket):
    """Its tickers call waits at ``gate`` while one is set: a refresh held mid-way."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.gate: asyncio.Event | None = None

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        if self.gate is not None:
            self.calls["held"] += 1
            await self.gate.wait()
        return await super().fetch_tickers(symbols)


@pytest.fixture
async def two(memcached, redis, clock) -> AsyncIterator[tuple[QuartTestApp, QuartTestApp]]:
    async with (
        replica(memcached, redis, clock, "a", GatedMarket(clock)) as a,
        replica(memcached, redis, clock, "b", GatedMarket(clock)) as b,
    ):
        yield a, b


def market_of(app: QuartTestApp) -> GatedMarket:
    return state_of(app).pipeline.source  # type: ignore[return-value]


class MangledWrites:
    """A shared tier whose writes go through ``mangle`` (None: the value is dropped, as
    if the tier lost it at once); everything else is the tier's own."""

    def __init__(self, tier: SharedTier, mangle: Callable[[bytes], bytes | None]) -> None:
        self.tier = tier
        self.name = tier.name
        self.mangle = mangle

    def __getattr__(self, attribute: str):
        return getattr(self.tier, attribute)

    async def set_many(self, items: Mapping[str, bytes], ttl_seconds: int) -> None:
        kept = {key: self.mangle(value) for key, value in items.items()}
        await self.tier.set_many(
            {key: value for key, value in kept.items() if value is not None}, ttl_seconds
        )


def flipped(value: bytes) -> bytes:
    return value[:1] + bytes(byte ^ 0xA5 for byte in value[1:])


def truncated(value: bytes) -> bytes:
    return value[: len(value) // 2]


def other_version(value: bytes) -> bytes:
    return bytes([0xF0 | (value[0] & 0x0F)]) + value[1:]


REDIS_COPIES: dict[str, Callable[[bytes], bytes | None]] = {
    "corrupt": flipped,
    "truncated": truncated,
    "other-version": other_version,
    "missing": lambda value: None,
}


@contextlib.contextmanager
def landing_badly(cache: LayeredCache, redis_copy: Callable[[bytes], bytes | None]):
    """This replica's writes: Memcached loses every copy at once, Redis gets
    ``redis_copy`` of it."""
    memcached, backup = cache.memcached, cache.backup
    assert memcached is not None and backup is not None
    cache.memcached = MangledWrites(memcached, lambda value: None)
    cache.backup = MangledWrites(backup, redis_copy)
    try:
        yield
    finally:
        cache.memcached, cache.backup = memcached, backup


def lock_checks(app: QuartTestApp) -> int:
    locks = state_of(app).runtime.locks
    assert locks is not None
    return locks.counters["ops"]


@pytest.mark.parametrize("redis_copy", list(REDIS_COPIES))
async def test_an_unreadable_copy_after_a_peers_refresh_is_recomputed_not_a_503(
    two: tuple[QuartTestApp, QuartTestApp], redis_copy: str
) -> None:
    a, b = two
    # Every copy of the views becomes unreachable: b has nothing for them in any tier.
    await state_of(a).runtime.coherence.invalidate_families(["market"])
    generation = state_of(a).runtime.cache.generations.get("dash:desktop")
    await eventually(
        lambda: state_of(b).runtime.cache.generations.get("dash:desktop") == generation
    )
    refreshes_b = dict(state_of(b).pipeline.status.refreshes)
    tickers_b = market_of(b).calls["tickers"]
    market_of(a).gate = gate = asyncio.Event()
    with landing_badly(state_of(a).runtime.cache, REDIS_COPIES[redis_copy]):
        peer = asyncio.create_task(state_of(a).pipeline.refresh(force=True))
        await eventually(lambda: market_of(a).calls["held"] >= 1)  # a holds the refresh lock
        checks = lock_checks(b)
        reading = asyncio.create_task(b.test_client().get(DESKTOP))
        await eventually(lambda: lock_checks(b) > checks + 1)  # b waits for a's refresh
        market_of(a).gate = None
        gate.set()
        assert await peer is not None  # a published: its copies landed badly
        response = await reading
    body = orjson.loads(await response.get_data())
    assert response.status_code == 200, body
    assert body["stale"] is False
    refreshes = state_of(b).pipeline.status.refreshes
    assert refreshes.get("skipped", 0) > refreshes_b.get("skipped", 0)  # a's refresh first
    assert refreshes["ok"] == refreshes_b.get("ok", 0) + 1  # then b's own, which it serves
    assert market_of(b).calls["tickers"] == tickers_b + 1
    if redis_copy != "missing":  # b found a's Redis copy and could not read it
        corrupt = state_of(b).runtime.cache.stats.lookups[("redis", "dash:desktop", "corrupt")]
        assert corrupt >= 1


HOT = [*HOT_VIEWS, *DEFAULT_HOT_ON_DEMAND]


async def warm(app: QuartTestApp) -> tuple[int, dict]:
    response = await app.test_client().post("/api/cache/warm", headers=ADMIN)
    return response.status_code, orjson.loads(await response.get_data())


async def copies_in(app: QuartTestApp, tier_name: str) -> dict[str, CacheEntry | None]:
    """Each hot view's copy read from the server of ``tier_name`` itself (None: absent
    or unreadable), under the physical key the app reads."""
    state = state_of(app)
    tier = {"memcached": state.runtime.memcached, "redis": state.runtime.backup}[tier_name]
    assert tier is not None
    physical = {}
    for name in HOT:
        key, family = state.views.locate(name)
        physical[name] = state.runtime.cache.physical_key(key, family)
    found = await tier.get_many(list(physical.values()))
    copies: dict[str, CacheEntry | None] = {}
    for name, key in physical.items():
        try:
            copies[name] = decode(found[key]) if key in found else None
        except CorruptEntry:
            copies[name] = None
    return copies


async def forget_redis_copies(app: QuartTestApp) -> None:
    """Every hot view's Redis copy gone: after a Memcached flush, the views are then
    only in the replicas' own memory (L1)."""
    state = state_of(app)
    assert state.runtime.backup is not None
    keys = []
    for name in HOT:
        key, family = state.views.locate(name)
        keys.append(state.runtime.cache.physical_key(key, family))
    await state.runtime.backup.delete_many(keys)


@pytest.mark.parametrize("lost", ["memcached flushed", "memcached flushed, redis copies gone"])
async def test_warm_puts_every_hot_view_into_every_shared_tier(
    two: tuple[QuartTestApp, QuartTestApp], memcached: LocalServer, lost: str
) -> None:
    a, b = two
    empty_memcached(memcached.port)  # flush_all: every copy gone from Memcached
    if "redis" in lost:
        await forget_redis_copies(b)
    assert set((await copies_in(b, "memcached")).values()) == {None}
    status, report = await warm(b)
    assert status == 200, report
    assert sorted(report["warmed"]) == sorted(HOT)
    assert report["failed"] == {} and report["not_warmed"] == {}
    for tier in ("memcached", "redis"):
        copies = await copies_in(b, tier)
        assert [name for name, entry in copies.items() if entry is None] == [], tier
    held = state_of(b).runtime.cache
    for name, entry in (await copies_in(b, "memcached")).items():
        key, family = state_of(b).views.locate(name)
        mine = held.l1.get(held.physical_key(key, family))
        assert entry is not None and mine is not None
        assert entry.generated_at_ms >= mine.generated_at_ms  # never an older copy
    response = await a.test_client().get(DESKTOP)  # the other replica reads it too
    assert response.status_code == 200


async def test_warm_names_the_views_a_tier_that_is_down_does_not_hold(
    two: tuple[QuartTestApp, QuartTestApp], memcached: LocalServer
) -> None:
    _, b = two
    memcached.kill()
    try:
        status, report = await warm(b)
        assert status == 503, report
        assert report["error"] == "warm_incomplete"
        assert "memcached" in report["message"]
        assert report["warmed"] == [] and report["failed"] == {}
        assert report["not_warmed"] == {name: ["memcached"] for name in HOT}
        copies = await copies_in(b, "redis")  # the tier that is up holds every one
        assert [name for name, entry in copies.items() if entry is None] == []
    finally:
        memcached.ensure_running()

    async def warmed_again() -> bool:  # once the tier's breaker lets a trial through
        status, report = await warm(b)
        return status == 200 and report["not_warmed"] == {}

    await eventually(warmed_again, seconds=60)
    copies = await copies_in(b, "memcached")
    assert [name for name, entry in copies.items() if entry is None] == []
