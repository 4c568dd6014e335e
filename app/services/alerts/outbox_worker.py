"""The outbox's worker: claims the due deliveries, sends each through ``Send`` and
records the outcome, with exponential back-off and one circuit breaker per destination
host. It runs where the alert engine runs (the leading collector, or the embedded
service).

Back-off (``RetryPolicy``): after attempt n a retryable failure is due again in
``min(max_seconds, first_seconds * 2**(n-1))`` scaled by a random factor in [0.5, 1]
("equal jitter", AWS Architecture Blog, "Exponential Backoff and Jitter", 2015), so the
waits never shrink and clients do not retry in step; after ``max_attempts``, or on a
non-retryable failure, the delivery fails. An open breaker postpones a delivery to when
the breaker will let a probe through, without counting an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.backends.errors import TierUnavailable
from app.backends.tasks import cancel_and_wait
from app.resilience.breaker import BreakerConfig, BreakerOpen, CircuitBreaker
from app.services.alerts.delivery import Delivery
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.outbox import NO_CHANNEL, ChannelLookup, Outbox, Send

log = logging.getLogger(__name__)

MAX_BREAKERS = 1024  # destination hosts with a breaker (bounded: forgotten all at once)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Seconds between attempts and how many (see the module). ``visibility_seconds``:
    how long a claimed delivery is hidden from other claims (longer than one send)."""

    first_seconds: float = 2.0
    max_seconds: float = 600.0
    max_attempts: int = 12
    visibility_seconds: float = 60.0

    def __post_init__(self) -> None:
        if not 0 < self.first_seconds <= self.max_seconds or self.max_attempts < 1:
            raise ValueError("0 < first_seconds <= max_seconds and max_attempts >= 1")
        if self.visibility_seconds <= 0:
            raise ValueError("visibility_seconds must be > 0")

    def delay(self, attempts: int, fraction: float) -> float:
        """Seconds until the next attempt after ``attempts`` (>= 1) failed ones;
        ``fraction`` in [0, 1) picks the jitter."""
        ceiling = min(self.max_seconds, self.first_seconds * 2 ** (attempts - 1))
        return ceiling * (0.5 + 0.5 * fraction)


def delivery_breaker_config() -> BreakerConfig:
    """Three failures in a row open a host's breaker for 30 s (backing off to 10 min)."""
    return BreakerConfig(consecutive_failures=3, open_seconds=30.0, max_open_seconds=600.0)


def _retryable_failure(exc: BaseException) -> bool:
    """Only a retryable failure counts against the host (a 4xx proves it is up)."""
    return isinstance(exc, Exception) and bool(getattr(exc, "retryable", True))


def host_of(url: str) -> str:
    """``host[:port]`` of a destination URL, lower case, without userinfo ("?" if none)."""
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return "?"
    if not host:
        return "?"
    shown = f"[{host}]" if ":" in host else host
    return shown if port is None else f"{shown}:{port}"


