"""The circuit breaker: tripping rules, the sliding window, backoff, half-open probes
(including cancellation), Retry-After, listeners and the snapshot. Time is a fake clock."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter
from collections.abc import Coroutine
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)

from app.resilience import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    STATE_CODES,
    BreakerConfig,
    BreakerOpen,
    CircuitBreaker,
    default_is_failure,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Boom(Exception):
    """A backend failure."""


class NotFound(Exception):
    """An answer from a healthy backend (e.g. unknown symbol)."""


class Gate:
    """An awaitable backend call that blocks until released; counts how often it ran."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = asyncio.Event()

    async def __call__(self) -> str:
        self.calls += 1
        await self.release.wait()
        return "done"


CONFIG = BreakerConfig(
    window_seconds=30,
    minimum_calls=10,
    failure_rate=0.5,
    slow_call_seconds=1.0,
    slow_call_rate=0.8,
    consecutive_failures=5,
    open_seconds=1.0,
    max_open_seconds=8.0,
    backoff_multiplier=2.0,
    half_open_calls=1,
)


@pytest.fixture
def clock() -> FakeClock:  # shadows the conftest one: monotonic-style, not epoch
    return FakeClock()


def make(clock: FakeClock, **overrides: Any) -> CircuitBreaker:
    return CircuitBreaker("test", dataclasses.replace(CONFIG, **overrides), clock=clock)


async def ok() -> str:
    return "ok"


async def boom() -> str:
    raise Boom


async def settle() -> None:
    """Lets started tasks run up to their first real wait."""
    for _ in range(5):
        await asyncio.sleep(0)


