"""Resilience helpers shared by every backend: the asyncio circuit breaker."""

from app.resilience.breaker import (
    CLOSED,
    HALF_OPEN,
    OPEN,
    STATE_CODES,
    BreakerConfig,
    BreakerOpen,
    CircuitBreaker,
    Listener,
    default_is_failure,
)

__all__ = [
    "CLOSED",
    "HALF_OPEN",
    "OPEN",
    "STATE_CODES",
    "BreakerConfig",
    "BreakerOpen",
    "CircuitBreaker",
    "Listener",
    "default_is_failure",
]