class OutboxWorker:
    """Sends ``outbox``'s deliveries. ``send`` delivers a message, ``lookup`` finds a
    channel's URL at each attempt; ``clock`` (epoch seconds) and ``sleep`` are injected
    so tests drive time; ``fraction`` draws the jitter; ``poll_seconds``: the wait when
    nothing is due; ``batch``: deliveries claimed (and sent concurrently) at once."""

    def __init__(
        self,
        outbox: Outbox,
        send: Send,
        lookup: ChannelLookup | None = None,
        *,
        policy: RetryPolicy | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        fraction: Callable[[], float] = random.random,
        poll_seconds: float = 1.0,
        batch: int = 16,
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        self.outbox = outbox
        self.send = send
        self.lookup = lookup or outbox.lookup
        self.policy = policy or RetryPolicy()
        self.clock, self.sleep, self.fraction = clock, sleep, fraction
        self.poll_seconds, self.batch = poll_seconds, batch
        self._breaker_config = breaker_config or delivery_breaker_config()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._task: asyncio.Task[None] | None = None

    def breaker(self, host: str) -> CircuitBreaker:
        """The breaker of a destination host (``host_of``)."""
        if host not in self._breakers:
            if len(self._breakers) >= MAX_BREAKERS:
                self._breakers.clear()
            self._breakers[host] = CircuitBreaker(
                f"alert delivery {host}",
                config=self._breaker_config,
                clock=self.clock,
                is_failure=_retryable_failure,
            )
        return self._breakers[host]

    def start(self, *, release_claims: bool = False) -> None:
        """Runs ``run`` in the background (once). ``release_claims``: first make every
        claimed delivery due again — for the only deliverer taking over (a new leading
        collector: its predecessor's sends in flight were cut off), not for one of
        several delivering side by side."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(release_claims), name="alert-outbox")

    async def stop(self) -> None:
        """Cancels the loop; a send in flight is abandoned and retried after its claim's
        visibility timeout (by this process's successor or another leader)."""
        # cancelled again until it ends: a cancellation can be lost inside the Redis
        # client's time-outs (Python 3.11's wait_for), which left this loop running
        await cancel_and_wait([self._task])
        self._task = None

    async def run(self, release_claims: bool = False) -> None:
        """Forever: sends what is due, then waits ``poll_seconds`` when nothing was.
        A store that cannot be reached (or any other error) is logged and tried again
        after the wait: the loop never dies while the collector runs. With
        ``release_claims``, the claims left by a predecessor are released first (if the
        store answers; else they expire after their visibility timeout)."""
        if release_claims:
            try:
                released = await self.outbox.store.release_claims(self._now_ms())
            except (TierUnavailable, OSError) as exc:
                log.warning("alert outbox claims not released: %s", exc)
            else:
                if released:
                    log.info("alert outbox: %d deliveries cut off earlier are due", released)
        while True:
            try:
                handled = await self.run_once()
            except (TierUnavailable, OSError) as exc:
                log.warning("alert outbox cannot be read: %s", exc)
                handled = 0
            except Exception:
                log.exception("alert outbox round failed")
                handled = 0
            if not handled:
                await self.sleep(self.poll_seconds)

    async def run_once(self) -> int:
        """Claims up to ``batch`` due deliveries and handles them; returns how many."""
        now_ms = self._now_ms()
        until_ms = now_ms + int(self.policy.visibility_seconds * 1000)
        claimed = await self.outbox.store.claim(now_ms, until_ms, self.batch)
        if claimed:
            done = await asyncio.gather(*(self._handle(d) for d in claimed), return_exceptions=True)
            for delivery, outcome in zip(claimed, done, strict=True):
                if isinstance(outcome, Exception):  # e.g. the channel lookup's store down:
                    log.warning(  # the claim expires and the delivery is tried again
                        "alert delivery %s not attempted: %s", delivery.key, outcome
                    )
        return len(claimed)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    async def _handle(self, delivery: Delivery) -> None:
        outcome, after = await self._attempt(delivery)
        try:
            await self.outbox.store.save(after)
        except (TierUnavailable, OSError) as exc:  # the claim expires: tried again then
            log.warning("alert delivery %s not saved: %s", delivery.key, exc)
            return
        seconds = None
        if after.status == "delivered" and after.delivered_at_ms is not None:
            seconds = max(0.0, (after.delivered_at_ms - after.created_at_ms) / 1000)
        self.outbox.listener(delivery.channel_type, outcome, seconds)

    async def _attempt(self, delivery: Delivery) -> tuple[str, Delivery]:
        """(outcome, the delivery after this attempt)."""
        url = delivery.destination
        if url is None:
            found = await self.lookup(delivery.channel_id)
            if found is None:
                return "failed", delivery.failed(self._now_ms(), NO_CHANNEL, attempted=False)
            url = found[0]
        host = host_of(url)
        what = f"{delivery.channel_type} delivery to {host}"
        try:
            await self.breaker(host).call(lambda: self._send(url, delivery))
        except BreakerOpen as exc:
            wait = max(exc.retry_after_seconds, 1.0)
            at_ms = self._now_ms() + int(wait * 1000)
            return "postponed", delivery.postponed(at_ms, f"circuit open for {host}")
        except DeliveryFailed as exc:
            return self._failed(delivery, what, exc.reason, exc.retryable, exc.refused)
        except Exception as exc:  # a sender's bug: its message may hold the URL
            log.exception("%s raised %s", what, type(exc).__name__)
            return self._failed(delivery, what, type(exc).__name__, True, False)
        return "delivered", delivery.delivered(self._now_ms())

    async def _send(self, url: str, delivery: Delivery) -> None:
        """One send, bounded by half the visibility timeout (a sender that hangs must
        not outlive its claim: another worker would send the same message meanwhile)."""
        limit = self.policy.visibility_seconds / 2
        try:
            async with asyncio.timeout(limit):
                await self.send(url, delivery.title, delivery.message, delivery.key)
        except TimeoutError:
            raise DeliveryFailed(f"no answer within {limit:g} s", retryable=True) from None

    def _failed(
        self, delivery: Delivery, what: str, reason: str, retryable: bool, refused: bool
    ) -> tuple[str, Delivery]:
        now_ms, attempts = self._now_ms(), delivery.attempts + 1
        if retryable and attempts < self.policy.max_attempts:
            wait = self.policy.delay(attempts, self.fraction())
            log.info("%s failed (attempt %d, again in %.0f s): %s", what, attempts, wait, reason)
            return "retried", delivery.retry_at(now_ms + int(wait * 1000), reason)
        log.warning("%s failed after %d attempt(s), given up: %s", what, attempts, reason)
        return ("refused" if refused else "failed"), delivery.failed(now_ms, reason)