async def succeed(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        assert await breaker.call(ok) == "ok"


async def fail(breaker: CircuitBreaker, n: int = 1) -> None:
    for _ in range(n):
        with pytest.raises(Boom):
            await breaker.call(boom)


async def slow(breaker: CircuitBreaker, clock: FakeClock, seconds: float = 1.5) -> None:
    async def slow_ok() -> str:
        clock.advance(seconds)
        return "ok"

    assert await breaker.call(slow_ok) == "ok"


async def open_breaker(breaker: CircuitBreaker) -> None:
    await fail(breaker, breaker.config.consecutive_failures)
    assert breaker.state == OPEN


# -- configuration -----------------------------------------------------------------------------


def test_default_config() -> None:
    cfg = BreakerConfig()
    assert (cfg.window_seconds, cfg.minimum_calls, cfg.failure_rate) == (30.0, 10, 0.5)
    assert (cfg.slow_call_seconds, cfg.slow_call_rate, cfg.consecutive_failures) == (5.0, 0.8, 5)
    assert (cfg.open_seconds, cfg.max_open_seconds, cfg.backoff_multiplier) == (1.0, 60.0, 2.0)
    assert cfg.half_open_calls == 1
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.open_seconds = 2.0  # type: ignore[misc]


@pytest.mark.parametrize(
    "bad",
    [
        {"window_seconds": 0},
        {"minimum_calls": 0},
        {"failure_rate": 0},
        {"failure_rate": 1.5},
        {"slow_call_seconds": 0},
        {"slow_call_rate": 0},
        {"slow_call_rate": 1.01},
        {"consecutive_failures": 0},
        {"open_seconds": 0},
        {"open_seconds": float("nan")},
        {"open_seconds": 10, "max_open_seconds": 5},
        {"max_open_seconds": float("inf")},
        {"backoff_multiplier": 0.5},
        {"half_open_calls": 0},
    ],
)
def test_config_rejects_nonsense(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="invalid BreakerConfig"):
        BreakerConfig(**bad)


def test_config_allows_disabling_slow_calls() -> None:
    assert BreakerConfig(slow_call_seconds=float("inf")).slow_call_seconds == float("inf")


# -- tripping while closed -----------------------------------------------------------------------


async def test_failure_rate_trips_only_after_minimum_calls(clock: FakeClock) -> None:
    breaker = make(clock, consecutive_failures=100)
    for _ in range(4):
        await fail(breaker)
        await succeed(breaker)
    await fail(breaker)  # 5 failures in 9 calls: rate 0.56 but below minimum_calls
    assert breaker.state == CLOSED
    await fail(breaker)  # 6 / 10
    assert breaker.state == OPEN


async def test_failure_rate_below_threshold_keeps_closed(clock: FakeClock) -> None:
    breaker = make(clock, consecutive_failures=100)
    for _ in range(10):
        await succeed(breaker, 3)
        await fail(breaker, 2)  # 40 %
    assert breaker.state == CLOSED
    assert breaker.snapshot()["failure_rate"] == pytest.approx(0.4)


@pytest.mark.parametrize(("gap", "expected"), [(29.0, OPEN), (30.0, CLOSED), (31.0, CLOSED)])
async def test_old_calls_slide_out_of_the_window(
    clock: FakeClock, gap: float, expected: str
) -> None:
    breaker = make(clock, consecutive_failures=100)
    await fail(breaker, 9)
    clock.advance(gap)
    await fail(breaker)  # the 10th failure: trips only if the other 9 are still in the window
    assert breaker.state == expected
    if expected == CLOSED:
        assert breaker.snapshot()["calls_in_window"] == 1


async def test_slow_call_rate_trips(clock: FakeClock) -> None:
    breaker = make(clock)
    await succeed(breaker, 2)
    for _ in range(7):
        await slow(breaker, clock)
    assert breaker.state == CLOSED  # 7 slow of 9: below minimum_calls
    snap = breaker.snapshot()
    assert snap["slow_calls_in_window"] == 7
    assert snap["failures_in_window"] == 0
    await slow(breaker, clock)  # 8 / 10 = the threshold
    assert breaker.state == OPEN


async def test_call_exactly_at_slow_threshold_is_not_slow(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(10):
        await slow(breaker, clock, seconds=1.0)
    assert breaker.state == CLOSED
    assert breaker.snapshot()["slow_calls_in_window"] == 0


async def test_slow_failures_count_as_failures_not_slow(clock: FakeClock) -> None:
    breaker = make(clock)

    async def slow_boom() -> str:
        clock.advance(2)
        raise Boom

    with pytest.raises(Boom):
        await breaker.call(slow_boom)
    snap = breaker.snapshot()
    assert (snap["failures_in_window"], snap["slow_calls_in_window"]) == (1, 0)


async def test_consecutive_failures_trip_before_minimum_calls(clock: FakeClock) -> None:
    breaker = make(clock)
    await fail(breaker, 4)
    assert breaker.state == CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 4
    await fail(breaker)
    assert breaker.state == OPEN


async def test_a_success_interrupts_the_run_of_failures(clock: FakeClock) -> None:
    breaker = make(clock)
    await fail(breaker, 4)
    await succeed(breaker)
    await fail(breaker, 4)  # 8 of 9 failed, but never 5 in a row and below minimum_calls
    assert breaker.state == CLOSED
    assert breaker.snapshot()["consecutive_failures"] == 4


# -- open --------------------------------------------------------------------------------------


async def test_open_rejects_without_calling_and_reports_retry_after(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(0.25)
    gate = Gate()
    with pytest.raises(BreakerOpen) as info:
        await breaker.call(gate)
    assert gate.calls == 0
    assert info.value.name == "test"
    assert info.value.retry_after_seconds == pytest.approx(0.75)
    assert breaker.retry_after() == pytest.approx(0.75)
    assert breaker.rejected == 1
    assert breaker.snapshot()["rejected"] == 1


async def test_guard_has_the_same_semantics(clock: FakeClock) -> None:
    breaker = make(clock)
    for _ in range(5):
        with pytest.raises(Boom):
            async with breaker.guard():
                raise Boom
    assert breaker.state == OPEN
    ran = False
    with pytest.raises(BreakerOpen):
        async with breaker.guard():
            ran = True
    assert not ran
    clock.advance(1)
    async with breaker.guard():  # the probe
        ran = True
    assert ran
    assert breaker.state == CLOSED


# -- half-open -------------------------------------------------------------------------------


async def test_half_open_after_open_seconds(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(0.999)
    assert breaker.state == OPEN
    clock.advance(0.001)
    assert breaker.state == HALF_OPEN
    assert breaker.retry_after() == 0.0


@pytest.mark.parametrize("permits", [1, 2, 3])
async def test_half_open_admits_exactly_half_open_calls_probes(
    clock: FakeClock, permits: int
) -> None:
    breaker = make(clock, half_open_calls=permits)
    await open_breaker(breaker)
    clock.advance(1)
    gate = Gate()
    probes = [asyncio.create_task(breaker.call(gate)) for _ in range(permits)]
    await settle()
    assert gate.calls == permits
    extra = Gate()
    with pytest.raises(BreakerOpen) as info:
        await breaker.call(extra)
    assert extra.calls == 0
    assert info.value.retry_after_seconds > 0
    assert breaker.snapshot()["probes_in_flight"] == permits
    gate.release.set()
    assert await asyncio.gather(*probes) == ["done"] * permits
    assert breaker.state == CLOSED


async def test_all_probes_must_succeed_and_one_failure_reopens(clock: FakeClock) -> None:
    breaker = make(clock, half_open_calls=2)
    await open_breaker(breaker)
    clock.advance(1)
    await succeed(breaker)
    assert breaker.state == HALF_OPEN  # one of two
    await fail(breaker)
    assert breaker.state == OPEN


async def test_a_half_open_episode_admits_half_open_calls_probes_in_all(
    clock: FakeClock,
) -> None:
    breaker = make(clock, half_open_calls=2)
    await open_breaker(breaker)
    clock.advance(1)
    gate = Gate()
    slow_probe = asyncio.create_task(breaker.call(gate))
    await settle()
    await succeed(breaker)  # the other probe, done
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)  # its slot is not handed out again
    gate.release.set()
    assert await slow_probe == "done"
    assert breaker.state == CLOSED


async def test_probe_success_closes_and_resets_backoff(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(1)
    await fail(breaker)  # failed probe: wait 2
    clock.advance(2)
    await fail(breaker)  # wait 4
    assert breaker.retry_after() == pytest.approx(4)
    clock.advance(4)
    await succeed(breaker)
    assert breaker.state == CLOSED
    snap = breaker.snapshot()
    assert (snap["calls_in_window"], snap["consecutive_failures"]) == (0, 0)
    await open_breaker(breaker)
    assert breaker.retry_after() == pytest.approx(1.0)  # back to open_seconds
    clock.advance(1)
    await succeed(breaker)
    breaker.open_for(0.5)  # a forced open from closed, then a failed probe
    clock.advance(0.5)
    await fail(breaker)
    assert breaker.retry_after() == pytest.approx(1.0)  # not 8: the close reset the ladder


async def test_probe_failure_reopens_with_doubled_wait_up_to_the_cap(clock: FakeClock) -> None:
    breaker = make(clock, max_open_seconds=8.0)
    await open_breaker(breaker)
    waits = []
    for _ in range(6):
        wait = breaker.retry_after()
        waits.append(wait)
        clock.advance(wait - 0.01)
        assert breaker.state == OPEN
        clock.advance(0.01)
        assert breaker.state == HALF_OPEN
        await fail(breaker)
    assert waits == pytest.approx([1, 2, 4, 8, 8, 8])
    assert breaker.retry_after() == pytest.approx(8)


async def test_slow_probe_reopens(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(1)
    await slow(breaker, clock)  # the caller still gets its answer...
    assert breaker.state == OPEN  # ...but the backend is still degraded
    assert breaker.retry_after() == pytest.approx(2)


async def test_cancelled_probe_releases_its_permit(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(1)
    gate = Gate()
    probe = asyncio.create_task(breaker.call(gate))
    await settle()
    assert gate.calls == 1
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)  # the only permit is taken
    probe.cancel()
    with pytest.raises(asyncio.CancelledError):
        await probe
    # Neither success nor failure: still half-open, and the permit is free again.
    assert breaker.state == HALF_OPEN
    assert breaker.snapshot()["probes_in_flight"] == 0
    assert await breaker.call(ok) == "ok"
    assert breaker.state == CLOSED


async def test_cancelled_probe_in_a_timeout_releases_its_permit(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(1)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0):
            await breaker.call(Gate())
    assert breaker.state == HALF_OPEN
    await succeed(breaker)
    assert breaker.state == CLOSED


async def test_calls_admitted_before_a_transition_do_not_count_after_it(
    clock: FakeClock,
) -> None:
    breaker = make(clock)
    gate = Gate()
    straggler = asyncio.create_task(breaker.call(gate))  # admitted while closed
    await settle()
    await open_breaker(breaker)
    clock.advance(1)
    assert breaker.state == HALF_OPEN
    gate.release.set()
    assert await straggler == "done"
    # Its success is no probe: the breaker is still half-open with its permit free.
    assert breaker.state == HALF_OPEN
    await fail(breaker)
    assert breaker.state == OPEN


# -- what counts -------------------------------------------------------------------------------


async def test_is_failure_filter(clock: FakeClock) -> None:
    breaker = CircuitBreaker(
        "exchange", CONFIG, clock=clock, is_failure=lambda e: not isinstance(e, NotFound)
    )

    async def not_found() -> str:
        raise NotFound("XYZ/USDT")

    for _ in range(20):
        with pytest.raises(NotFound):
            await breaker.call(not_found)
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED
    assert (snap["calls_in_window"], snap["failures_in_window"]) == (20, 0)
    await fail(breaker, 4)
    with pytest.raises(NotFound):
        await breaker.call(not_found)  # a success: breaks the run
    await fail(breaker, 4)
    assert breaker.state == CLOSED
    # In half-open, an answer that is not a failure proves the backend is back.
    await fail(breaker)
    assert breaker.state == OPEN
    clock.advance(1)
    with pytest.raises(NotFound):
        await breaker.call(not_found)
    assert breaker.state == CLOSED


def test_default_is_failure() -> None:
    class Answer(Exception):
        breaker_failure = False

    assert default_is_failure(Boom())
    assert default_is_failure(TimeoutError())
    assert not default_is_failure(Answer())
    assert not default_is_failure(BreakerOpen("inner", 1.0))  # nested breakers
    assert not default_is_failure(asyncio.CancelledError())
    marked = Boom()
    marked.breaker_failure = False  # type: ignore[attr-defined]
    assert not default_is_failure(marked)


async def test_cancellation_propagates_and_does_not_count(clock: FakeClock) -> None:
    asked: list[BaseException] = []

    def everything_fails(exc: BaseException) -> bool:
        asked.append(exc)
        return True

    breaker = CircuitBreaker("t", CONFIG, clock=clock, is_failure=everything_fails)

    async def cancelled() -> str:
        raise asyncio.CancelledError

    await fail(breaker, 4)
    with pytest.raises(asyncio.CancelledError):
        await breaker.call(cancelled)
    gate = Gate()
    task = asyncio.create_task(breaker.call(gate))
    await settle()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not any(isinstance(e, asyncio.CancelledError) for e in asked)
    snap = breaker.snapshot()
    assert snap["state"] == CLOSED  # not failures...
    assert (snap["calls_in_window"], snap["consecutive_failures"]) == (4, 4)
    await fail(breaker)  # ...nor successes: the run of failures went on
    assert breaker.state == OPEN


# -- forcing it open -------------------------------------------------------------------------


async def test_open_for_honours_a_longer_retry_after(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.open_for(30)  # e.g. an exchange 429 with Retry-After: 30 (longer than the cap)
    assert breaker.state == OPEN
    assert breaker.retry_after() == pytest.approx(30)
    breaker.open_for(5)  # never shortens
    assert breaker.retry_after() == pytest.approx(30)
    clock.advance(29.9)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)
    clock.advance(0.1)
    assert breaker.state == HALF_OPEN


async def test_open_for_extends_a_running_trip(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    assert breaker.retry_after() == pytest.approx(1)
    breaker.open_for(10)
    assert breaker.retry_after() == pytest.approx(10)
    assert breaker.snapshot()["transitions"] == {"closed->open": 1}


async def test_open_for_during_half_open_voids_running_probes(clock: FakeClock) -> None:
    breaker = make(clock)
    await open_breaker(breaker)
    clock.advance(1)
    gate = Gate()
    probe = asyncio.create_task(breaker.call(gate))
    await settle()
    breaker.open_for(5)  # the server said: go away
    gate.release.set()
    assert await probe == "done"
    assert breaker.state == OPEN  # the probe's success did not close it
    assert breaker.retry_after() == pytest.approx(5)


async def test_trip_uses_the_backoff_with_a_retry_after_floor(clock: FakeClock) -> None:
    breaker = make(clock)
    breaker.trip()
    assert breaker.retry_after() == pytest.approx(1)
    clock.advance(1)
    breaker.trip()  # from half-open: the next step of the backoff
    assert breaker.retry_after() == pytest.approx(2)
    clock.advance(2)
    breaker.trip(retry_after=0.5)  # backoff (4) is longer than the floor
    assert breaker.retry_after() == pytest.approx(4)
    clock.advance(4)
    breaker.trip(retry_after=20)
    assert breaker.retry_after() == pytest.approx(20)
    with pytest.raises(ValueError):
        breaker.trip(retry_after=-1)
    with pytest.raises(ValueError):
        breaker.open_for(-1)


# -- introspection -----------------------------------------------------------------------------


async def test_listeners_see_transitions(clock: FakeClock) -> None:
    breaker = make(clock)
    seen: list[tuple[str, str, str]] = []

    def broken(name: str, old: str, new: str) -> None:
        raise RuntimeError("metrics down")

    breaker.add_listener(broken)  # must not break the breaker nor the other listeners
    breaker.add_listener(lambda *event: seen.append(event))
    await open_breaker(breaker)
    clock.advance(1)
    await fail(breaker)
    clock.advance(2)
    await succeed(breaker)
    assert seen == [
        ("test", CLOSED, OPEN),
        ("test", OPEN, HALF_OPEN),
        ("test", HALF_OPEN, OPEN),
        ("test", OPEN, HALF_OPEN),
        ("test", HALF_OPEN, CLOSED),
    ]
    breaker.remove_listener(broken)
    breaker.trip()
    assert seen[-1] == ("test", CLOSED, OPEN)


async def test_state_codes(clock: FakeClock) -> None:
    assert STATE_CODES == {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}
    breaker = make(clock)
    assert (breaker.state, breaker.state_code) == ("closed", 0)
    breaker.trip()
    assert (breaker.state, breaker.state_code) == ("open", 1)
    clock.advance(1)
    assert (breaker.state, breaker.state_code) == ("half_open", 2)


async def test_snapshot(clock: FakeClock) -> None:
    breaker = make(clock)
    await succeed(breaker, 3)
    await slow(breaker, clock)
    await fail(breaker, 2)
    assert breaker.snapshot() == {
        "name": "test",
        "state": "closed",
        "state_code": 0,
        "calls_in_window": 6,
        "failures_in_window": 2,
        "slow_calls_in_window": 1,
        "failure_rate": pytest.approx(2 / 6),
        "slow_call_rate": pytest.approx(1 / 6),
        "consecutive_failures": 2,
        "opened_until": None,
        "retry_after_seconds": 0.0,
        "probes_in_flight": 0,
        "rejected": 0,
        "transitions": {},
    }
    await fail(breaker, 3)
    with pytest.raises(BreakerOpen):
        await breaker.call(ok)
    clock.advance(1)
    await fail(breaker)
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["state_code"] == 1
    assert snap["opened_until"] == pytest.approx(clock.now + 2)
    assert snap["retry_after_seconds"] == pytest.approx(2)
    assert snap["calls_in_window"] == 0
    assert snap["rejected"] == 1
    assert snap["transitions"] == {"closed->open": 1, "half_open->open": 1, "open->half_open": 1}
    json.dumps(snap)  # fit for /health as is


# -- properties ----------------------------------------------------------------------------------

LEGAL = {(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED), (HALF_OPEN, OPEN)}
OUTCOMES = ["ok", "fail", "slow", "not_failure", "cancel"]


def drive(coro: Coroutine[Any, Any, Any]) -> Any:
    """Runs a guard's __aenter__/__aexit__, which never suspend, without an event loop."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise AssertionError("the guard suspended")


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of calls starting and ending (succeeding, failing, slow, not a
    failure, cancelled), time passing and forced opens. Checks that the breaker never has
    more than half_open_calls probes at once, never wedges in half-open, only makes legal
    transitions and keeps its books straight."""

    @initialize(
        permits=st.integers(1, 3),
        minimum_calls=st.integers(1, 4),
        consecutive=st.integers(1, 4),
    )
    def setup(self, permits: int, minimum_calls: int, consecutive: int) -> None:
        self.clock = FakeClock()
        self.config = dataclasses.replace(
            CONFIG,
            window_seconds=10,
            minimum_calls=minimum_calls,
            consecutive_failures=consecutive,
            half_open_calls=permits,
        )
        self.breaker = CircuitBreaker(
            "m", self.config, clock=self.clock, is_failure=lambda e: not isinstance(e, NotFound)
        )
        self.breaker.add_listener(self.on_transition)
        self.episode = 0
        self.seen: Counter[str] = Counter()
        self.in_flight: list[tuple[Any, int, bool]] = []  # (guard, episode, is_probe)
        self.longest_forced = 0.0

    def on_transition(self, name: str, old: str, new: str) -> None:
        assert (old, new) in LEGAL
        self.episode += 1
        self.seen[f"{old}->{new}"] += 1

    def current_probes(self) -> int:
        return sum(1 for _, ep, probe in self.in_flight if probe and ep == self.episode)

    @rule()
    def start_call(self) -> None:
        state = self.breaker.state  # may move to half-open first
        probes = self.current_probes()
        guard = self.breaker.guard()
        try:
            drive(guard.__aenter__())
        except BreakerOpen as rejected:
            assert state != CLOSED
            assert not (state == HALF_OPEN and probes == 0), "wedged in half-open"
            assert rejected.retry_after_seconds > 0
            return
        assert state != OPEN
        self.in_flight.append((guard, self.episode, state == HALF_OPEN))

    @precondition(lambda self: self.in_flight)
    @rule(data=st.data(), outcome=st.sampled_from(OUTCOMES))
    def finish_call(self, data: st.DataObject, outcome: str) -> None:
        index = data.draw(st.integers(0, len(self.in_flight) - 1))
        guard, _, _ = self.in_flight.pop(index)
        if outcome == "slow":
            self.clock.advance(2)
        exc: BaseException | None = {
            "ok": None,
            "slow": None,
            "fail": Boom(),
            "not_failure": NotFound(),
            "cancel": asyncio.CancelledError(),
        }[outcome]
        swallowed = drive(guard.__aexit__(type(exc) if exc else None, exc, None))
        assert swallowed is False

    @rule(seconds=st.sampled_from([0.1, 0.5, 1.0, 2.0, 5.0, 11.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(seconds=st.sampled_from([0.0, 0.5, 3.0, 20.0]))
    def open_for(self, seconds: float) -> None:
        self.longest_forced = max(self.longest_forced, seconds)
        self.breaker.open_for(seconds)

    @rule()
    def trip(self) -> None:
        self.breaker.trip()

    @invariant()
    def books_are_straight(self) -> None:
        snap = self.breaker.snapshot()  # may fire a transition, so before the model's count
        probes = self.current_probes()
        assert probes <= self.config.half_open_calls
        assert snap["state_code"] == STATE_CODES[snap["state"]]
        assert snap["transitions"] == dict(self.seen)
        if snap["state"] == HALF_OPEN:
            assert snap["probes_in_flight"] == probes
        if snap["state"] != CLOSED:
            assert snap["calls_in_window"] == 0
        if snap["state"] == OPEN:
            longest = max(self.config.max_open_seconds, self.longest_forced)
            assert 0 < snap["retry_after_seconds"] <= longest + 1e-9  # float error of +/-


TestBreakerMachine = BreakerMachine.TestCase
TestBreakerMachine.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


async def test_one_warning_per_outage_and_one_line_at_recovery(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A backend that stays down through many probes logs one warning (when the breaker
    opens), not one per failed probe; its recovery logs one info line."""
    caplog.set_level("DEBUG", logger="app.resilience.breaker")
    breaker = make(clock)
    await open_breaker(breaker)
    for _ in range(6):  # six probe windows, each probe failing
        clock.advance(breaker.retry_after() + 0.01)
        await fail(breaker)
        assert breaker.state == OPEN
    clock.advance(breaker.retry_after() + 0.01)
    await succeed(breaker)
    assert breaker.state == "closed"
    records = [r for r in caplog.records if r.name == "app.resilience.breaker"]
    warnings = [r.getMessage() for r in records if r.levelname == "WARNING"]
    infos = [r.getMessage() for r in records if r.levelname == "INFO"]
    assert warnings == ["circuit breaker test: closed -> open"]
    assert infos == ["circuit breaker test: half_open -> closed"]


async def test_excluded_time_does_not_make_a_call_slow(clock: FakeClock) -> None:
    """Time a guarded call spent in our own queue (excluded) is not the backend's."""
    breaker = make(clock, minimum_calls=3)
    for _ in range(5):
        async with breaker.guard() as guard:
            clock.advance(1.5)  # over slow_call_seconds (1.0) …
            guard.exclude(1.2)  # … of which 1.2 s were a wait in our rate limiter
    assert breaker.snapshot()["slow_calls_in_window"] == 0 and breaker.state == "closed"
    breaker = make(clock, minimum_calls=3)
    for _ in range(3):  # the third slow call trips it
        async with breaker.guard() as guard:
            clock.advance(1.5)
            guard.exclude(0.2)  # the backend itself took 1.3 s: slow
    assert breaker.state == OPEN
