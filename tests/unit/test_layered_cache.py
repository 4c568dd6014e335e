"""Read-through semantics of the layered cache, on the in-process tier with a controllable
clock: single-flight, stale-while-revalidate, stale-if-error, XFetch, invalidation, L1 bound."""

from __future__ import annotations

import asyncio

import pytest

from app.cache.adaptive import AdaptiveTtl
from app.cache.entry import CacheEntry
from app.cache.keys import make_key
from app.cache.l1 import L1Cache
from app.cache.layered import Computed, LayeredCache, NothingToServe
from app.cache.policy import load_policy
from tests.conftest import ManualClock

CANDLES = "candles"  # an on-demand family: ttl 30 s, grace 30 s, max_stale 900 s
KEY = make_key(CANDLES, "BTCUSDT", "1h")


class Source:
    """A compute function that counts calls, can be slowed down or made to fail."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.calls = 0
        self.fail: Exception | None = None
        self.gate: asyncio.Event | None = None

    async def __call__(self) -> Computed:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        body = b'{"n":%d}' % self.calls
        return Computed(body, int(self.clock() * 1000))


@pytest.fixture
def cache(clock: ManualClock) -> LayeredCache:
    return LayeredCache(load_policy(), L1Cache(1 << 20), clock=clock, rng=lambda: 1.0)


@pytest.fixture
def source(clock: ManualClock) -> Source:
    return Source(clock)


async def settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_thousand_cold_readers_cause_one_computation(
    cache: LayeredCache, source: Source
) -> None:
    source.gate = asyncio.Event()
    readers = [asyncio.create_task(cache.read(KEY, CANDLES, source)) for _ in range(1000)]
    await settle()
    source.gate.set()
    reads = await asyncio.gather(*readers)
    assert source.calls == 1
    assert {r.entry.body for r in reads} == {b'{"n":1}'}
    assert cache.stats.singleflight_waits[CANDLES] == 999


async def test_fresh_hits_do_not_compute(
    cache: LayeredCache, source: Source, clock: ManualClock
) -> None:
    await cache.read(KEY, CANDLES, source)
    clock.advance(29.9)
    read = await cache.read(KEY, CANDLES, source)
    assert (read.tier, read.stale, source.calls) == ("l1", False, 1)
    assert cache.stats.hit_ratio(CANDLES) == 0.5  # one computed miss, one hit


async def test_stale_while_revalidate(
    cache: LayeredCache, source: Source, clock: ManualClock
) -> None:
    await cache.read(KEY, CANDLES, source)
    clock.advance(45)  # past ttl 30, within grace 30
    source.gate = asyncio.Event()
    read = await asyncio.wait_for(cache.read(KEY, CANDLES, source), 1)  # not blocked
    assert read.stale is True and read.entry.body == b'{"n":1}'
    assert read.entry.age_ms(cache.now_ms()) == 45_000
    await cache.read(KEY, CANDLES, source)  # a second stale reader adds no refresh
    await settle()
    assert source.calls == 2
    source.gate.set()
    await settle()
    fresh = await cache.read(KEY, CANDLES, source)
    assert (fresh.stale, fresh.entry.body, source.calls) == (False, b'{"n":2}', 2)


async def test_stale_if_error_until_max_stale(
    cache: LayeredCache, source: Source, clock: ManualClock
) -> None:
    await cache.read(KEY, CANDLES, source)
    source.fail = RuntimeError("exchange down")
    clock.advance(61)  # past ttl + grace: a read must compute, and computing fails
    read = await cache.read(KEY, CANDLES, source)
    assert read.stale is True and read.entry.body == b'{"n":1}'
    clock.advance(900 - 61 - 1)  # 899 s after generation: still within max_stale
    assert (await cache.read(KEY, CANDLES, source)).stale is True
    clock.advance(2)
    with pytest.raises(NothingToServe, match="exchange down"):
        await cache.read(KEY, CANDLES, source)
    assert cache.stats.served[(CANDLES, "error")] == 1


async def test_nothing_to_serve_when_the_first_computation_fails(
    cache: LayeredCache, source: Source
) -> None:
    source.fail = RuntimeError("no data yet")
    with pytest.raises(NothingToServe, match="no data yet"):
        await cache.read(KEY, CANDLES, source)
    source.fail = None
    assert (await cache.read(KEY, CANDLES, source)).entry.body == b'{"n":2}'


async def test_xfetch_refreshes_hot_keys_early(clock: ManualClock, source: Source) -> None:
    draws = iter([1e-12])  # −ln(1e-12) ≈ 27.6: δ·β·27.6 reaches past the expiry
    cache = LayeredCache(load_policy(), L1Cache(1 << 20), clock=clock, rng=lambda: next(draws, 1.0))
    await cache.read(KEY, CANDLES, source)
    entry = cache.l1.get(KEY)
    assert entry is not None
    slow = CacheEntry(
        entry.body,
        entry.etag,
        entry.generated_at_ms,
        entry.ttl_ms,
        entry.grace_ms,
        entry.max_stale_ms,
        compute_ms=2000.0,
    )
    cache.l1.put(KEY, CANDLES, slow)
    clock.advance(1)  # fresh for 29 s more, but 2 s × 27.6 = 55 s > 29 s
    read = await cache.read(KEY, CANDLES, source)
    assert read.stale is False and read.entry.body == b'{"n":1}'
    await settle()
    assert source.calls == 2  # refreshed early, in the background
    await cache.read(KEY, CANDLES, source)  # rng now 1.0: −ln(1) = 0, no early refresh
    await settle()
    assert source.calls == 2


async def test_pipeline_views_are_not_refreshed_early(clock: ManualClock) -> None:
    cache = LayeredCache(load_policy(), L1Cache(1 << 20), clock=clock, rng=lambda: 1e-12)
    key = make_key("dash:desktop")
    computed: list[int] = []

    async def publish() -> None:
        computed.append(1)
        entry = cache.make_entry("dash:desktop", b'{"a":1}', cache.now_ms(), compute_ms=5000)
        await cache.write_many({key: ("dash:desktop", entry)})

    await cache.read(key, "dash:desktop", publish)  # compute returns None: the producer stored it
    assert (await cache.read(key, "dash:desktop", publish)).tier == "l1"
    await settle()
    assert computed == [1]


async def test_invalidating_market_cascades_downstream(cache: LayeredCache, source: Source) -> None:
    await cache.read(KEY, CANDLES, source)
    session_key = make_key("session", "abc")
    await cache.read(session_key, "session", source)
    affected = await cache.invalidate_families(["market"])
    assert "candles" in affected and "dash:desktop" in affected and "session" not in affected
    assert cache.generations.get("candles") == 1
    assert cache.l1.items_by_family() == {"session": 1}
    read = await cache.read(KEY, CANDLES, source)
    assert read.tier == "computed" and source.calls == 3
    assert cache.physical_key(KEY, CANDLES).endswith("#g1")


async def test_invalidating_one_key_cascades_to_its_dependents(cache: LayeredCache) -> None:
    affected = await cache.invalidate_key(make_key("confluence", "BTCUSDT", "5m"), "confluence")
    assert affected[0] == "confluence"
    assert {"signals", "dash:desktop", "dash:mobile", "dash:overview"} <= set(affected)
    assert "beta" not in affected
    assert cache.generations.get("confluence") == 0  # only the one key of it went
    assert cache.generations.get("signals") == 1


async def test_mobile_entries_carry_a_compressed_variant(cache: LayeredCache) -> None:
    body = b'{"cards":[' + b'{"symbol":"BTCUSDT","score":55.5},' * 50 + b"{}]}"
    mobile = cache.make_entry("dash:mobile", body, 0)
    desktop = cache.make_entry("dash:desktop", body, 0)
    assert mobile.compressed is not None and len(mobile.compressed) < len(body) / 4
    assert desktop.compressed is None
    assert mobile.ttl_ms == 25_000 and desktop.ttl_ms == 20_000


def test_l1_is_bounded_by_bytes_with_lru_eviction() -> None:
    l1 = L1Cache(max_bytes=1000)
    entry = CacheEntry(b"x" * 300, "e", 0, 1, 0, 1)
    for name in "abc":
        l1.put(name, "candles", entry)
    l1.get("a")  # a is now the most recently used
    l1.put("d", "candles", entry)
    assert "b" not in l1 and {"a", "c", "d"} <= {k for k in "abcd" if k in l1}
    assert (l1.bytes, l1.evictions) == (900, 1)
    l1.put("huge", "candles", CacheEntry(b"x" * 2000, "e", 0, 1, 0, 1))
    assert "huge" not in l1 and l1.bytes == 900


async def test_adaptive_ttl_lengthens_when_data_rarely_changes(
    cache: LayeredCache, clock: ManualClock
) -> None:
    tuner = AdaptiveTtl(cache, clock)
    cache.ttl_seconds[CANDLES] = 10  # its floor (min_ttl)
    key = make_key(CANDLES, "ETHUSDT", "1h")

    async def same() -> Computed:
        return Computed(b'{"same":true}', cache.now_ms())

    for _ in range(30):  # readers come after expiry and grace; the bytes never change
        await cache.read(key, CANDLES, same)
        clock.advance(41)
    decisions = tuner.tick()
    changed = [d for d in decisions if d.family == CANDLES]
    assert changed and (changed[0].old_ttl, changed[0].new_ttl) == (10, 15)
    assert changed[0].change_ratio < 0.1 and changed[0].hit_ratio == 0
    assert "rarely changes" in changed[0].reason
    assert tuner.report()["decisions"][0]["family"] == CANDLES


async def test_adaptive_ttl_keeps_dependents_below_dependencies(cache: LayeredCache) -> None:
    tuner = AdaptiveTtl(cache)
    cache.ttl_seconds["signals"] = 10  # as if tuned down
    decisions = tuner.tick()
    held = {d.family: d.new_ttl for d in decisions}
    assert held["dash:desktop"] == 10 and held["dash:overview"] == 10
    for family in cache.policy.families:
        for dependency in cache.policy.family(family).depends_on:
            assert cache.ttl_seconds[family] <= cache.ttl_seconds[dependency]


async def test_without_single_flight_every_cold_reader_computes(
    source: Source, clock: ManualClock
) -> None:
    """The benchmark's ablation: what single-flight saves."""
    cache = LayeredCache(load_policy(), L1Cache(1 << 20), clock=clock, single_flight=False)
    source.gate = asyncio.Event()
    readers = [asyncio.create_task(cache.read(KEY, CANDLES, source)) for _ in range(20)]
    await settle()
    source.gate.set()
    await asyncio.gather(*readers)
    assert source.calls == 20
