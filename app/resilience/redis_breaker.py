"""The circuit breaker policy of Redis, and the guard built on it.

One breaker covers every use of one Redis client; it counts only connection failures
(``app.backends.errors.is_connection_failure``), never a command's error.
"""

from __future__ import annotations

from app.backends.errors import is_connection_failure
from app.backends.guard import RedisGuard
from app.resilience.breaker import BreakerConfig, CircuitBreaker

__all__ = ["redis_breaker_config", "redis_guard"]


def redis_breaker_config(timeout_seconds: float = 0.5) -> BreakerConfig:
    """Trip on 3 connection failures in a row (or half the calls failing); probe again
    after 0.5 s, backing off to 15 s, so a recovered Redis is rejoined within 15 s. A call
    slower than half of ``timeout_seconds`` counts as slow."""
    return BreakerConfig(
        consecutive_failures=3,
        open_seconds=0.5,
        max_open_seconds=15.0,
        slow_call_seconds=timeout_seconds / 2,
    )


def redis_guard(timeout_seconds: float = 0.5, name: str = "redis") -> RedisGuard:
    """A guard with its own Redis breaker (named ``name``), bounding calls to
    ``timeout_seconds``. Build one per Redis client and share it."""
    breaker = CircuitBreaker(
        name, config=redis_breaker_config(timeout_seconds), is_failure=is_connection_failure
    )
    return RedisGuard(breaker, timeout_seconds=timeout_seconds, name=name)
