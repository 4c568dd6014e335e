"""A MarketSource wrapper that protects callers (and the exchange) from each other.

It is itself a source (the services cannot tell it from the one it wraps), built from
the generic parts of ``app.resilience`` (the circuit breaker), which knows no market.

:class:`GuardedSource` wraps any MarketSource and puts every call behind

* a **timeout** per attempt (``asyncio.timeout``); expiry becomes ExchangeUnavailable;
* a **circuit breaker** per operation family: ``start`` (load markets), ``tickers``,
  ``ohlcv``, ``order_book`` and ``derivatives``, named ``"<exchange>:<family>"``, so a broken kline
  endpoint does not stop tickers. While a breaker is open, calls fail fast with
  :class:`CircuitOpen` without touching the exchange;
* **retries** of these idempotent reads on ExchangeUnavailable only: at most
  ``RetryPolicy.max_retries``, full-jitter exponential back-off, and never past an open
  breaker (each retry asks the breaker first; a refusal ends the retries).

What the breakers count as a failure: ExchangeUnavailable (timeouts, connection errors,
5xx, rate limits) and unexpected exceptions (a malformed answer is a broken backend).
ExchangeRejected and its SymbolNotListed are answers from a healthy exchange: they pass
through unchanged, count as successful calls and are never retried.

Rate limits: an :class:`~app.market.errors.ExchangeRateLimited` is never retried. It
trips its family's breaker (``trip(retry_after)``: open at least for the exchange's
Retry-After, else the next back-off step). A Retry-After is a statement about this
client (exchanges limit and ban per IP), so the other families' breakers are held open
that long as well (``open_for``).

Timing: the latency reported to the observers' ``call`` is the request's own time — the attempt
minus the waits in the client-side rate limiter, which ccxt's ``throttle`` awaits
before it sends (see :mod:`app.market.sources.ccxt_timing`). Those waits go to
their ``ratelimit_wait`` separately, and both figures are attributes of the call's span.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from opentelemetry.trace import Span

from app.market.errors import ExchangeRateLimited, ExchangeRejected, ExchangeUnavailable
from app.market.models.candles import Candles
from app.market.models.derivatives import DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.base import MarketSource, fetch_derivatives
from app.market.sources.ccxt_timing import RateLimitWaits, measure_waits
from app.observability.tracing import exchange_call_span, record_outcome, record_timing
from app.resilience.breaker import (
    BreakerConfig,
    BreakerGuard,
    BreakerOpen,
    CircuitBreaker,
    Listener,
    default_is_failure,
)

__all__ = [
    "EXCHANGE_BREAKER_CONFIG",
    "FAMILIES",
    "CircuitOpen",
    "GuardedSource",
    "RetryPolicy",
    "exchange_is_failure",
]

T = TypeVar("T")

FAMILIES: tuple[str, ...] = ("start", "tickers", "ohlcv", "order_book", "derivatives")
"""Operation families, one breaker each. ``start`` is the markets load; ``derivatives``
the perpetuals' funding, open interest and ratios (``fetch_derivatives``)."""

EXCHANGE_BREAKER_CONFIG = BreakerConfig(
    window_seconds=30.0,
    minimum_calls=5,
    failure_rate=0.5,
    slow_call_seconds=2.0,
    slow_call_rate=0.8,
    consecutive_failures=5,
    open_seconds=2.0,
    max_open_seconds=60.0,
    backoff_multiplier=2.0,
    half_open_calls=1,
)
"""Defaults for an exchange's REST API."""

DEFAULT_TIMEOUT_SECONDS = 10.0


class CircuitOpen(ExchangeUnavailable):
    """The call was refused without reaching the exchange: the family's breaker is open.
    ``retry_after_seconds`` says when a call may be admitted again."""

    # A GuardedSource wrapping another must not count the inner refusal as a failure.
    breaker_failure = False

    def __init__(self, exchange: str, family: str, retry_after_seconds: float) -> None:
        super().__init__(f"{exchange} {family} circuit open; retry in {retry_after_seconds:.3g} s")
        self.exchange = exchange
        self.family = family
        self.retry_after_seconds = retry_after_seconds


