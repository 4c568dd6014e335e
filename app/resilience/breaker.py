"""An asyncio circuit breaker shared by every backend (exchange, Memcached, Redis).

Why a breaker: when a backend is down or drowning, every request that still waits on it
adds load, holds a connection and makes our own responses slow. The breaker notices
(failure rate, slow-call rate or a run of consecutive failures over a time window), then
fails fast with :class:`BreakerOpen` for a while so callers can serve stale data instead.
After the wait it lets a few probe calls through (half-open): if they succeed the backend
is back (closed), if one fails the breaker re-opens for longer (exponential backoff up to
a cap), so a dead backend is probed less and less often.

States and the numbers exported for metrics (``state_code``)::

    CLOSED    = "closed"     0  calls flow, outcomes are recorded
    OPEN      = "open"       1  calls are rejected until ``opened_until``
    HALF_OPEN = "half_open"  2  at most ``half_open_calls`` probes at once, others rejected

The breaker is driven only from the event loop and never awaits while it changes state,
so it needs no lock. Time comes from the injected ``clock`` (monotonic seconds) so tests
can drive it without sleeping. OPEN turns into HALF_OPEN lazily: the first look at the
breaker after the wait (a call, ``state``, ``snapshot()``) makes the transition.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Literal, TypeVar

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "STATE_CODES",
    "BreakerConfig",
    "BreakerGuard",
    "BreakerOpen",
    "CircuitBreaker",
    "Listener",
    "default_is_failure",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

CLOSED = "closed"
OPEN = "open"
HALF_OPEN = "half_open"
STATE_CODES: dict[str, int] = {CLOSED: 0, OPEN: 1, HALF_OPEN: 2}

Listener = Callable[[str, str, str], None]

# One warning per outage: when it starts (closed → open). A failed probe (half-open →
# open) and each probe window (open → half-open) say nothing new while the backend
# stays down; the recovery (half-open → closed) is worth one line.
_LOG_LEVELS: dict[tuple[str, str], int] = {
    (CLOSED, OPEN): logging.WARNING,
    (HALF_OPEN, OPEN): logging.DEBUG,
    (OPEN, HALF_OPEN): logging.DEBUG,
    (HALF_OPEN, CLOSED): logging.INFO,
    (OPEN, CLOSED): logging.INFO,
    (CLOSED, HALF_OPEN): logging.DEBUG,
    (OPEN, OPEN): logging.DEBUG,
    (CLOSED, CLOSED): logging.DEBUG,
    (HALF_OPEN, HALF_OPEN): logging.DEBUG,
}
"""``listener(breaker_name, old_state, new_state)``, called after each transition."""


class BreakerOpen(Exception):
    """Raised instead of calling the backend while the breaker is open (or half-open with
    every probe permit taken). ``retry_after_seconds`` is a hint for a Retry-After header."""

    # A breaker wrapped around code that itself uses a breaker must not count the inner
    # rejection as a failure of its own backend.
    breaker_failure = False

    def __init__(self, name: str, retry_after_seconds: float) -> None:
        super().__init__(f"circuit breaker {name!r} is open; retry in {retry_after_seconds:.3g} s")
        self.name = name
        self.retry_after_seconds = retry_after_seconds


def default_is_failure(exc: BaseException) -> bool:
    """Every ``Exception`` is a backend failure unless its class (or the instance) sets
    ``breaker_failure = False``: an answer such as "unknown symbol" proves the backend is
    up. Cancellation and other ``BaseException``\\ s never count (the breaker never even
    asks about them)."""
    return isinstance(exc, Exception) and bool(getattr(exc, "breaker_failure", True))


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """When to trip and how long to stay open. Validated on construction.

    ``slow_call_seconds=math.inf`` disables slow-call detection.
    """

    window_seconds: float = 30.0  # outcomes older than this are forgotten
    minimum_calls: int = 10  # rates are meaningless on fewer calls in the window
    failure_rate: float = 0.5  # trip when failures / calls >= this
    slow_call_seconds: float = 5.0  # a success slower than this is a slow call
    slow_call_rate: float = 0.8  # trip when slow calls / calls >= this
    consecutive_failures: int = 5  # trip on this many failures in a row, whatever the rates
    open_seconds: float = 1.0  # first wait before probing
    max_open_seconds: float = 60.0  # cap on the backed-off wait
    backoff_multiplier: float = 2.0  # each failed probe multiplies the wait
    half_open_calls: int = 1  # probes allowed at once; all must succeed to close

    def __post_init__(self) -> None:
        problems = []
        if not self.window_seconds > 0:
            problems.append("window_seconds must be > 0")
        if self.minimum_calls < 1:
            problems.append("minimum_calls must be >= 1")
        if not 0 < self.failure_rate <= 1:
            problems.append("failure_rate must be in (0, 1]")
        if not self.slow_call_seconds > 0:
            problems.append("slow_call_seconds must be > 0")
        if not 0 < self.slow_call_rate <= 1:
            problems.append("slow_call_rate must be in (0, 1]")
        if self.consecutive_failures < 1:
            problems.append("consecutive_failures must be >= 1")
        if not (self.open_seconds > 0 and math.isfinite(self.open_seconds)):
            problems.append("open_seconds must be finite and > 0")
        cap = self.max_open_seconds
        if not (cap >= self.open_seconds and math.isfinite(cap)):
            problems.append("max_open_seconds must be finite and >= open_seconds")
        if not (self.backoff_multiplier >= 1 and math.isfinite(self.backoff_multiplier)):
            problems.append("backoff_multiplier must be finite and >= 1")
        if self.half_open_calls < 1:
            problems.append("half_open_calls must be >= 1")
        if problems:
            raise ValueError("invalid BreakerConfig: " + "; ".join(problems))


@dataclass(frozen=True, slots=True)
class _Permit:
    """Admission ticket of one call. ``generation`` ties it to the state it was admitted
    in: an outcome arriving after a transition is stale and is ignored (a slow call from
    before the trip must neither re-close the breaker nor pollute the new window)."""

    generation: int
    probe: bool


class CircuitBreaker:
    """One breaker per backend. Use ``await breaker.call(fn)`` or
    ``async with breaker.guard(): ...``; both raise :class:`BreakerOpen` without running
    the work while the backend is considered down."""

    def __init__(
        self,
        name: str,
        config: BreakerConfig | None = None,
        clock: Callable[[], float] = time.monotonic,
        is_failure: Callable[[BaseException], bool] = default_is_failure,
    ) -> None:
        self.name = name
        self.config = config if config is not None else BreakerConfig()
        self._clock = clock
        self._is_failure = is_failure
        self._listeners: list[Listener] = []

        self._state = CLOSED
        self._generation = 0  # bumped on every transition, see _Permit
        # CLOSED: (finished_at, failed, slow) of recent calls, oldest first.
        self._window: deque[tuple[float, bool, bool]] = deque()
        # failed and slow calls in the window, kept with it: a release is O(1), not a
        # scan of every call in the window (thousands a second on a cache tier)
        self._window_failures = 0
        self._window_slow = 0
        self._consecutive_failures = 0
        # OPEN
        self._opened_until = 0.0
        self._last_wait = 0.0  # the backoff ladder; 0 = not backing off
        # HALF_OPEN
        self._probes_in_flight = 0
        self._probe_successes = 0
        # Counters for metrics.
        self._rejected = 0
        self._transitions: Counter[tuple[str, str]] = Counter()

    # -- introspection ---------------------------------------------------------------------

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"`` (may move OPEN → HALF_OPEN)."""
        self._refresh()
        return self._state

    @property
    def state_code(self) -> int:
        """0 closed, 1 open, 2 half_open: a gauge value for metrics."""
        return STATE_CODES[self.state]

    @property
    def rejected(self) -> int:
        """Calls refused with BreakerOpen since the breaker was created."""
        return self._rejected

    def retry_after(self) -> float:
        """Seconds until a call may be admitted: the rest of the open wait; while half-open
        and busy, ``open_seconds`` as a hint; 0 when a call would be admitted now."""
        state = self.state
        if state == OPEN:
            return max(0.0, self._opened_until - self._clock())
        if state == HALF_OPEN and not self._probe_available():
            return self.config.open_seconds
        return 0.0

    def snapshot(self) -> dict[str, Any]:
        """Plain JSON-able data for /health and metrics. ``opened_until`` is a reading of
        the breaker's clock (None unless open); transitions are keyed ``"from->to"``."""
        state = self.state
        now = self._clock()
        self._prune(now)
        calls = len(self._window)
        failures, slow = self._window_failures, self._window_slow
        return {
            "name": self.name,
            "state": state,
            "state_code": STATE_CODES[state],
            "calls_in_window": calls,
            "failures_in_window": failures,
            "slow_calls_in_window": slow,
            "failure_rate": failures / calls if calls else 0.0,
            "slow_call_rate": slow / calls if calls else 0.0,
            "consecutive_failures": self._consecutive_failures,
            "opened_until": self._opened_until if state == OPEN else None,
            "retry_after_seconds": self.retry_after(),
            "probes_in_flight": self._probes_in_flight if state == HALF_OPEN else 0,
            "rejected": self._rejected,
            "transitions": {f"{a}->{b}": n for (a, b), n in sorted(self._transitions.items())},
        }

    def add_listener(self, listener: Listener) -> None:
        """``listener(name, old_state, new_state)`` runs synchronously after every
        transition; an exception in it is logged and otherwise ignored."""
        self._listeners.append(listener)

    def remove_listener(self, listener: Listener) -> None:
        self._listeners.remove(listener)

    # -- calling through the breaker ---------------------------------------------------------

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` through the breaker; raises BreakerOpen without calling ``fn``
        while open. ``fn``'s result or exception passes through unchanged."""
        async with self.guard():
            return await fn()

    def guard(self) -> BreakerGuard:
        """``async with breaker.guard(): ...``: the body is the call (same rules as
        :meth:`call`); entering raises BreakerOpen. One guard object per call."""
        return BreakerGuard(self)

    # -- forcing it open -----------------------------------------------------------------------

    def open_for(self, seconds: float) -> None:
        """Stay open at least ``seconds`` from now, e.g. a server's Retry-After on 429/418.
        Never shortens a longer wait already running; not capped by max_open_seconds (the
        server knows best); leaves the backoff ladder alone."""
        if not seconds >= 0:
            raise ValueError("seconds must be >= 0")
        now = self._clock()
        if self.state == OPEN:
            self._opened_until = max(self._opened_until, now + seconds)
        else:
            self._open(now + seconds)

    def trip(self, retry_after: float | None = None) -> None:
        """Open now as if the breaker had tripped by itself (next step of the backoff),
        for at least ``retry_after`` seconds if given."""
        if retry_after is not None and not retry_after >= 0:
            raise ValueError("retry_after must be >= 0")
        floor = retry_after or 0.0
        now = self._clock()
        state = self.state
        if state == OPEN:  # already waiting: only ever extend
            self._opened_until = max(self._opened_until, now + floor)
        else:
            self._open(now + max(self._next_wait(from_half_open=state == HALF_OPEN), floor))

    # -- internals ------------------------------------------------------------------------

    def _acquire(self) -> _Permit:
        state = self.state
        if state == CLOSED:
            return _Permit(self._generation, probe=False)
        if state == HALF_OPEN and self._probe_available():
            self._probes_in_flight += 1
            return _Permit(self._generation, probe=True)
        self._rejected += 1
        raise BreakerOpen(self.name, self.retry_after())

    def _probe_available(self) -> bool:
        # Probes already succeeded keep their slot: a half-open episode lets through
        # exactly half_open_calls probes unless some are cancelled.
        used = self._probes_in_flight + self._probe_successes
        return used < self.config.half_open_calls

    def _release(self, permit: _Permit, exc: BaseException | None, duration: float) -> None:
        if permit.generation != self._generation:
            return  # admitted before a transition: stale, see _Permit
        if permit.probe:
            self._probes_in_flight -= 1  # first, so nothing below can leak the permit
        if exc is not None and not isinstance(exc, Exception):
            return  # cancelled (or KeyboardInterrupt...): says nothing about the backend
        failed = exc is not None and self._is_failure(exc)
        slow = not failed and duration > self.config.slow_call_seconds
        now = self._clock()
        if permit.probe:
            if failed or slow:  # not recovered (a slow probe means still degraded)
                self._open(now + self._next_wait(from_half_open=True))
            else:
                self._probe_successes += 1
                if self._probe_successes >= self.config.half_open_calls:
                    self._transition(CLOSED)
            return
        self._window.append((now, failed, slow))
        self._window_failures += failed
        self._window_slow += slow
        self._consecutive_failures = self._consecutive_failures + 1 if failed else 0
        if self._should_trip(now):
            self._open(now + self._next_wait(from_half_open=False))

    def _should_trip(self, now: float) -> bool:
        cfg = self.config
        if self._consecutive_failures >= cfg.consecutive_failures:
            return True
        self._prune(now)
        calls = len(self._window)
        if calls < cfg.minimum_calls:
            return False
        failures, slow = self._window_failures, self._window_slow
        return failures / calls >= cfg.failure_rate or slow / calls >= cfg.slow_call_rate

    def _prune(self, now: float) -> None:
        horizon = now - self.config.window_seconds
        while self._window and self._window[0][0] <= horizon:
            _, failed, slow = self._window.popleft()
            self._window_failures -= failed
            self._window_slow -= slow

    def _next_wait(self, *, from_half_open: bool) -> float:
        """Steps the backoff ladder: a failed probe multiplies the previous wait (up to
        the cap), a trip from closed starts again at open_seconds."""
        cfg = self.config
        if from_half_open and self._last_wait > 0:
            wait = min(self._last_wait * cfg.backoff_multiplier, cfg.max_open_seconds)
        else:
            wait = cfg.open_seconds
        self._last_wait = wait
        return wait

    def _open(self, until: float) -> None:
        self._opened_until = until
        self._transition(OPEN)

    def _refresh(self) -> None:
        if self._state == OPEN and self._clock() >= self._opened_until:
            self._transition(HALF_OPEN)

    def _transition(self, new: str) -> None:
        old, self._state = self._state, new
        self._generation += 1
        self._transitions[(old, new)] += 1
        self._window.clear()
        self._window_failures = self._window_slow = 0
        self._consecutive_failures = 0
        self._probes_in_flight = 0
        self._probe_successes = 0
        if new == CLOSED:
            self._last_wait = 0.0  # recovered: the next trip starts at open_seconds again
        log.log(_LOG_LEVELS[(old, new)], "circuit breaker %s: %s -> %s", self.name, old, new)
        for listener in list(self._listeners):
            try:
                listener(self.name, old, new)
            except Exception:
                log.exception("circuit breaker %s: listener %r failed", self.name, listener)


class BreakerGuard:
    """The async context manager behind :meth:`CircuitBreaker.guard`. Neither method
    awaits, so the permit is taken and given back without a cancellation point between."""

    __slots__ = ("_breaker", "_excluded", "_permit", "_started")

    def __init__(self, breaker: CircuitBreaker) -> None:
        self._breaker = breaker
        self._permit: _Permit | None = None
        self._started = 0.0
        self._excluded = 0.0

    async def __aenter__(self) -> BreakerGuard:
        if self._permit is not None:
            raise RuntimeError("a breaker guard can be entered only once")
        self._permit = self._breaker._acquire()
        self._started = self._breaker._clock()
        return self

    def exclude(self, seconds: float) -> None:
        """Leaves ``seconds`` of the guarded time out of the call's duration (time that
        was not the backend's, e.g. a wait in our own client-side rate limiter), so it
        never makes the call slow."""
        self._excluded += max(0.0, seconds)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Literal[False]:
        assert self._permit is not None
        duration = max(0.0, self._breaker._clock() - self._started - self._excluded)
        self._breaker._release(self._permit, exc, duration)
        return False  # never swallow
