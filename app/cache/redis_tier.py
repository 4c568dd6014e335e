"""Redis: the longer-lived backup copy of every view (a ``SharedTier`` named "redis").

The client, the guard and the error mapping it calls through are ``app.backends``'s,
shared with every other user of Redis; this module is only the tier's cache semantics.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from redis.asyncio import Redis

from app.backends.connection import DEFAULT_URL, connect_redis
from app.backends.errors import TierUnavailable
from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace
from app.resilience.redis_breaker import redis_guard


class RedisTier:
    """The Redis backup tier (a SharedTier named "redis"): MGET, pipelined SET EX, UNLINK.

    Keys are stored under ``<namespace>:view:`` (Redis also holds sessions and locks,
    and other deployments' views); callers see their own keys. A TTL must be positive:
    nothing is stored without one.
    """

    name = "redis"

    def __init__(
        self,
        redis: Redis,
        *,
        keyspace: Keyspace,
        guard: RedisGuard | None = None,
        owns_client: bool = False,
    ) -> None:
        self._redis = redis
        self._guard = guard or redis_guard()
        self._prefix = keyspace.prefix("view")
        self._owns_client = owns_client
        self._counters = OpCounters()

    @classmethod
    def from_url(
        cls, keyspace: Keyspace, url: str = DEFAULT_URL, timeout_seconds: float = 0.5
    ) -> RedisTier:
        """A tier with its own client and breaker, closed by ``close()``."""
        guard = redis_guard(timeout_seconds=timeout_seconds)
        client = connect_redis(url, timeout_seconds)
        return cls(client, keyspace=keyspace, guard=guard, owns_client=True)

    def storage_key(self, key: str) -> str:
        """The Redis key a caller's ``key`` is stored under."""
        return self._prefix + key

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
            lambda: self._redis.mget([self.storage_key(key) for key in keys]),
            "MGET",
            self._counters,
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
                    pipe.set(self.storage_key(key), value, ex=int(ttl_seconds))
                await pipe.execute()

        await self._guard.run(store, "SET", self._counters)

    async def delete_many(self, keys: Sequence[str]) -> None:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return
        await self._guard.run(
            lambda: self._redis.unlink(*(self.storage_key(key) for key in keys)),
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