def exchange_is_failure(exc: BaseException) -> bool:
    """The breakers' failure rule: ExchangeRejected (incl. SymbolNotListed) proves the
    exchange is up; everything else counts (see :func:`default_is_failure`)."""
    return not isinstance(exc, ExchangeRejected) and default_is_failure(exc)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retries with full jitter: retry ``n`` (1-based) waits ``uniform(0, min(cap,
    base * 2 ** (n - 1)))``."""

    max_retries: int = 2
    base_seconds: float = 0.2
    cap_seconds: float = 2.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        if not (self.base_seconds >= 0 and math.isfinite(self.base_seconds)):
            raise ValueError("base_seconds must be finite and >= 0")
        if not (self.cap_seconds >= self.base_seconds and math.isfinite(self.cap_seconds)):
            raise ValueError("cap_seconds must be finite and >= base_seconds")

    def ceiling(self, retry: int) -> float:
        """The largest wait before retry number ``retry`` (1-based)."""
        return min(self.cap_seconds, self.base_seconds * 2.0 ** (retry - 1))

    def delay(self, retry: int, rng: Callable[[], float]) -> float:
        """The wait before retry number ``retry``; ``rng()`` is uniform in [0, 1)."""
        return rng() * self.ceiling(retry)


@dataclass(slots=True)
class _Stats:
    retries: int = 0
    timeouts: int = 0
    rate_limited: int = 0


@dataclass(frozen=True, slots=True)
class _Timing:
    """One attempt in progress: when it started, its rate-limiter waits, its span."""

    started: float
    waits: RateLimitWaits
    span: Span


class CallObserver(Protocol):
    """Told of every call a GuardedSource makes (the metrics are one)."""

    def call(self, family: str, outcome: str, seconds: float | None) -> None:
        """One call of an operation family (:data:`FAMILIES`) ended with ``outcome``
        (ok, error, timeout, rate_limited, rejected); ``seconds`` is the request's own
        time, waits in the rate limiter left out, or None when the breaker refused it."""

    def ratelimit_wait(self, family: str, seconds: float) -> None:
        """A call that was not refused waited ``seconds`` (often 0) in the client-side
        rate limiter before its requests."""


class GuardedSource:
    """A MarketSource that wraps ``source`` with timeouts, breakers and retries."""

    def __init__(
        self,
        source: MarketSource,
        *,
        breaker_config: BreakerConfig = EXCHANGE_BREAKER_CONFIG,
        family_configs: Mapping[str, BreakerConfig] | None = None,
        timeout_seconds: float = DEFAULT_TIMEOUT_SECONDS,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        rng: Callable[[], float] = random.random,
        observers: Sequence[CallObserver] = (),
    ) -> None:
        """``family_configs`` overrides ``breaker_config`` per family (keys from
        :data:`FAMILIES`). ``observers`` are told of every call (metrics, tests).
        ``timeout_seconds`` bounds each attempt, so a call takes at
        most ``(max_retries + 1) * timeout_seconds`` plus the back-off waits.
        ``clock`` (monotonic seconds) drives the breakers; ``sleep`` and ``rng`` the
        back-off (tests inject all three)."""
        unknown = set(family_configs or ()) - set(FAMILIES)
        if unknown:
            raise ValueError(f"unknown operation families: {', '.join(sorted(unknown))}")
        if not (timeout_seconds > 0 and math.isfinite(timeout_seconds)):
            raise ValueError("timeout_seconds must be finite and > 0")
        self._source = source
        self.name = source.name
        self._timeout = timeout_seconds
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._rng = rng
        configs = family_configs or {}
        self._breakers = {
            family: CircuitBreaker(
                f"{self.name}:{family}",
                configs.get(family, breaker_config),
                clock=clock,
                is_failure=exchange_is_failure,
            )
            for family in FAMILIES
        }
        self._stats = {family: _Stats() for family in FAMILIES}
        self._observers = tuple(observers)

    # -- introspection -------------------------------------------------------------------

    @property
    def source(self) -> MarketSource:
        """The wrapped source."""
        return self._source

    @property
    def timeout_seconds(self) -> float:
        return self._timeout

    @property
    def retry(self) -> RetryPolicy:
        return self._retry

    def breakers(self) -> dict[str, CircuitBreaker]:
        """The breakers by family (a new dict; the breakers themselves are live)."""
        return dict(self._breakers)

    def snapshot(self) -> dict[str, dict[str, Any]]:
        """Per family: the breaker's snapshot plus this wrapper's counters ``retries``,
        ``timeouts`` and ``rate_limited`` (since creation). JSON-able."""
        result: dict[str, dict[str, Any]] = {}
        for family, breaker in self._breakers.items():
            stats = self._stats[family]
            result[family] = {
                **breaker.snapshot(),
                "retries": stats.retries,
                "timeouts": stats.timeouts,
                "rate_limited": stats.rate_limited,
            }
        return result

    def add_listener(self, listener: Listener) -> None:
        """``listener(breaker_name, old_state, new_state)`` on every breaker's transitions."""
        for breaker in self._breakers.values():
            breaker.add_listener(listener)

    # -- MarketSource --------------------------------------------------------------------

    async def start(self) -> None:
        await self._guarded("start", "load_markets", self._source.start)

    async def close(self) -> None:
        await self._source.close()

    def listed_symbols(self) -> frozenset[str]:
        return self._source.listed_symbols()

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        symbols = list(symbols)
        return await self._guarded(
            "tickers", "fetch_tickers", lambda: self._source.fetch_tickers(symbols)
        )

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        return await self._guarded(
            "ohlcv",
            "fetch_candles",
            lambda: self._source.fetch_candles(symbol, timeframe, limit),
        )

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        return await self._guarded(
            "order_book", "fetch_order_book", lambda: self._source.fetch_order_book(symbol, depth)
        )

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        """The wrapped source's derivatives read (``base.fetch_derivatives``: every symbol
        unavailable when it has none), behind the ``derivatives`` breaker."""
        symbols = list(symbols)
        return await self._guarded(
            "derivatives", "fetch_derivatives", lambda: fetch_derivatives(self._source, symbols)
        )

    # -- the guard -------------------------------------------------------------------------

    async def _guarded(self, family: str, operation: str, call: Callable[[], Awaitable[T]]) -> T:
        """``call()`` through the family's breaker with timeout and retries.

        Raises CircuitOpen when the first attempt is refused. When a retry is refused
        (the breaker opened meanwhile) the last real error is raised instead: this call
        did reach the exchange, and that is what failed.
        """
        breaker = self._breakers[family]
        last_error: ExchangeUnavailable | None = None
        for attempt in range(self._retry.max_retries + 1):
            if attempt:
                assert last_error is not None
                if breaker.retry_after() > 0:  # would be refused: don't wait for nothing
                    raise last_error
                self._stats[family].retries += 1
                await self._sleep(self._retry.delay(attempt, self._rng))
            try:
                async with breaker.guard() as guard:
                    return await self._attempt(family, operation, call, guard)
            except BreakerOpen as exc:
                if exc.name != breaker.name:
                    raise  # from some other breaker inside the wrapped source
                refused = exc
            except ExchangeRateLimited as exc:
                self._rate_limited(family, exc)
                raise
            except ExchangeUnavailable as exc:
                if getattr(exc, "breaker_failure", True) is False:
                    raise  # an inner CircuitOpen: retrying would only be refused again
                last_error = exc
                continue
            # Refused by our breaker (outside the except block, so that re-raising
            # last_error does not rewrite its context).
            self._called(family, "rejected", None)
            if last_error is not None:
                raise last_error
            raise CircuitOpen(self.name, family, refused.retry_after_seconds) from refused
        assert last_error is not None
        raise last_error

    async def _attempt(
        self, family: str, operation: str, call: Callable[[], Awaitable[T]], guard: BreakerGuard
    ) -> T:
        """One timed attempt: its span, its outcome, its request and wait times. The
        breaker counts the request's time only: a queue in our rate limiter is not a
        slow exchange."""
        with exchange_call_span(self.name, family) as span, measure_waits() as waits:
            timing = _Timing(time.perf_counter(), waits, span)
            try:
                return await self._timed(family, operation, call, timing)
            finally:
                guard.exclude(waits.seconds)

    async def _timed(
        self, family: str, operation: str, call: Callable[[], Awaitable[T]], timing: _Timing
    ) -> T:
        """``call()`` within the timeout, its outcome reported."""
        try:
            async with asyncio.timeout(self._timeout):
                result = await call()
        except TimeoutError as exc:
            self._stats[family].timeouts += 1
            self._called(family, "timeout", timing)
            raise ExchangeUnavailable(
                f"{self.name} {operation} timed out after {self._timeout:g} s"
            ) from exc
        except ExchangeRateLimited:
            self._called(family, "rate_limited", timing)
            raise
        except Exception:
            self._called(family, "error", timing)
            raise
        self._called(family, "ok", timing)
        return result

    def _called(self, family: str, outcome: str, timing: _Timing | None) -> None:
        """Reports one call (``timing`` None: refused by the breaker, nothing sent)."""
        seconds = wait = None
        if timing is not None:
            wait = timing.waits.seconds
            seconds = max(0.0, time.perf_counter() - timing.started - wait)
            record_outcome(timing.span, outcome)
            record_timing(timing.span, seconds, wait)
        for observer in self._observers:
            if wait is not None:
                observer.ratelimit_wait(family, wait)
            observer.call(family, outcome, seconds)

    def _rate_limited(self, family: str, exc: ExchangeRateLimited) -> None:
        """Honour the exchange: no retry; this family open for at least Retry-After (else
        the next back-off step); with a Retry-After, every other family too."""
        self._stats[family].rate_limited += 1
        retry_after = exc.retry_after_seconds
        if retry_after is not None and not (retry_after >= 0 and math.isfinite(retry_after)):
            retry_after = None
        self._breakers[family].trip(retry_after)
        if retry_after:
            for other, breaker in self._breakers.items():
                if other != family:
                    breaker.open_for(retry_after)
