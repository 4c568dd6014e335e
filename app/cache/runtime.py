"""Builds the cache tiers a :class:`CacheConfig` asks for, and closes them.

Embedded default: L1 alone. ``memcached_servers`` add the shared L2; ``redis_url``
adds the backup tier, locks, generations, the invalidation bus and the refresh
coordination. One Redis client and one breaker serve all of Redis's uses.
"""

from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from typing import TYPE_CHECKING

from redis.asyncio import Redis

from app.backends.connection import connect_redis
from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.locks import RedisLock
from app.cache.coherence import Coherence
from app.cache.generations import Generations
from app.cache.l1 import L1Cache
from app.cache.layered import LayeredCache
from app.cache.policy import CachePolicy
from app.cache.pubsub import InvalidationBus
from app.cache.redis_tier import RedisTier
from app.cache.stats import CacheStats
from app.resilience.redis_breaker import redis_guard

if TYPE_CHECKING:  # imported by build_cache only when Memcached is configured
    from app.cache.memcached import MemcachedTier

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    """The part of the service's settings the cache is built from (the composition
    root cuts it from the whole settings).

    ``replica_id``: this process's name on the invalidation bus (None: host-pid).
    ``l1_bytes``: the in-process tier's budget in bytes (0: no L1).
    ``memcached_servers``: ``host:port`` of the shared L2 (empty: none).
    ``redis_url``: the backup tier, locks, generations and bus (None: none).
    ``memcached_timeout_seconds``, ``redis_timeout_seconds``: a tier call slower than
    this is a failure (a miss for the cache, a count toward the tier's breaker);
    their defaults are in ``config/default.yaml``.
    ``single_flight``, ``compression``, ``refresh_ahead``: the optimisations the
    benchmark can switch off (all on in production).
    """

    memcached_timeout_seconds: float
    redis_timeout_seconds: float
    replica_id: str | None = None
    l1_bytes: int = 0
    memcached_servers: tuple[str, ...] = ()
    redis_url: str | None = None
    single_flight: bool = True
    compression: bool = True
    refresh_ahead: bool = True


@dataclass
class CacheRuntime:
    cache: LayeredCache
    coherence: Coherence
    replica_id: str
    redis: Redis | None = None
    redis_guard: RedisGuard | None = None
    memcached: MemcachedTier | None = None
    backup: RedisTier | None = None
    locks: RedisLock | None = None
    bus: InvalidationBus | None = None

    @property
    def keyspace(self) -> Keyspace:
        """The namespace of every name this process writes in a shared tier."""
        return self.cache.policy.keyspace

    @property
    def tiers(self) -> list[str]:
        names = ["l1"]
        names += ["memcached"] if self.memcached else []
        names += ["redis"] if self.backup else []
        return names

    async def start(self) -> None:
        if self.memcached is not None:
            await self.memcached.start()
        await self.cache.generations.load()
        if self.bus is not None:
            self.bus.start()

    async def close(self) -> None:
        await self.cache.close()
        if self.bus is not None:
            await self.bus.close()
        if self.memcached is not None:
            await self.memcached.close()
        if self.redis is not None:
            await self.redis.aclose()


def build_cache(
    config: CacheConfig, policy: CachePolicy, clock, stats: CacheStats | None = None
) -> CacheRuntime:
    """The tiers ``config`` names around one LayeredCache; nothing connects until
    ``CacheRuntime.start``. ``clock`` gives epoch seconds; ``stats``: the cache's
    counters (with their listeners), new ones by default."""
    replica_id = config.replica_id or f"{socket.gethostname()}-{os.getpid()}"
    l1 = L1Cache(config.l1_bytes)
    memcached = None
    if config.memcached_servers:
        from app.cache.memcached import MemcachedTier

        memcached = MemcachedTier(
            config.memcached_servers, timeout_seconds=config.memcached_timeout_seconds
        )
    redis = guard = backup = locks = None
    generations = Generations()
    if config.redis_url:
        redis = connect_redis(config.redis_url, config.redis_timeout_seconds)
        guard = redis_guard(timeout_seconds=config.redis_timeout_seconds)
        backup = RedisTier(redis, keyspace=policy.keyspace, guard=guard)
        locks = RedisLock(redis, guard=guard, keyspace=policy.keyspace)
        generations = Generations.shared(redis, policy.keyspace)
    cache = LayeredCache(
        policy,
        l1,
        memcached=memcached,
        backup=backup,
        locks=locks,
        generations=generations,
        clock=clock,
        single_flight=config.single_flight,
        compression=config.compression,
        refresh_ahead=config.refresh_ahead,
        stats=stats,
    )
    coherence = Coherence(cache)
    bus = None
    if redis is not None:
        bus = InvalidationBus(
            redis,
            replica_id,
            coherence.handle,
            on_reconnect=coherence.resync,
            guard=guard,
            keyspace=policy.keyspace,
        )
        coherence.bus = bus
    log.info(
        "cache tiers: %s",
        ", ".join(["l1"] + (["memcached"] if memcached else []) + (["redis"] if redis else [])),
    )
    return CacheRuntime(cache, coherence, replica_id, redis, guard, memcached, backup, locks, bus)
