"""RedisLock against a real redis-server: mutual exclusion, fencing, stale holders, waiting."""

from __future__ import annotations

import asyncio
import dataclasses
import math
import time

import pytest

from app.backends.connection import connect_redis
from app.backends.errors import TierUnavailable, is_connection_failure
from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.locks import LockLease, RedisLock
from app.resilience.breaker import CircuitBreaker
from app.resilience.redis_breaker import redis_breaker_config, redis_guard
from tests.support.servers import free_port

# The guard's bound: none of these tests is about Redis timing out, and a slow answer on
# a busy machine must not fail them.
PATIENT = 5.0
KEYSPACE = Keyspace("locks-test")


@pytest.fixture
def client(redis_client):
    return redis_client


class RecordedSleeps:
    """A lock's ``sleep``: still sleeps, and appends ``("sleep", seconds)`` to ``log``
    (the poll delays; a test may append its own events between them)."""

    def __init__(self) -> None:
        self.log: list[tuple[str, float]] = []

    async def sleep(self, seconds: float) -> None:
        self.log.append(("sleep", seconds))
        await asyncio.sleep(seconds)

    @property
    def delays(self) -> list[float]:
        return [seconds for what, seconds in self.log if what == "sleep"]


@pytest.fixture
def polls() -> RecordedSleeps:
    """The delays ``wait_for_release`` of the ``locks`` fixture sleeps between polls."""
    return RecordedSleeps()


@pytest.fixture
def locks(client, polls: RecordedSleeps) -> RedisLock:
    """Lock semantics, not breaker behaviour: a loaded test machine makes 50 concurrent
    calls slow, and the production breaker would (rightly) trip on slow calls."""
    config = dataclasses.replace(redis_breaker_config(PATIENT), slow_call_seconds=math.inf)
    breaker = CircuitBreaker("redis", config=config, is_failure=is_connection_failure)
    guard = RedisGuard(breaker, timeout_seconds=PATIENT)
    return RedisLock(client, guard=guard, keyspace=KEYSPACE, sleep=polls.sleep)


async def wait_until_free(locks: RedisLock, name: str, seconds: float = 5.0) -> None:
    assert await locks.wait_for_release(name, seconds), f"{name} still held after {seconds} s"


async def test_only_one_of_many_concurrent_acquirers_wins(locks: RedisLock, client) -> None:
    started = time.monotonic()
    leases = await asyncio.gather(*(locks.acquire("view:btc", 5_000) for _ in range(50)))
    winners = [lease for lease in leases if lease is not None]
    assert len(winners) == 1
    lease = winners[0]
    assert lease.name == "view:btc"
    assert lease.token.startswith(f"{lease.fence}:")
    assert await client.get("locks-test:lock:view:btc") == lease.token.encode()
    ttl_ms = await client.pttl("locks-test:lock:view:btc")
    # set to 5 s, less what has passed since (a loaded machine may take over a second)
    elapsed_ms = (time.monotonic() - started) * 1000
    assert min(4_000, 5_000 - elapsed_ms - 5) < ttl_ms <= 5_000
    assert await locks.is_current(lease)


async def test_deployments_with_different_namespaces_hold_their_own_locks(
    locks: RedisLock, client
) -> None:
    other = RedisLock(client, guard=redis_guard(PATIENT), keyspace=Keyspace("elsewhere"))
    mine, theirs = await locks.acquire("refresh", 5_000), await other.acquire("refresh", 5_000)
    assert mine is not None and theirs is not None  # neither skips the other's refresh
    keys = {key.decode() async for key in client.scan_iter(match="*lock:refresh*")}
    assert keys == {
        "locks-test:lock:refresh",
        "locks-test:lock:refresh:fence",
        "elsewhere:lock:refresh",
        "elsewhere:lock:refresh:fence",
    }
    assert await locks.release(mine) and await other.release(theirs)


async def test_release_frees_the_lock_once(locks: RedisLock) -> None:
    lease = await locks.acquire("a", 5_000)
    assert lease is not None
    assert await locks.acquire("a", 5_000) is None
    assert await locks.release(lease)
    assert not await locks.release(lease)  # already released
    assert not await locks.is_current(lease)
    again = await locks.acquire("a", 5_000)
    assert again is not None and again.fence > lease.fence


async def test_locks_of_different_names_are_independent(locks: RedisLock) -> None:
    first, second = await asyncio.gather(locks.acquire("x", 5_000), locks.acquire("y", 5_000))
    assert first is not None and second is not None


async def test_expiry_hands_over_with_a_higher_fence_and_the_stale_holder_cannot_interfere(
    locks: RedisLock,
) -> None:
    stale = await locks.acquire("view", 50)
    assert stale is not None
    await wait_until_free(locks, "view")

    current = await locks.acquire("view", 5_000)
    assert current is not None
    assert current.fence > stale.fence
    assert current.token != stale.token

    assert not await locks.is_current(stale)
    assert not await locks.release(stale)  # a no-op: the new holder keeps its lock
    assert not await locks.extend(stale, 60_000)
    assert await locks.is_current(current)
    assert await locks.is_locked("view")


