"""The errors of the backends, and how Redis and socket errors map to them.

Every backend (a cache tier, Redis for sessions, alerts, rate limits or live updates)
raises ``TierUnavailable`` when it cannot answer; callers catch that one class and
never a driver's. The name is the cache's, where it was born: to the cache a backend is
a tier.
"""

from __future__ import annotations

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["RedisSkipped", "TierUnavailable", "describe", "is_connection_failure"]


class TierUnavailable(Exception):
    """A backend could not answer: down, timed out, or skipped while it recovers."""


class RedisSkipped(TierUnavailable):
    """Not attempted: Redis's breaker is open while Redis recovers.

    ``retry_after_seconds``: the breaker's hint of when a call may be tried again.
    """

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"redis skipped while it recovers (retry in {retry_after_seconds:.1f} s)")
        self.retry_after_seconds = retry_after_seconds


def is_connection_failure(exc: BaseException) -> bool:
    """What counts against Redis's breaker: Redis unreachable or too slow, not a command
    error (a wrong type, a script error)."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError)


def describe(exc: BaseException) -> str:
    """``ConnectionError: Error 111 connecting to …`` (redis-py's repr hides the message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
