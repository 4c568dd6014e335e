"""LeaderLease's timing and term logic on a fake clock and an in-memory lock.

Time is virtual: the lease's ``sleep`` advances the clock by what it was asked and
yields once, so every instant below is exact (the lock's calls record the clock).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable
from itertools import pairwise

import pytest

from app.backends.errors import TierUnavailable
from app.backends.lease import LeaderLease
from app.backends.locks import LockLease
from tests.conftest import ManualClock

TTL = 3.0  # defaults: renew every 1 s, stop 0.6 s before expiry (validity 2.4 s)
RENEW = TTL / 3
VALIDITY = TTL - TTL / 5


class FakeLock:
    """The ``RedisLock`` calls the lease makes, on one in-memory lock that expires on
    ``clock``; ``down`` makes every call raise TierUnavailable; ``calls`` records
    ``(operation, clock)``."""

    def __init__(self, clock: ManualClock) -> None:
        self.clock = clock
        self.token: str | None = None
        self.expires = 0.0
        self.fence = 0
        self.down = False
        self.calls: list[tuple[str, float]] = []
        self.writes: list[tuple[dict, str | None]] = []

    def key(self, name: str) -> str:
        return "virtuoso:lock:" + name

    def times(self, operation: str) -> list[float]:
        return [at for op, at in self.calls if op == operation]

    def _call(self, operation: str) -> None:
        self.calls.append((operation, self.clock()))
        if self.down:
            raise TierUnavailable("redis down")

    def _holds(self, lease: LockLease) -> bool:
        return self.token == lease.token and self.clock() < self.expires

    def take_over(self) -> None:
        """Another process holds the lock now."""
        self.fence += 1
        self.token, self.expires = f"{self.fence}:other", self.clock() + 60

    async def acquire(self, name: str, ttl_ms: int) -> LockLease | None:
        self._call("acquire")
        if self.token is not None and self.clock() < self.expires:
            return None
        self.fence += 1
        self.token, self.expires = f"{self.fence}:mine", self.clock() + ttl_ms / 1000
        return LockLease(name, self.token, self.fence)

    async def extend(self, lease: LockLease, ttl_ms: int) -> bool:
        self._call("extend")
        if self._holds(lease):
            self.expires = self.clock() + ttl_ms / 1000
            return True
        return False

    async def release(self, lease: LockLease) -> bool:
        self._call("release")
        if self._holds(lease):
            self.token = None
            return True
        return False

    async def write_if_current(self, lease, values, ttl_ms, *, channel=None, message=b""):
        self._call("write")
        if self._holds(lease):
            self.writes.append((dict(values), channel))
            return True
        return False


class Leader:
    """A lease on the fake lock, run as a task; ``events``: ``(event, fence, clock)``."""

    def __init__(self, clock: ManualClock, lock: FakeLock, **timings: float) -> None:
        async def virtual_sleep(seconds: float) -> None:
            clock.advance(seconds)
            await asyncio.sleep(0)

        self.clock = clock
        self.lease = LeaderLease(
            lock,  # type: ignore[arg-type]
            namespace="ns",
            ttl_seconds=timings.pop("ttl_seconds", TTL),
            clock=clock,
            sleep=virtual_sleep,
            **timings,
        )
        self.events: list[tuple[str, int, float]] = []
        self.task: asyncio.Task[None] | None = None

    async def lead(self, term: LockLease) -> None:
        self.events.append(("elected", term.fence, self.clock()))
        await asyncio.Event().wait()

    async def deposed(self, term: LockLease) -> None:
        self.events.append(("deposed", term.fence, self.clock()))

    def start(self, lead: Callable[[LockLease], Awaitable[None]] | None = None) -> None:
        self.task = asyncio.create_task(self.lease.run(lead or self.lead, self.deposed))

    def count(self, event: str) -> int:
        return sum(1 for seen, _, _ in self.events if seen == event)


async def until(condition: Callable[[], bool], turns: int = 20_000) -> None:
    """Lets the loop turn until ``condition`` holds (virtual time: no wall clock)."""
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not met")


@pytest.fixture
def lock(clock: ManualClock) -> FakeLock:
    return FakeLock(clock)


async def test_a_leader_renews_every_renew_every_and_stays_leader(clock, lock) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: len(lock.times("extend")) >= 5)
    assert leader.lease.is_leader and leader.lease.fence == 1
    elected_at = leader.events[0][2]
    gaps = [b - a for a, b in pairwise([elected_at, *lock.times("extend")])]
    assert gaps == pytest.approx([RENEW] * len(gaps))
    await leader.lease.resign()
    assert leader.task.done() and leader.task.exception() is None
    assert lock.token is None  # released: a standby takes over at once
    assert [event for event, _, _ in leader.events] == ["elected", "deposed"]


async def test_redis_down_ends_the_term_before_the_lease_can_expire_then_it_campaigns(
    clock, lock
) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: len(lock.times("extend")) >= 2)
    last_renewal = lock.times("extend")[-1]
    lock.down = True
    await until(lambda: leader.count("deposed") == 1)
    deposed_at = leader.events[-1][2]
    # It acts until its validity ends, on its clock, and stops before Redis's expiry.
    assert deposed_at == pytest.approx(last_renewal + VALIDITY)
    assert deposed_at < lock.expires
    assert not leader.lease.is_leader and leader.lease.term is None
    # Failed renewals are retried twice as often until then.
    retries = [at for at in lock.times("extend") if at > last_renewal]
    assert retries == pytest.approx([last_renewal + RENEW * (1 + k / 2) for k in range(3)])
    assert leader.lease.counters.expired == 1
    # Then it campaigns every renew_every, never raising, and leads again when Redis is back.
    campaigns = leader.lease.counters.campaigns
    await until(lambda: leader.lease.counters.campaigns >= campaigns + 3)
    attempts = lock.times("acquire")[-3:]
    assert [b - a for a, b in pairwise(attempts)] == pytest.approx([RENEW] * 2)
    assert not leader.task.done()
    lock.down = False
    lock.expires = 0  # the old lease has expired in Redis by now
    await until(lambda: leader.count("elected") == 2)
    assert leader.lease.fence == 2
    await leader.lease.resign()


async def test_a_renewal_that_finds_another_holder_ends_the_term_at_once(clock, lock) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: leader.lease.is_leader)
    lock.take_over()
    await until(lambda: leader.count("deposed") == 1)
    assert leader.events[-1][2] == pytest.approx(lock.times("extend")[0])
    assert leader.lease.counters.lost == 1
    # standing by: one attempt every renew_every
    await until(lambda: len(lock.times("acquire")) >= 4)
    attempts = lock.times("acquire")[1:]
    assert [b - a for a, b in pairwise(attempts)] == pytest.approx([RENEW] * 2)
    assert leader.count("elected") == 1
    await leader.lease.resign()
    assert leader.task.done()


async def test_a_refused_publish_ends_the_term_without_waiting_for_the_renewal(clock, lock) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: leader.lease.is_leader)
    assert await leader.lease.publish({"ns:view": b"1"}, 1_000, channel="ns:updates")
    assert lock.writes == [({"ns:view": b"1"}, "ns:updates")]
    lock.take_over()
    assert not await leader.lease.publish({"ns:view": b"2"}, 1_000)
    assert not leader.lease.is_leader  # at once
    await until(lambda: leader.count("deposed") == 1)
    assert lock.times("extend") == []  # no renewal was needed to see it
    assert leader.lease.counters.lost == 1
    assert len(lock.writes) == 1
    await leader.lease.resign()


async def test_a_frozen_leader_finds_its_term_over_when_it_wakes(clock, lock) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: leader.lease.is_leader)
    clock.advance(VALIDITY)  # the process was stopped this long
    assert not leader.lease.is_leader and leader.lease.fence is None
    writes = len(lock.times("write"))
    assert not await leader.lease.publish({"ns:view": b"late"}, 1_000)
    assert len(lock.times("write")) == writes  # refused here, without a call to Redis
    await until(lambda: leader.count("deposed") == 1)
    await leader.lease.resign()


async def test_when_the_work_returns_the_lease_resigns_and_run_returns(clock, lock) -> None:
    leader = Leader(clock, lock)

    async def short_work(term: LockLease) -> None:
        await asyncio.sleep(0)

    await asyncio.wait_for(leader.lease.run(short_work), 10)
    assert lock.token is None and lock.times("release")
    assert leader.lease.counters.terms == 1


async def test_when_the_work_raises_run_releases_and_raises_it(clock, lock) -> None:
    leader = Leader(clock, lock)

    async def failing_work(term: LockLease) -> None:
        raise RuntimeError("collector broke")

    with pytest.raises(RuntimeError, match="collector broke"):
        await asyncio.wait_for(leader.lease.run(failing_work), 10)
    assert lock.token is None


async def test_cancelling_run_ends_the_term_and_releases(clock, lock) -> None:
    leader = Leader(clock, lock)
    leader.start()
    await until(lambda: leader.lease.is_leader)
    leader.task.cancel()
    await asyncio.wait({leader.task})
    assert leader.count("deposed") == 1 and lock.token is None


async def test_a_work_whose_cancellation_was_lost_is_cancelled_again(clock, lock, caplog) -> None:
    """Python 3.11's asyncio.wait_for (in redis-py) can drop a cancellation that arrives
    as its operation completes: the work runs on, yet the term still ends."""
    leader = Leader(clock, lock, ttl_seconds=0.5)  # cancelled again after 0.4 s
    dropped = []

    async def work_dropping_its_first_cancellation(term: LockLease) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            dropped.append(term.fence)  # as wait_for drops it: the work goes on
        await asyncio.Event().wait()

    leader.start(work_dropping_its_first_cancellation)
    await until(lambda: leader.lease.is_leader)
    await asyncio.wait_for(leader.lease.resign(), 10)
    assert dropped == [1] and leader.task.done() and leader.task.exception() is None
    assert leader.count("deposed") == 1 and lock.token is None
    assert "the leader's work still runs; cancelling it again" in caplog.text


async def test_run_twice_is_refused_and_resign_before_run_never_campaigns(clock, lock) -> None:
    leader = Leader(clock, lock)
    await leader.lease.resign()
    await asyncio.wait_for(leader.lease.run(leader.lead), 10)
    assert leader.lease.counters.campaigns == 0 and lock.calls == []
    with pytest.raises(RuntimeError):
        await leader.lease.run(leader.lead)


async def test_publish_checks_its_arguments_and_refuses_without_a_term(clock, lock) -> None:
    lease = Leader(clock, lock).lease
    with pytest.raises(ValueError, match="namespace"):
        await lease.publish({"other:view": b"1"}, 1_000)
    with pytest.raises(ValueError, match="namespace"):
        await lease.publish({"ns:view": b"1"}, 1_000, channel="nsx:updates")
    with pytest.raises(ValueError, match="ttl_ms"):
        await lease.publish({"ns:view": b"1"}, 0)
    assert not await lease.publish({"ns:view": b"1"}, 1_000)  # not leading
    assert lock.calls == []


def test_the_lease_key_is_the_locks_named_for_the_role(clock, lock) -> None:
    lease = LeaderLease(lock, namespace="blue", name="collector", ttl_seconds=5)  # type: ignore[arg-type]
    assert lease.key == "virtuoso:lock:leader:collector"  # the lock's keyspace, once
    assert not lease.is_leader and lease.term is None and lease.fence is None


@pytest.mark.parametrize("name", ["", "has space", "colon:inside", "x" * 65, "ünï"])
def test_invalid_names_and_namespaces_are_refused(lock, name: str) -> None:
    with pytest.raises(ValueError, match="name"):
        LeaderLease(lock, name, namespace="ns", ttl_seconds=5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="namespace"):
        LeaderLease(lock, namespace=name, ttl_seconds=5)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "timings",
    [
        {"ttl_seconds": 0},
        {"ttl_seconds": -1},
        {"ttl_seconds": math.nan},
        {"ttl_seconds": math.inf},
        {"ttl_seconds": 5, "margin_seconds": 5},
        {"ttl_seconds": 5, "margin_seconds": 0},
        {"ttl_seconds": 5, "renew_every": 0},
        {"ttl_seconds": 5, "renew_every": 4},  # not before the term ends (5 - 1)
        {"ttl_seconds": 5, "margin_seconds": 2, "renew_every": 3},
    ],
)
def test_timings_that_leave_no_renewal_before_the_term_ends_are_refused(lock, timings) -> None:
    with pytest.raises(ValueError, match="ttl"):
        LeaderLease(lock, namespace="ns", **timings)  # type: ignore[arg-type]


async def test_work_failing_as_its_term_ends_is_logged_and_the_candidacy_goes_on(
    clock, lock, caplog
) -> None:
    leader = Leader(clock, lock)

    async def work_failing_on_cancel(term: LockLease) -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            raise RuntimeError("cleanup broke") from None

    leader.start(work_failing_on_cancel)
    await until(lambda: leader.lease.is_leader)
    lock.take_over()
    await until(lambda: leader.lease.counters.lost == 1 and leader.count("deposed") == 1)
    await until(lambda: leader.lease.counters.campaigns >= 3)
    assert not leader.task.done()
    assert "the leader's work failed" in caplog.text
    await leader.lease.resign()
    assert leader.task.exception() is None
