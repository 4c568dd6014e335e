"""RedisTier against a real redis-server: round trips, TTLs, timeouts, outage and rejoin."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import pytest

from app.backends.connection import connect_redis
from app.backends.errors import RedisSkipped, TierUnavailable, is_connection_failure
from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.cache.redis_tier import RedisTier
from app.cache.tier import SharedTier
from app.resilience.breaker import CircuitBreaker
from app.resilience.redis_breaker import redis_breaker_config, redis_guard
from tests.conftest import ManualClock, eventually
from tests.support.servers import free_port, unresponsive_server

TIMEOUT = 0.3  # the bound in the test about timing out
# Everywhere else: a slow answer on a busy machine is not what those tests are about.
PATIENT = 5.0
KEYSPACE = Keyspace("tier-test")


@pytest.fixture
def client(redis_client):
    return redis_client


@pytest.fixture
def tier(client) -> RedisTier:
    return RedisTier(client, keyspace=KEYSPACE, guard=redis_guard(timeout_seconds=PATIENT))


def guard_on(clock: ManualClock) -> RedisGuard:
    """The production Redis guard, but its breaker on ``clock``: it stays open until the
    test moves the clock, however long the machine takes."""
    config = redis_breaker_config(PATIENT)
    breaker = CircuitBreaker("redis", config=config, is_failure=is_connection_failure, clock=clock)
    return RedisGuard(breaker, timeout_seconds=PATIENT)


def test_is_a_shared_tier(tier: RedisTier) -> None:
    shared: SharedTier = tier
    assert shared.name == "redis"
    assert shared.available


async def test_round_trip_with_ttl_under_the_namespace(tier: RedisTier, client) -> None:
    await tier.set_many({"a": b"alpha", "b": b"\x00bytes\xff"}, ttl_seconds=600)

    assert await tier.get_many(["a", "missing", "b", "a"]) == {"a": b"alpha", "b": b"\x00bytes\xff"}
    assert tier.storage_key("a") == "tier-test:view:a"
    assert await client.get("tier-test:view:a") == b"alpha"
    assert await client.get("a") is None
    assert 590 <= await client.ttl("tier-test:view:a") <= 600
    other = RedisTier(client, keyspace=Keyspace("other"), guard=redis_guard(PATIENT))
    assert await other.get_many(["a"]) == {}  # another deployment's copy is not ours

    await tier.delete_many(["a", "missing"])
    assert await tier.get_many(["a", "b"]) == {"b": b"\x00bytes\xff"}
    assert tier.counters == {"ops": 4, "errors": 0, "skipped": 0}


async def test_empty_calls_do_not_reach_redis_and_ttl_must_be_positive(tier: RedisTier) -> None:
    assert await tier.get_many([]) == {}
    await tier.set_many({}, 60)
    await tier.delete_many([])
    assert tier.counters["ops"] == 0
    with pytest.raises(ValueError, match="ttl_seconds"):
        await tier.set_many({"a": b"x"}, 0)


async def test_many_items_in_one_pipeline(tier: RedisTier) -> None:
    items = {f"k{i}": str(i).encode() for i in range(500)}
    await tier.set_many(items, 60)
    assert await tier.get_many(list(items)) == items
    assert tier.counters["ops"] == 2


async def test_stats_reports_memory_limit_evictions_and_items(tier: RedisTier, client) -> None:
    await tier.set_many({"a": b"1", "b": b"2"}, 60)
    stats = await tier.stats()
    assert stats["available"] is True
    assert stats["used_memory"] > 0
    assert stats["maxmemory"] == 0
    assert stats["used_memory_ratio"] is None
    assert stats["evicted_keys"] == 0
    assert stats["items"] == 2
    assert stats["breaker"]["state"] == "closed"

    await client.config_set("maxmemory", str(64 * 1024 * 1024))
    stats = await tier.stats()
    assert stats["maxmemory"] == 64 * 1024 * 1024
    assert 0 < stats["used_memory_ratio"] < 1


async def test_unresponsive_server_times_out_as_tier_unavailable() -> None:
    """A server that accepts connections and never answers: every call is bounded."""
    async with unresponsive_server() as port:
        client = connect_redis(f"redis://127.0.0.1:{port}/0", TIMEOUT)
        tier = RedisTier(client, keyspace=KEYSPACE, guard=redis_guard(timeout_seconds=TIMEOUT))
        try:
            started = time.monotonic()
            # The answer never comes: only the timeout ends the call (the outer bound only
            # keeps a broken bound from hanging the test).
            async with asyncio.timeout(30):
                with pytest.raises(TierUnavailable, match=r"timed out|Timeout"):
                    await tier.get_many(["a"])
            assert time.monotonic() - started >= TIMEOUT - 0.01
            assert tier.counters == {"ops": 1, "errors": 1, "skipped": 0}
            stats = await tier.stats()
            assert stats["available"] is False
        finally:
            await client.aclose()


async def test_nothing_listening_is_tier_unavailable() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0", PATIENT)  # refused at once
    tier = RedisTier(client, keyspace=KEYSPACE)
    try:
        with pytest.raises(TierUnavailable):
            await tier.set_many({"a": b"1"}, 60)
    finally:
        await client.aclose()


async def test_outage_is_skipped_logged_once_and_rejoined(
    redis, client, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.backends.guard")
    tier = RedisTier(client, keyspace=KEYSPACE, guard=guard_on(clock))
    await tier.set_many({"a": b"1"}, 60)

    redis.kill()
    for _ in range(3):  # three connection failures in a row open the breaker
        with pytest.raises(TierUnavailable) as failure:
            await tier.get_many(["a"])
        assert not isinstance(failure.value, RedisSkipped)
    assert not tier.available

    for _ in range(20):  # while open: fail fast, Redis is not even tried
        with pytest.raises(RedisSkipped):
            await tier.get_many(["a"])
    assert tier.counters == {"ops": 4, "errors": 3, "skipped": 20}

    redis.restart()  # empty: the data was not persisted

    async def rejoined() -> bool:
        clock.advance(15.0)  # past the breaker's longest back-off: a trial call goes through
        with contextlib.suppress(TierUnavailable):
            await tier.set_many({"b": b"2"}, 60)
            return True
        return False

    await eventually(rejoined)
    assert tier.available
    assert await tier.get_many(["a", "b"]) == {"b": b"2"}
    assert (await tier.stats())["breaker"]["state"] == "closed"

    ours = [r for r in caplog.records if r.name == "app.backends.guard"]
    assert [r.levelno for r in ours] == [logging.WARNING, logging.INFO]
    assert "unavailable" in ours[0].getMessage()
    assert "back" in ours[1].getMessage()


async def test_one_guard_shared_by_several_users_opens_for_all(redis, client) -> None:
    guard = redis_guard(timeout_seconds=PATIENT)
    first = RedisTier(client, keyspace=KEYSPACE, guard=guard)
    second = RedisTier(client, keyspace=Keyspace("other"), guard=guard)
    redis.kill()
    for _ in range(3):
        with pytest.raises(TierUnavailable):
            await first.get_many(["a"])
    with pytest.raises(RedisSkipped):
        await second.get_many(["a"])
    assert not second.available


async def test_from_url_owns_and_closes_its_client(redis) -> None:
    tier = RedisTier.from_url(KEYSPACE, f"redis://{redis.address}/0", PATIENT)
    await tier.set_many({"a": b"1"}, 60)
    assert await tier.get_many(["a"]) == {"a": b"1"}
    await tier.close()


def test_connect_redis_rejects_a_non_positive_timeout() -> None:
    with pytest.raises(ValueError):
        connect_redis("redis://127.0.0.1:6379/0", 0)
