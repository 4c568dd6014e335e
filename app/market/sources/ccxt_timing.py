"""Time spent in ccxt's client-side rate limiter, told apart from the request itself.

With ``enableRateLimit`` every ccxt REST call runs ``Exchange.fetch2``, which first
``await self.throttle(cost)`` — ccxt's token bucket: it returns once this instance may
send another request — and only then signs and sends the HTTP request (``fetch``).
Timing a whole ccxt call therefore counts our own queue as exchange latency: with many
concurrent calls the bucket makes each wait its turn (bybit's candle endpoint costs
5 × 20 ms), and the "exchange" seemed to take hundreds of milliseconds while it
answered in a few.

:func:`instrument_throttle` wraps the ``throttle`` coroutine of one ccxt instance (an
instance attribute shadows the class's method, and ``fetch2`` calls it through
``self``). Each wait then

* becomes a span ``exchange ratelimit wait`` (a child of the current span, normally the
  ``exchange <endpoint>`` span of :class:`~app.market.sources.guarded.GuardedSource`);
* is added to the :class:`RateLimitWaits` of the current call, opened with
  :func:`measure_waits`. A context variable carries it, so concurrent calls on the one
  shared instance each see only their own waits (tasks a call spawns copy the context,
  hence share its accumulator).

A call that sends several requests (``load_markets``) adds up all its waits.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from app.observability.tracing import ratelimit_wait_span

__all__ = ["RateLimitWaits", "current_waits", "instrument_throttle", "measure_waits"]

_INSTRUMENTED = "_virtuoso_throttle_timed"

Throttle = Callable[..., Awaitable[Any]]


@dataclass(slots=True)
class RateLimitWaits:
    """Waits in the rate limiter during one call: total seconds and how many."""

    seconds: float = 0.0
    count: int = 0
    parent: RateLimitWaits | None = None

    def add(self, seconds: float) -> None:
        """Adds one wait here and to every enclosing measurement."""
        self.seconds += seconds
        self.count += 1
        if self.parent is not None:
            self.parent.add(seconds)


_current: ContextVar[RateLimitWaits | None] = ContextVar("ratelimit_waits", default=None)


def current_waits() -> RateLimitWaits | None:
    """The measurement open in this context, if any."""
    return _current.get()


@contextlib.contextmanager
def measure_waits() -> Iterator[RateLimitWaits]:
    """Collects the rate-limiter waits of the code run inside (nested measurements
    also count towards the enclosing ones)."""
    waits = RateLimitWaits(parent=_current.get())
    token = _current.set(waits)
    try:
        yield waits
    finally:
        _current.reset(token)


def instrument_throttle(exchange: Any) -> None:
    """Times every wait in ``exchange``'s rate limiter (a ccxt ``async_support``
    instance). Idempotent."""
    if getattr(exchange, _INSTRUMENTED, False):
        return
    exchange.throttle = _timed(exchange.throttle, str(getattr(exchange, "id", "exchange")))
    setattr(exchange, _INSTRUMENTED, True)


def _timed(throttle: Throttle, exchange_id: str) -> Throttle:
    """``throttle`` reporting each wait to a span and to the current measurement."""

    async def timed_throttle(cost: float | None = None) -> Any:
        started = time.perf_counter()
        with ratelimit_wait_span(exchange_id, cost):
            try:
                return await throttle(cost)
            finally:
                waits = _current.get()
                if waits is not None:
                    waits.add(time.perf_counter() - started)

    return timed_throttle
