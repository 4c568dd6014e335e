"""LayeredCache.spread (what cache warming relies on): every shared tier ends up holding
each entry or a newer copy, read back; the tiers that do not are named, never assumed."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pytest

from app.backends.errors import TierUnavailable
from app.cache.codec import decode, encode
from app.cache.keys import make_key
from app.cache.l1 import L1Cache
from app.cache.layered import LayeredCache
from app.cache.policy import load_policy
from tests.conftest import ManualClock

FAMILY = "dash:desktop"
KEY = make_key(FAMILY)


class DictTier:
    """A shared tier in a dict. ``refuses``: sets are silently not stored (as Memcached
    skips a value over its size limit); ``down``: every call raises TierUnavailable."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.values: dict[str, bytes] = {}
        self.ttls: dict[str, int] = {}
        self.refuses = False
        self.down = False
        self.sets = 0

    @property
    def available(self) -> bool:
        return True

    def _check(self) -> None:
        if self.down:
            raise TierUnavailable(f"{self.name} down")

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        self._check()
        return {key: self.values[key] for key in keys if key in self.values}

    async def set_many(self, items: Mapping[str, bytes], ttl_seconds: int) -> None:
        self._check()
        self.sets += 1
        if not self.refuses:
            self.values.update(items)
            self.ttls.update(dict.fromkeys(items, ttl_seconds))

    async def delete_many(self, keys: Sequence[str]) -> None:
        self._check()
        for key in keys:
            self.values.pop(key, None)

    async def stats(self) -> dict:
        return {}

    async def close(self) -> None:
        return None


@pytest.fixture
def tiers() -> tuple[DictTier, DictTier]:
    return DictTier("memcached"), DictTier("redis")


@pytest.fixture
def cache(clock: ManualClock, tiers: tuple[DictTier, DictTier]) -> LayeredCache:
    memcached, redis = tiers
    return LayeredCache(
        load_policy(), L1Cache(1 << 20), memcached=memcached, backup=redis, clock=clock
    )


def entry_at(cache: LayeredCache, generated_at_ms: int, body: bytes = b'{"v":1}'):
    return cache.make_entry(FAMILY, body, generated_at_ms)


async def test_an_absent_copy_is_written_into_each_tier_with_its_ttl(
    cache: LayeredCache, tiers: tuple[DictTier, DictTier]
) -> None:
    entry = entry_at(cache, cache.now_ms())
    assert await cache.spread({KEY: (FAMILY, entry)}) == {}
    rules = cache.policy.family(FAMILY)
    memcached, redis = tiers
    assert decode(memcached.values[KEY]) == entry and decode(redis.values[KEY]) == entry
    assert memcached.ttls[KEY] == pytest.approx(rules.ttl + rules.grace, abs=1)
    assert redis.ttls[KEY] == int(rules.backup_ttl)


@pytest.mark.parametrize(
    ("there", "rewritten"),
    [("older", True), ("corrupt", True), ("same", False), ("newer", False)],
)
async def test_a_copy_is_rewritten_only_when_unreadable_or_older(
    cache: LayeredCache, tiers: tuple[DictTier, DictTier], there: str, rewritten: bool
) -> None:
    now = cache.now_ms()
    entry = entry_at(cache, now)
    copies = {
        "older": encode(entry_at(cache, now - 1000, b'{"v":0}')),
        "corrupt": encode(entry)[:-3],
        "same": encode(entry),
        "newer": encode(entry_at(cache, now + 1000, b'{"v":2}')),
    }
    for tier in tiers:
        tier.values[KEY] = copies[there]
    assert await cache.spread({KEY: (FAMILY, entry)}) == {}
    for tier in tiers:
        assert (tier.sets == 1) is rewritten
        held = decode(tier.values[KEY])
        assert held.generated_at_ms >= entry.generated_at_ms  # never replaced by an older one


async def test_a_tier_that_does_not_keep_the_write_is_named(
    cache: LayeredCache, tiers: tuple[DictTier, DictTier]
) -> None:
    memcached, redis = tiers
    memcached.refuses = True
    entry = entry_at(cache, cache.now_ms())
    assert await cache.spread({KEY: (FAMILY, entry)}) == {KEY: ["memcached"]}
    assert KEY in redis.values


async def test_a_tier_that_is_down_is_named_and_the_other_still_filled(
    cache: LayeredCache, tiers: tuple[DictTier, DictTier]
) -> None:
    memcached, redis = tiers
    redis.down = True
    entry = entry_at(cache, cache.now_ms())
    assert await cache.spread({KEY: (FAMILY, entry)}) == {KEY: ["redis"]}
    assert decode(memcached.values[KEY]) == entry
