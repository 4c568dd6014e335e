"""Leader election on Redis: one of several processes leads, fenced, the others stand by.

A ``LeaderLease`` campaigns for the lock ``leader:<name>`` of a ``RedisLock`` (the key
``<namespace>:lock:leader:<name>`` in Redis; each term has a fence number, strictly
higher than every earlier term's) and, once it holds it, renews it every
``renew_every`` seconds. The standbys try again as often; when the leader dies its
lease expires after ``ttl_seconds`` and one of them takes over (within ``ttl_seconds +
renew_every`` of the death, plus a Redis round trip), and when it resigns (shutdown) it
releases the lease so one takes over at its next attempt.

A leader stops acting *before* its lease can have expired in Redis: its term is
valid until ``ttl_seconds - margin_seconds`` after it sent its last successful
renewal (Redis set the expiry later than that), on its own clock. When a renewal
fails because Redis cannot be reached it keeps trying until then, and at that
instant ``is_leader`` turns False, ``publish`` refuses, the leader's work is
cancelled and it campaigns again (waiting Redis out, never raising). When a renewal
or a fenced write finds another holder, the term ends at once. A process frozen
past its term (a pause, a stopped container) finds the term over when it wakes.

What the clock cannot cover (an event loop blocked past the margin, a write already
on the wire) the fence does: ``publish`` writes and announces in one Redis script
that checks the lease key still holds this term's token, so a deposed leader's late
publication is refused by Redis itself.

Usage, in the collector::

    lease = LeaderLease(lock, namespace="virtuoso", name="collector", ttl_seconds=5)
    runner = asyncio.create_task(lease.run(lead))   # lead(term): the leader's work
    ...  await lease.publish({key: payload}, ttl_ms, channel=..., message=...)
    await lease.resign()                             # on shutdown
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from app.backends.errors import TierUnavailable
from app.backends.locks import LockLease, RedisLock

__all__ = ["LeaderLease", "LeaseCounters"]

log = logging.getLogger(__name__)

_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")

Lead = Callable[[LockLease], Coroutine[Any, Any, None]]
Deposed = Callable[[LockLease], Awaitable[None]]


@dataclass(slots=True)
class LeaseCounters:
    """Events of one lease, for metrics read at scrape time and for tests.

    ``campaigns``: attempts to take the lease (won or not, Redis down included);
    ``terms``: terms won; ``renewals``: successful renewals; ``lost``: terms ended by
    another holder (seen by a renewal or a refused write); ``expired``: terms ended
    because no renewal succeeded in time (Redis down or too slow).
    """

    campaigns: int = 0
    terms: int = 0
    renewals: int = 0
    lost: int = 0
    expired: int = 0

    def as_dict(self) -> dict[str, int]:
        """The counters by name."""
        return asdict(self)


class LeaderLease:
    """One process's candidacy for leading ``name`` among those sharing ``namespace``.

    ``lock``: the fenced locks (its client and guard); ``name``: what is led (the lease
    key is ``leader:<name>`` under the lock's keyspace); ``namespace``: the
    deployment's prefix, carried by the lease key and required of every key and channel
    ``publish`` writes; ``ttl_seconds``: how long a lease lives in Redis without renewal
    (how long a dead leader's standbys wait); ``renew_every``: seconds between renewals,
    and between a standby's attempts (default a third of the TTL); ``margin_seconds``:
    how long before the lease's expiry the leader stops acting (default a fifth of the
    TTL); ``clock``: monotonic seconds, the event loop's scale (a renewal in flight is
    cut off by the loop's timer when the term's validity runs out); ``sleep``: the waits
    between attempts (tests inject both). Raises ValueError for a name or namespace outside
    ``[A-Za-z0-9._-]{1,64}`` or timings that leave no renewal before the term ends.

    A lease is run once: ``run`` campaigns and leads until ``resign``. ``ttl_seconds``,
    ``name`` and ``namespace`` stay readable as attributes.
    """

    def __init__(
        self,
        lock: RedisLock,
        name: str = "collector",
        *,
        namespace: str,
        ttl_seconds: float,
        renew_every: float | None = None,
        margin_seconds: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for label, value in (("name", name), ("namespace", namespace)):
            if not isinstance(value, str) or not _NAME.fullmatch(value):
                raise ValueError(f"lease {label} {value!r} must match [A-Za-z0-9._-]{{1,64}}")
        renew_every = ttl_seconds / 3 if renew_every is None else renew_every
        margin_seconds = ttl_seconds / 5 if margin_seconds is None else margin_seconds
        if not (
            math.isfinite(ttl_seconds)
            and 0 < margin_seconds < ttl_seconds
            and 0 < renew_every < ttl_seconds - margin_seconds
        ):
            raise ValueError(
                "need a finite ttl_seconds, 0 < margin_seconds < ttl_seconds and "
                f"0 < renew_every < ttl - margin, not ttl {ttl_seconds}, "
                f"renew_every {renew_every}, margin {margin_seconds}"
            )
        self.name = name
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.counters = LeaseCounters()
        self._lock = lock
        self._lock_name = f"leader:{name}"  # the lock names it under the namespace
        self._ttl_ms = max(1, math.ceil(ttl_seconds * 1000))
        self._renew_every = renew_every
        self._validity = ttl_seconds - margin_seconds
        self._clock = clock
        self._sleep = sleep
        self._term: LockLease | None = None
        self._valid_until = 0.0
        self._resigned = asyncio.Event()
        self._taken = asyncio.Event()  # a fenced write found another holder
        self._finished = asyncio.Event()
        self._running = False

    @property
    def key(self) -> str:
        """The Redis key of the lease (its value is the current term's token)."""
        return self._lock.key(self._lock_name)

    @property
    def is_leader(self) -> bool:
        """True while this process holds a term that its clock says is still valid."""
        return self._term is not None and self._clock() < self._valid_until

    @property
    def term(self) -> LockLease | None:
        """The current term (its token and fence) while leading, else None."""
        return self._term if self.is_leader else None

    @property
    def fence(self) -> int | None:
        """The current term's fence number while leading (higher than every earlier
        term's, whoever led it), else None."""
        term = self.term
        return term.fence if term is not None else None

    async def run(self, lead: Lead, on_deposed: Deposed | None = None) -> None:
        """Campaigns, leads, and campaigns again after each lost term, until ``resign``.

        Each term runs ``lead(term)`` as a task: the leader's work, cancelled when the
        term ends (lost, not renewed in time, resigned, or ``run`` itself cancelled), and
        again if it still runs a term's validity later (a cancellation can be lost);
        then ``on_deposed(term)`` is awaited, and then a term that may still be held is
        released. When ``lead`` returns or raises, the lease resigns and ``run`` returns
        or re-raises (an error raised as it is cancelled is logged instead, and the
        candidacy goes on). Redis being down (TierUnavailable) is waited out, never raised; an
        error of ``on_deposed`` ends ``run`` with it. Raises RuntimeError when run twice.
        """
        if self._running or self._finished.is_set():
            raise RuntimeError(f"leader lease {self._lock_name} is already run")
        self._running = True
        try:
            while (term := await self._campaign()) is not None:
                work = asyncio.create_task(lead(term), name=f"leader {self._lock_name}")
                try:
                    reason = await self._hold(term, work)
                finally:
                    await self._end_term(term, work, on_deposed)
                log.info("%s: term %d ended (%s)", self._lock_name, term.fence, reason)
                if reason == "work ended":
                    self._resigned.set()
                    if not work.cancelled():
                        work.result()  # re-raises the work's error
                elif not work.cancelled() and work.exception() is not None:
                    # it failed as its term ended: logged, the candidacy goes on
                    log.error(
                        "%s: the leader's work failed", self._lock_name, exc_info=work.exception()
                    )
        finally:
            self._finished.set()

    async def resign(self) -> None:
        """Stops campaigning and ends the current term at once (its work cancelled,
        ``on_deposed`` awaited, the lease released so a standby takes over without
        waiting for the TTL); returns when ``run`` has finished. Never raises for Redis."""
        self._resigned.set()
        if self._running:
            await self._finished.wait()

    async def publish(
        self,
        values: Mapping[str, bytes | str],
        ttl_ms: int,
        *,
        channel: str | None = None,
        message: bytes | str = b"",
    ) -> bool:
        """The leader's fenced write: SET each of ``values`` with ``PX ttl_ms`` and, with a
        ``channel``, PUBLISH ``message``, in one script that applies only while the lease
        key holds this term's token. True when applied; False when this process does not
        lead (no call to Redis) or its term has ended in Redis (nothing written; the term
        then ends here too, at once).

        Raises ValueError for a key or channel outside ``<namespace>:`` or a ``ttl_ms``
        that is not positive, TierUnavailable when Redis fails (the term goes on until
        its renewals fail).
        """
        names = [*values, *([channel] if channel is not None else [])]
        outside = [name for name in names if not name.startswith(self.namespace + ":")]
        if outside:
            raise ValueError(f"{outside} outside the namespace {self.namespace!r}")
        if ttl_ms <= 0:
            raise ValueError(f"ttl_ms must be positive, not {ttl_ms}")
        term = self.term
        if term is None:
            return False
        applied = await self._lock.write_if_current(
            term, values, ttl_ms, channel=channel, message=message
        )
        if not applied and self._term is term:
            log.warning("%s: term %d taken over, write refused", self._lock_name, term.fence)
            self._valid_until = -math.inf
            self._taken.set()
        return applied

    async def _campaign(self) -> LockLease | None:
        """The next term, once won; None after ``resign``."""
        while not self._resigned.is_set():
            sent = self._clock()
            self.counters.campaigns += 1
            try:
                term = await self._lock.acquire(self._lock_name, self._ttl_ms)
            except TierUnavailable as error:
                log.debug("%s: campaign failed: %s", self._lock_name, error)
                term = None
            if term is not None:
                self._term, self._valid_until = term, sent + self._validity
                self.counters.terms += 1
                log.info("%s: leading, term %d", self._lock_name, term.fence)
                return term
            await self._pause(self._renew_every)
        return None

    async def _hold(self, term: LockLease, work: asyncio.Task[None]) -> str:
        """Renews ``term`` until it ends; returns why it ended."""
        renew_at = self._clock() + self._renew_every
        while True:
            if self._resigned.is_set():
                return "resigned"
            if work.done():
                return "work ended"
            if self._taken.is_set():
                self.counters.lost += 1
                return "lost"
            now = self._clock()
            if now >= self._valid_until:
                log.warning("%s: term %d not renewed in time", self._lock_name, term.fence)
                self.counters.expired += 1
                return "expired"
            if now < renew_at:
                await self._pause(min(renew_at, self._valid_until) - now, work)
                continue
            renewed = await self._renew(term)
            if renewed is False:
                self.counters.lost += 1
                return "lost"
            # a failed attempt is tried again sooner, until the term is over
            renew_at = self._clock() + (self._renew_every if renewed else self._renew_every / 2)

    async def _renew(self, term: LockLease) -> bool | None:
        """True when renewed (the term's validity moves on), False when another process
        holds the lease, None when Redis did not answer in time."""
        sent = self._clock()
        try:
            async with asyncio.timeout(max(0.0, self._valid_until - sent)):
                renewed = await self._lock.extend(term, self._ttl_ms)
        except (TierUnavailable, TimeoutError) as error:
            log.debug("%s: renewal failed: %s", self._lock_name, error)
            return None
        if renewed and not self._taken.is_set():
            self._valid_until = sent + self._validity
            self.counters.renewals += 1
        return renewed

    async def _end_term(
        self, term: LockLease, work: asyncio.Task[None], on_deposed: Deposed | None
    ) -> None:
        """Stops acting first (work cancelled, ``on_deposed``), then frees the lease."""
        self._term = None
        self._taken.clear()
        await self._stop_work(work)
        try:
            if on_deposed is not None:
                await on_deposed(term)
        finally:
            try:
                await self._lock.release(term)
            except TierUnavailable:  # it expires by itself
                log.debug("%s: term %d not released (Redis down)", self._lock_name, term.fence)

    async def _stop_work(self, work: asyncio.Task[None]) -> None:
        """Cancels the term's work and waits until it has finished. A cancellation can be
        lost: Python 3.11's ``asyncio.wait_for``, which redis-py's socket writes use, drops
        one that arrives as its operation completes, and the work then runs on. So a work
        still running a term's validity (seconds, on the event loop's clock) after being
        cancelled is cancelled again: its cleanup has had that long."""
        work.cancel()
        while not (await asyncio.wait({work}, timeout=self._validity))[0]:
            log.warning("%s: the leader's work still runs; cancelling it again", self._lock_name)
            work.cancel()

    async def _pause(self, seconds: float, work: asyncio.Task[None] | None = None) -> None:
        """Sleeps ``seconds``, or less when ``resign`` is called, a write finds the term
        taken over, or ``work`` ends."""
        waiters = [
            asyncio.ensure_future(self._sleep(max(0.0, seconds))),
            asyncio.ensure_future(self._resigned.wait()),
        ]
        waits: set[asyncio.Future[Any]] = set(waiters)
        if work is not None:  # while leading
            waiters.append(asyncio.ensure_future(self._taken.wait()))
            waits.update((waiters[-1], work))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
