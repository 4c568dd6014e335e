"""The guard every Redis call goes through: a time bound, a circuit breaker, one error.

``RedisGuard.run(operation, what)`` awaits the operation within ``asyncio.timeout`` (on
top of the socket timeouts), through one circuit breaker for the connection (while it is
open calls fail fast; it lets a trial call through later, so the service rejoins Redis by
itself), and maps every Redis, socket or timeout error to ``TierUnavailable``. It logs
one warning when Redis goes down and one info line when it is back.

The breaker is handed in (anything of the ``Breaker`` shape): the service's is
``app.resilience.redis_breaker.redis_guard``'s, a ``CircuitBreaker`` that counts only
connection failures. Share one guard (one breaker) among every user of one client.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

from redis.exceptions import RedisError

from app.backends.errors import RedisSkipped, TierUnavailable, describe

__all__ = ["Breaker", "OpCounters", "RedisGuard"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class Breaker(Protocol):
    """What the guard needs of a circuit breaker (``app.resilience.breaker.CircuitBreaker``
    has this shape): ``call`` raises without calling ``fn`` while it refuses calls."""

    @property
    def state(self) -> str:
        """``"closed"``, ``"open"`` or ``"half_open"``."""
        ...

    def retry_after(self) -> float:
        """Seconds until a call may be admitted (0 when one would be now)."""
        ...

    async def call(self, fn: Callable[[], Awaitable[T]]) -> T:
        """``await fn()`` through the breaker; ``fn``'s result or exception passes through."""
        ...

    def snapshot(self) -> dict[str, Any]:
        """JSON-able state for /health and metrics."""
        ...


@dataclass(slots=True)
class OpCounters:
    """``ops``: calls that reached Redis; ``errors``: those that failed; ``skipped``:
    calls not attempted because the breaker was open."""

    ops: int = 0
    errors: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        """``{"ops": …, "errors": …, "skipped": …}``."""
        return asdict(self)


class RedisGuard:
    """Time bound + shared breaker + error mapping + down/up logging for every Redis call.

    ``timeout_seconds``: the default bound of one call; ``name``: the backend's name in
    messages and logs.
    """

    def __init__(self, breaker: Breaker, *, timeout_seconds: float = 0.5, name: str = "redis"):
        self.name = name
        self.breaker = breaker
        self.timeout_seconds = timeout_seconds
        self._down = False

    @property
    def available(self) -> bool:
        """False while the breaker is open (calls fail fast); True again once it allows a trial."""
        return self.breaker.state != "open"

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        counters: OpCounters | None = None,
        *,
        timeout_seconds: float | None = None,
    ) -> T:
        """``await operation()`` within the time bound, through the breaker.

        Raises ``RedisSkipped`` (a TierUnavailable) while the breaker refuses the call and
        ``TierUnavailable`` for any Redis, socket or timeout error; any other exception of
        ``operation`` passes through. ``counters``, when given, count the call.
        """
        limit = self.timeout_seconds if timeout_seconds is None else timeout_seconds
        attempted = False

        async def bounded() -> T:
            nonlocal attempted
            attempted = True
            async with asyncio.timeout(limit):
                return await operation()

        try:
            result = await self.breaker.call(bounded)
        except (RedisError, OSError, TimeoutError) as exc:
            if counters is not None:
                counters.ops += 1
                counters.errors += 1
            self._observe(exc)
            reason = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
            raise TierUnavailable(f"{self.name} {what}: {reason}") from exc
        except Exception:
            if attempted:
                raise
            # The breaker refused the call: the operation never ran.
            if counters is not None:
                counters.skipped += 1
            self._observe(None)
            raise RedisSkipped(self.breaker.retry_after()) from None
        if counters is not None:
            counters.ops += 1
        self._observe(None)
        return result

    def _observe(self, error: BaseException | None) -> None:
        """One warning when the breaker opens, one info line when it closes again."""
        state = self.breaker.state
        if state == "open" and not self._down:
            self._down = True
            log.warning(
                "%s unavailable (%s); skipping it while it recovers",
                self.name,
                describe(error) if error else "circuit open",
            )
        elif state == "closed" and self._down:
            self._down = False
            log.info("%s is back", self.name)

    def snapshot(self) -> dict[str, Any]:
        """The breaker's snapshot."""
        return self.breaker.snapshot()
