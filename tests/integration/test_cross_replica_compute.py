"""One computation of an on-demand view across replicas, on a real Redis (the backup
tier and the lock): two ``LayeredCache`` replicas share them. A copy another replica
stored between this one's look-up and its lock is served, not computed again; an early
refresh (XFetch) still computes although the copy it replaces is fresh."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import ClassVar

import pytest

from app.backends.locks import LockLease, RedisLock
from app.cache.keys import make_key
from app.cache.l1 import L1Cache
from app.cache.layered import Computed, LayeredCache
from app.cache.policy import load_policy
from app.cache.redis_tier import RedisTier
from app.resilience.redis_breaker import redis_guard
from tests.conftest import ManualClock, eventually

CANDLES = "candles"  # on demand: ttl 30 s
KEY = make_key(CANDLES, "BTCUSDT", "1h")
BOUND = 20.0  # seconds: the most a wait may take on a busy machine


class LateLock(RedisLock):
    """The real Redis lock, but ``before`` runs first at the next ``acquire``: another
    replica's whole computation slips in between this replica's look-up and its lock."""

    before: Callable[[], Awaitable[object]] | None = None

    async def acquire(self, name: str, ttl_ms: int) -> LockLease | None:
        before, self.before = self.before, None
        if before is not None:
            await before()
        return await super().acquire(name, ttl_ms)


class Replicas:
    """Two replicas' caches on one Redis, and who computed what."""

    made: ClassVar[list[Replicas]] = []

    def __init__(self, redis_client, clock: ManualClock, rng: Callable[[], float]) -> None:
        Replicas.made.append(self)
        self.pause = 0.0
        policy = load_policy()
        guard = redis_guard(timeout_seconds=5)
        self.clock = clock
        self.late = LateLock(redis_client, guard=guard, keyspace=policy.keyspace)
        self.computed: list[str] = []

        def cache(locks: RedisLock) -> LayeredCache:
            backup = RedisTier(redis_client, keyspace=policy.keyspace, guard=guard)
            l1 = L1Cache(1 << 20)
            return LayeredCache(policy, l1, backup=backup, locks=locks, clock=clock, rng=rng)

        self.a = cache(RedisLock(redis_client, guard=guard, keyspace=policy.keyspace))
        self.b = cache(self.late)

    def compute(self, replica: str) -> Callable[[], Awaitable[Computed]]:
        async def computed() -> Computed:
            self.computed.append(replica)
            await asyncio.sleep(self.pause)
            body = b'{"by":"%s","n":%d}' % (replica.encode(), len(self.computed))
            return Computed(body, int(self.clock() * 1000))

        return computed

    async def close(self) -> None:
        await self.a.close()
        await self.b.close()


async def test_a_copy_stored_between_look_up_and_lock_is_served(redis_client, clock) -> None:
    replicas = Replicas(redis_client, clock, rng=lambda: 1.0)
    replicas.late.before = lambda: replicas.a.read(KEY, CANDLES, replicas.compute("a"))

    read = await replicas.b.read(KEY, CANDLES, replicas.compute("b"))

    assert replicas.computed == ["a"]
    assert read.entry.body == b'{"by":"a","n":1}'
    assert not read.stale


async def test_an_early_refresh_computes_although_its_copy_is_fresh(redis_client, clock) -> None:
    """The copy found under the lock is the one being refreshed: it is no reason to skip."""
    replicas = Replicas(redis_client, clock, rng=lambda: 1e-12)  # −ln(1e-12) ≈ 27.6
    replicas.pause = 0.05  # δ ≥ 50 ms: δ·27.6 ≥ 1.4 s reaches past the expiry 1 s away
    first = await replicas.b.read(KEY, CANDLES, replicas.compute("b"))
    clock.advance(29)

    hit = await replicas.b.read(KEY, CANDLES, replicas.compute("b"))
    assert hit.entry == first.entry and not hit.stale
    await eventually(lambda: replicas.computed == ["b", "b"], BOUND)
    await eventually(lambda: replicas.b.l1.get(KEY) != first.entry, BOUND)


@pytest.fixture(autouse=True)
async def _closing(redis_client) -> AsyncIterator[None]:
    yield
    for replicas in Replicas.made:
        await replicas.close()
    Replicas.made.clear()
