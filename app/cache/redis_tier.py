"""Redis: the longer-lived backup copy of every view, and the Redis plumbing its users share.

One ``redis.asyncio.Redis`` client (one connection pool) serves the whole process:
this tier, the distributed locks (``app.cache.locks``), the invalidation bus
(``app.cache.pubsub``) and the server-side sessions (``app.services.sessions``).
``connect_redis`` builds it; whoever builds it closes it with ``aclose()`` at shutdown.

Every call goes through one ``RedisGuard``: a time bound (``asyncio.timeout`` on
top of the socket timeouts), one circuit breaker for the connection (while it is
open calls fail fast, and it lets a trial call through later, so the service
rejoins Redis by itself), and every Redis or socket error surfaces as
``TierUnavailable``. The guard logs one warning when Redis goes down and one info
line when it is back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar, cast

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from app.cache.tier import TierUnavailable
from app.resilience.breaker import BreakerConfig, BreakerOpen, CircuitBreaker

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_URL = "redis://127.0.0.1:6379/0"
VIEW_PREFIX = "virtuoso:view:"


def connect_redis(
    url: str = DEFAULT_URL,
    timeout_seconds: float = 0.5,
    *,
    max_connections: int = 64,
    health_check_interval: int = 15,
) -> Redis:
    """The process's one Redis client (bytes in, bytes out). Connecting happens lazily.

    Socket connect and read timeouts are ``timeout_seconds``, and so is the wait for
    a free pooled connection once ``max_connections`` are in use. redis-py retries a
    command once, at once, and only on a connection error (a pooled connection that
    died while idle, e.g. after a Redis restart); anything longer is the breaker's
    job. Idle connections are PINGed before reuse after ``health_check_interval``.
    """
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds}")
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        socket_keepalive=True,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
    return Redis.from_pool(pool)  # aclose() closes the pool too


def is_connection_failure(exc: BaseException) -> bool:
    """What counts against the breaker: Redis unreachable or too slow, not a command error."""
    return isinstance(exc, RedisConnectionError | RedisTimeoutError | TimeoutError | OSError)


def redis_breaker_config(timeout_seconds: float = 0.5) -> BreakerConfig:
    """Trip on 3 connection failures in a row (or half the calls failing); probe again
    after 0.5 s, backing off to 15 s, so a recovered Redis is rejoined within 15 s."""
    return BreakerConfig(
        consecutive_failures=3,
        open_seconds=0.5,
        max_open_seconds=15.0,
        slow_call_seconds=timeout_seconds / 2,
    )


def describe(exc: BaseException) -> str:
    """``ConnectionError: Error 111 connecting to …`` (redis-py's repr hides the message)."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass(slots=True)
class OpCounters:
    """``ops``: calls that reached Redis; ``errors``: those that failed; ``skipped``:
    calls not attempted because the breaker was open."""

    ops: int = 0
    errors: int = 0
    skipped: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class RedisSkipped(TierUnavailable):
    """Not attempted: the breaker is open while Redis recovers."""

    def __init__(self, retry_after_seconds: float) -> None:
        super().__init__(f"redis skipped while it recovers (retry in {retry_after_seconds:.1f} s)")
        self.retry_after_seconds = retry_after_seconds


class RedisGuard:
    """Time bound + shared breaker + error mapping + down/up logging for every Redis call.

    Share one guard (one breaker) among every user of the same Redis client.
    """

    def __init__(
        self,
        breaker: CircuitBreaker | None = None,
        *,
        timeout_seconds: float = 0.5,
        name: str = "redis",
    ) -> None:
        self.name = name
        self.breaker = breaker or CircuitBreaker(
            name, config=redis_breaker_config(timeout_seconds), is_failure=is_connection_failure
        )
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

        Raises ``RedisSkipped`` (a TierUnavailable) while the breaker is open and
        ``TierUnavailable`` for any Redis, socket or timeout error.
        """
        limit = self.timeout_seconds if timeout_seconds is None else timeout_seconds

        async def bounded() -> T:
            async with asyncio.timeout(limit):
                return await operation()

        try:
            result = await self.breaker.call(bounded)
        except BreakerOpen as exc:
            if counters is not None:
                counters.skipped += 1
            self._observe(None)
            raise RedisSkipped(exc.retry_after_seconds) from None
        except (RedisError, OSError, TimeoutError) as exc:
            if counters is not None:
                counters.ops += 1
                counters.errors += 1
            self._observe(exc)
            reason = "timed out" if isinstance(exc, TimeoutError) else describe(exc)
            raise TierUnavailable(f"{self.name} {what}: {reason}") from exc
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
        return self.breaker.snapshot()


class RedisTier:
    """The Redis backup tier (a SharedTier named "redis"): MGET, pipelined SET EX, UNLINK.

    Keys are stored under ``prefix`` (Redis also holds sessions and locks); callers
    see their own keys. A TTL must be positive: nothing is stored without one.
    """

    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        guard: RedisGuard | None = None,
        prefix: str = VIEW_PREFIX,
        owns_client: bool = False,
    ) -> None:
        self._redis = redis
        self._guard = guard or RedisGuard()
        self._prefix = prefix
        self._owns_client = owns_client
        self._counters = OpCounters()

    @classmethod
    def from_url(cls, url: str = DEFAULT_URL, timeout_seconds: float = 0.5) -> RedisTier:
        """A tier with its own client and breaker, closed by ``close()``."""
        guard = RedisGuard(timeout_seconds=timeout_seconds)
        return cls(connect_redis(url, timeout_seconds), guard=guard, owns_client=True)

    @property
    def available(self) -> bool:
        return self._guard.available

    @property
    def counters(self) -> dict[str, int]:
        """ops (calls that reached Redis), errors (of those), skipped (breaker open)."""
        return self._counters.as_dict()

    @property
    def guard(self) -> RedisGuard:
        return self._guard

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return {}
        values = await self._guard.run(
            lambda: self._redis.mget([self._prefix + key for key in keys]), "MGET", self._counters
        )
        # The client does not decode responses (connect_redis): values are bytes or None.
        found = cast(list[bytes | None], values)
        return {key: value for key, value in zip(keys, found, strict=True) if value is not None}

    async def set_many(self, items: Mapping[str, bytes], ttl_seconds: int) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
        if not items:
            return

        async def store() -> None:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self._prefix + key, value, ex=int(ttl_seconds))
                await pipe.execute()

        await self._guard.run(store, "SET", self._counters)

    async def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        await self._guard.run(
            lambda: self._redis.unlink(*(self._prefix + key for key in keys)),
            "UNLINK",
            self._counters,
        )

    async def stats(self) -> dict[str, Any]:
        """Memory used and limit, evictions and keys of the whole Redis database.

        Never raises: while Redis is down the answer says ``available: False``.
        ``items`` counts every key of the database (views, sessions, locks).
        """

        async def fetch() -> list[Any]:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.info("memory")
                pipe.info("stats")
                pipe.dbsize()
                return await pipe.execute()

        try:
            memory, server_stats, items = await self._guard.run(fetch, "INFO")
        except TierUnavailable as exc:
            return {**self._summary(), "available": False, "error": str(exc)}
        used = int(memory.get("used_memory", 0))
        limit = int(memory.get("maxmemory", 0))
        return {
            **self._summary(),
            "available": True,
            "used_memory": used,
            "maxmemory": limit,  # 0: no limit
            "used_memory_ratio": round(used / limit, 4) if limit else None,
            "maxmemory_policy": memory.get("maxmemory_policy"),
            "evicted_keys": int(server_stats.get("evicted_keys", 0)),
            "items": int(items),
        }

    def _summary(self) -> dict[str, Any]:
        return {"tier": self.name, "breaker": self._guard.snapshot(), "counters": self.counters}

    async def close(self) -> None:
        """Closes the client only when this tier created it (``from_url``)."""
        if self._owns_client:
            await self._redis.aclose()