async def test_extend_works_only_for_the_current_holder(locks: RedisLock, client) -> None:
    lease = await locks.acquire("job", 1_000)
    assert lease is not None
    assert await locks.extend(lease, 30_000)
    assert await client.pttl("locks-test:lock:job") > 20_000
    forged = LockLease("job", f"{lease.fence}:not-the-random-id", lease.fence)
    assert not await locks.extend(forged, 60_000)
    assert not await locks.release(forged)
    assert await locks.is_current(lease)
    assert await locks.release(lease)
    assert not await locks.extend(lease, 30_000)  # released: nothing to extend


async def test_non_positive_ttl_is_rejected(locks: RedisLock) -> None:
    with pytest.raises(ValueError):
        await locks.acquire("a", 0)


async def test_wait_for_release_returns_promptly_after_release(
    locks: RedisLock, polls: RecordedSleeps
) -> None:
    lease = await locks.acquire("slow-view", 10_000)
    assert lease is not None

    async def holder() -> None:
        await asyncio.sleep(0.3)  # this module's asyncio: not recorded
        await locks.release(lease)
        polls.log.append(("released", 0.0))

    task = asyncio.create_task(holder())
    assert await locks.wait_for_release("slow-view", 30.0)
    await task
    # It polls at most max_delay (100 ms) apart, and the release is seen at the next poll:
    # at most one sleep (one already begun, or one after an EXISTS that crossed the DEL)
    # comes after it.
    assert polls.delays and max(polls.delays) <= 0.1
    after_release = polls.log[polls.log.index(("released", 0.0)) + 1 :]
    assert len(after_release) <= 1


async def test_wait_for_release_times_out_while_held(
    locks: RedisLock, polls: RecordedSleeps
) -> None:
    assert await locks.acquire("held", 10_000) is not None
    before = locks.counters["ops"]
    started = time.monotonic()
    assert not await locks.wait_for_release("held", 0.25)
    assert time.monotonic() - started >= 0.25  # it gave up at its timeout, not before
    # ...and not after: it never sleeps past its deadline (the sleeps add up to at most the
    # timeout, each at most max_delay), polling once more after each sleep.
    assert sum(polls.delays) <= 0.25 + 1e-6 and max(polls.delays) <= 0.1
    assert locks.counters["ops"] - before == len(polls.delays) + 1
    assert await locks.is_locked("held")  # False meant "still held", not a failure


async def test_wait_for_release_of_a_free_lock_returns_at_once(
    locks: RedisLock, polls: RecordedSleeps
) -> None:
    before = locks.counters["ops"]
    assert await locks.wait_for_release("free", 5.0)
    assert locks.counters["ops"] - before == 1  # one EXISTS...
    assert polls.log == []  # ...and no sleep


async def test_fences_keep_rising_across_a_redis_restart(redis, locks: RedisLock) -> None:
    before = await locks.acquire("view", 10_000)
    assert before is not None
    redis.restart()  # loses the fence counter and the cached scripts
    after = await locks.acquire("view", 10_000)
    assert after is not None
    assert after.fence > before.fence


async def test_redis_down_raises_tier_unavailable(redis, locks: RedisLock) -> None:
    lease = await locks.acquire("view", 10_000)
    assert lease is not None
    redis.kill()
    with pytest.raises(TierUnavailable):
        await locks.acquire("view", 10_000)
    with pytest.raises(TierUnavailable):
        await locks.release(lease)
    with pytest.raises(TierUnavailable):
        await locks.wait_for_release("view", 1.0)


async def test_nothing_listening_raises_tier_unavailable() -> None:
    client = connect_redis(f"redis://127.0.0.1:{free_port()}/0", PATIENT)
    try:
        with pytest.raises(TierUnavailable):
            await RedisLock(client, guard=redis_guard(PATIENT), keyspace=KEYSPACE).acquire(
                "view", 1_000
            )  # refused
    finally:
        await client.aclose()


async def test_write_if_current_sets_and_publishes_only_for_the_current_holder(
    locks: RedisLock, client
) -> None:
    stale = await locks.acquire("leader", 50)
    assert stale is not None
    await wait_until_free(locks, "leader")
    current = await locks.acquire("leader", 5_000)
    assert current is not None
    async with client.pubsub() as pubsub:
        await pubsub.subscribe("ns:updates")
        await pubsub.get_message(timeout=5)  # the subscription's confirmation
        values = {"ns:a": b"1", "ns:b": "two"}
        assert not await locks.write_if_current(
            stale, values, 60_000, channel="ns:updates", message=b"stale"
        )
        assert await client.get("ns:a") is None and await client.get("ns:b") is None
        assert await locks.write_if_current(
            current, values, 60_000, channel="ns:updates", message=b"current"
        )
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PATIENT)
        assert message is not None and message["data"] == b"current"  # "stale" never sent
    assert await client.get("ns:a") == b"1" and await client.get("ns:b") == b"two"
    assert 50_000 < await client.pttl("ns:a") <= 60_000
    assert await locks.write_if_current(current, {"ns:a": b"3"}, 60_000)  # no channel
    assert await client.get("ns:a") == b"3"
    with pytest.raises(ValueError):
        await locks.write_if_current(current, values, 0)
