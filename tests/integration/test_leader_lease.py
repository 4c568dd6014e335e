"""LeaderLease against a real redis-server: one leader among candidates, takeover after
a SIGKILL, hand-over on resign, rising fences, fenced writes refused after a takeover
(also from a leader frozen with SIGSTOP), and a Redis outage waited out.

Leaders that die run in processes of their own (``tests.support.leader``). Waits are
bounded; what is asserted is counted (campaign attempts, terms, fences), never a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio

from app.backends.lease import LeaderLease
from app.backends.locks import LockLease
from tests.conftest import eventually
from tests.support.leader import LeaderProcess, patient_lock

NAMESPACE = "lease-test"
ELECTED_KEY = f"{NAMESPACE}:elected"
CHANNEL = f"{NAMESPACE}:leader"
TTL = 1.5
RENEW = 0.25
# A bound for waits that only a broken lease (or a machine stalled for this long) misses.
PATIENCE = 30.0


class Candidate:
    """An in-process candidate; ``events``: ``(event, fence)``. Each term it leads it
    makes one fenced write: ``ELECTED_KEY`` = ``"in-process <fence>"``, announced on
    ``CHANNEL``."""

    def __init__(self, url: str, ttl_seconds: float, renew_every: float) -> None:
        self.lock, self.client = patient_lock(url, NAMESPACE)
        self.lease = LeaderLease(
            self.lock,
            namespace=NAMESPACE,
            name="collector",
            ttl_seconds=ttl_seconds,
            renew_every=renew_every,
        )
        self.events: list[tuple[str, int]] = []
        self.task = asyncio.create_task(self.lease.run(self._lead, self._deposed))

    async def _lead(self, term: LockLease) -> None:
        self.events.append(("elected", term.fence))
        value = f"in-process {term.fence}"
        await self.lease.publish({ELECTED_KEY: value}, 600_000, channel=CHANNEL, message=value)
        await asyncio.Event().wait()

    async def _deposed(self, term: LockLease) -> None:
        self.events.append(("deposed", term.fence))

    def fences(self, event: str) -> list[int]:
        return [fence for seen, fence in self.events if seen == event]

    async def close(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(PATIENCE):
                await self.lease.resign()
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task
        await self.client.aclose()


@pytest.fixture
def url(redis) -> str:
    return f"redis://{redis.address}/0"


@pytest_asyncio.fixture
async def candidates(url: str) -> AsyncIterator[Callable[..., Candidate]]:
    """Starts in-process candidates (``ttl_seconds``, ``renew_every``); all resigned after."""
    started: list[Candidate] = []

    def start(ttl_seconds: float = TTL, renew_every: float = RENEW) -> Candidate:
        started.append(Candidate(url, ttl_seconds, renew_every))
        return started[-1]

    yield start
    for candidate in started:
        await candidate.close()


@pytest.fixture
def processes(url: str):
    """Starts leader processes (``ttl_seconds``, ``renew_every``); all killed after."""
    started: list[LeaderProcess] = []

    def start(ttl_seconds: float = TTL, renew_every: float = RENEW) -> LeaderProcess:
        started.append(LeaderProcess(url, NAMESPACE, ttl_seconds, renew_every))
        return started[-1]

    yield start
    for process in started:
        with contextlib.suppress(ProcessLookupError):
            process.signal(signal.SIGCONT)
        process.close()


async def standing_by(candidate: Candidate, attempts: int = 2) -> int:
    """Waits until ``candidate`` has failed ``attempts`` more campaigns; its count then."""
    first = candidate.lease.counters.campaigns
    await eventually(lambda: candidate.lease.counters.campaigns >= first + attempts, PATIENCE)
    assert not candidate.lease.is_leader
    return candidate.lease.counters.campaigns


async def test_one_of_several_candidates_leads_while_the_others_stand_by(
    candidates, redis_client
) -> None:
    field = [candidates() for _ in range(4)]
    await eventually(lambda: any(c.lease.is_leader for c in field), PATIENCE)
    leaders_seen: set[int] = set()
    campaigns = [c.lease.counters.campaigns for c in field]

    def several_renewals_later() -> bool:
        leaders = [i for i, c in enumerate(field) if c.lease.is_leader]
        assert len(leaders) <= 1, leaders
        leaders_seen.update(leaders)
        return all(c.lease.counters.renewals >= 4 for c in field if c.lease.is_leader) and all(
            c.lease.counters.campaigns >= n + 3
            for c, n in zip(field, campaigns, strict=True)
            if not c.lease.is_leader
        )

    await eventually(several_renewals_later, PATIENCE)
    assert len(leaders_seen) == 1
    (leader,) = (field[i] for i in leaders_seen)
    assert sum(c.lease.counters.terms for c in field) == 1
    assert leader.lease.key == f"{NAMESPACE}:lock:leader:collector"
    assert await redis_client.get(leader.lease.key) == leader.lease.term.token.encode()
    assert await redis_client.get(ELECTED_KEY) == f"in-process {leader.lease.fence}".encode()


async def test_a_standby_takes_over_within_ttl_and_one_renewal_after_the_leader_is_killed(
    candidates, processes, redis_client
) -> None:
    leader = processes()
    await eventually(lambda: leader.count("published") >= 1, PATIENCE)
    standby = candidates()
    before_kill = await standing_by(standby)

    leader.close()  # SIGKILL: nothing released, the lease expires by itself
    await eventually(lambda: standby.lease.is_leader, PATIENCE)

    # The dead leader's lease lived at most TTL after its last renewal, and the standby
    # tries every RENEW: at most TTL / RENEW failed attempts, then the one that won.
    attempts = standby.lease.counters.campaigns - before_kill
    assert attempts <= TTL / RENEW + 2
    (killed_fence,) = leader.fences("elected")
    # is_leader turns True as the term starts; the term's work runs right after
    await eventually(lambda: standby.fences("elected") == [standby.lease.fence], PATIENCE)
    assert standby.lease.fence > killed_fence
    # the new leader's first write
    expected = f"in-process {standby.lease.fence}"
    await eventually(lambda: _equals(redis_client.get(ELECTED_KEY), expected), PATIENCE)


async def test_a_resigning_leader_hands_over_at_once_not_after_its_ttl(
    candidates, processes
) -> None:
    long_ttl = 30.0  # expiry alone would take over a hundred attempts of the standby
    leader = processes(long_ttl, RENEW)
    await eventually(lambda: leader.count("elected") == 1, PATIENCE)
    standby = candidates(long_ttl, 0.2)
    before = await standing_by(standby)

    leader.signal(signal.SIGTERM)
    assert leader.wait(PATIENCE) == 0
    assert [event for event, _ in leader.events if event in {"deposed", "stopped"}] == [
        "deposed",
        "stopped",
    ]
    await eventually(lambda: standby.lease.is_leader, PATIENCE)
    assert standby.lease.counters.campaigns - before < 0.5 * long_ttl / 0.2
    assert standby.lease.fence > leader.fences("elected")[0]


async def test_fences_strictly_increase_across_terms(candidates) -> None:
    field = [candidates() for _ in range(3)]
    fences: list[int] = []
    for _ in field:
        await eventually(lambda: any(c.lease.is_leader for c in field), PATIENCE)
        (leader,) = (c for c in field if c.lease.is_leader)
        fences.append(leader.lease.fence)
        await resigned(leader)
        assert leader.task.done() and leader.task.exception() is None
    assert fences == sorted(set(fences)) and len(fences) == 3
    assert sorted(f for c in field for f in c.fences("elected")) == fences


async def test_a_write_after_the_lease_was_taken_over_is_refused_by_redis(
    candidates, redis_client
) -> None:
    # Renewals 10 s apart: the takeover below is seen by the write, not by a renewal.
    leader = candidates(30.0, 10.0)
    await eventually(lambda: leader.lease.is_leader, PATIENCE)
    fence = leader.lease.fence
    await eventually(lambda: redis_client.get(ELECTED_KEY), PATIENCE)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        await pubsub.get_message(timeout=5)  # the subscription's confirmation
        # Another process took the lease while this one still counts on its term.
        await redis_client.set(leader.lease.key, "99:intruder", px=60_000)
        assert leader.lease.is_leader
        ops = leader.lock.counters["ops"]
        refused = await leader.lease.publish(
            {f"{NAMESPACE}:view": b"late"}, 60_000, channel=CHANNEL, message=b"late"
        )
        assert not refused
        assert leader.lock.counters["ops"] == ops + 1  # Redis refused it, not the clock
        assert await redis_client.get(f"{NAMESPACE}:view") is None
        await redis_client.publish(CHANNEL, b"sentinel")
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PATIENCE)
        assert message is not None and message["data"] == b"sentinel"  # "late" never sent
    assert not leader.lease.is_leader
    await eventually(lambda: leader.fences("deposed") == [fence], PATIENCE)
    assert leader.lease.counters.lost == 1 and leader.lease.counters.renewals == 0
    assert await redis_client.get(leader.lease.key) == b"99:intruder"  # left alone

    # Standing by again: it has campaigned since (against the intruder's lease).
    await eventually(lambda: leader.lease.counters.campaigns >= 2, PATIENCE)
    assert leader.lease.counters.terms == 1 and not leader.task.done()


async def test_a_leader_frozen_past_its_term_writes_nothing_when_it_wakes(
    candidates, processes, redis_client
) -> None:
    leader = processes()
    await eventually(lambda: leader.count("published") >= 2, PATIENCE)
    (old_fence,) = leader.fences("elected")
    standby = candidates()
    await standing_by(standby)
    async with redis_client.pubsub() as pubsub:
        await pubsub.subscribe(CHANNEL)
        await pubsub.get_message(timeout=5)

        leader.signal(signal.SIGSTOP)  # frozen mid-term: it neither renews nor resigns
        await eventually(lambda: standby.lease.is_leader, PATIENCE)
        new_fence = standby.lease.fence
        assert new_fence > old_fence
        await eventually(
            lambda: _equals(redis_client.get(ELECTED_KEY), f"in-process {new_fence}"), PATIENCE
        )
        leader.signal(signal.SIGCONT)
        await eventually(lambda: leader.fences("deposed") == [old_fence], PATIENCE)
        await redis_client.publish(CHANNEL, b"sentinel")

        announced: list[bytes] = []
        while not announced or announced[-1] != b"sentinel":
            message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=PATIENCE)
            assert message is not None, announced
            announced.append(message["data"])
    # Whatever the old leader announced came before the takeover; nothing after it.
    takeover = announced.index(f"in-process {new_fence}".encode())
    assert announced[takeover + 1 :] == [b"sentinel"]
    assert await redis_client.get(ELECTED_KEY) == f"in-process {new_fence}".encode()
    assert standby.lease.is_leader and standby.lease.fence == new_fence
    assert leader.fences("elected") == [old_fence]  # standing by now


async def test_redis_down_ends_the_term_quietly_and_it_leads_again_when_redis_returns(
    redis, candidates
) -> None:
    leader = candidates()
    await eventually(lambda: leader.lease.counters.renewals >= 2, PATIENCE)
    (first_fence,) = leader.fences("elected")

    redis.kill()
    await eventually(lambda: leader.fences("deposed") == [first_fence], PATIENCE)
    assert not leader.lease.is_leader and leader.lease.counters.expired == 1
    campaigns = leader.lease.counters.campaigns
    await eventually(lambda: leader.lease.counters.campaigns >= campaigns + 2, PATIENCE)
    assert not leader.task.done()  # nothing escaped: it keeps campaigning

    redis.restart()
    await eventually(lambda: len(leader.fences("elected")) == 2, PATIENCE)
    assert leader.lease.is_leader and leader.lease.fence > first_fence
    await resigned(leader)
    assert leader.task.done() and leader.task.exception() is None


async def resigned(candidate: Candidate) -> None:
    """``candidate`` resigns; a failure after PATIENCE rather than a hang (a term's work
    whose cancellation Python 3.11's asyncio.wait_for dropped inside redis-py once kept
    its term from ever ending: the lease now cancels it again)."""
    async with asyncio.timeout(PATIENCE):
        await candidate.lease.resign()


async def _equals(value, expected: str) -> bool:
    return await value == expected.encode()
