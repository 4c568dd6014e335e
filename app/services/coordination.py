"""Across replicas: one market refresh per interval, and one at a time.

The replica that takes the refresh lock fetches, computes and publishes; the
others skip their scheduled refresh while a recent one is marked, and a cold
read on another replica waits for the running refresh instead of starting its
own. When Redis cannot be reached every replica refreshes for itself (logged).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.backends.errors import TierUnavailable
from app.backends.keyspace import Keyspace
from app.backends.locks import RedisLock

log = logging.getLogger(__name__)

T = TypeVar("T")
LOCK_NAME = "refresh"


class RefreshCoordinator:
    def __init__(
        self,
        redis: Redis,
        locks: RedisLock,
        interval_seconds: float,
        replica_id: str,
        keyspace: Keyspace,
    ) -> None:
        """``locks`` name the lock in the deployment's namespace; ``keyspace`` names the
        recent-refresh marker (``<namespace>:refreshed``)."""
        self.redis = redis
        self.locks = locks
        self.interval_ms = int(interval_seconds * 1000)
        self.replica_id = replica_id
        self.marker = keyspace.name("refreshed")
        self.lock_ttl_ms = max(30_000, 3 * self.interval_ms)
        self._degraded = False

    async def run(self, refresh: Callable[[], Awaitable[T]], force: bool) -> T | None:
        """``refresh()``'s result when this replica ran it; None when another one did
        (or recently had). ``force`` ignores the recent-refresh marker (cold reads)."""
        try:
            if not force and await self._recently_refreshed():
                return None
            lease = await self.locks.acquire(LOCK_NAME, ttl_ms=self.lock_ttl_ms)
            if lease is None:
                await self.locks.wait_for_release(LOCK_NAME, self.lock_ttl_ms / 1000)
                return None
        except (TierUnavailable, RedisError, OSError) as error:
            self._note_degraded(error)
            return await refresh()
        self._note_recovered()
        try:
            result = await refresh()
            await self._mark_refreshed()
            return result
        finally:
            with contextlib.suppress(TierUnavailable):  # the lease expires by itself
                await self.locks.release(lease)

    async def _recently_refreshed(self) -> bool:
        return bool(await self.redis.exists(self.marker))

    async def _mark_refreshed(self) -> None:
        with contextlib.suppress(
            RedisError, OSError
        ):  # at worst another replica refreshes once more
            await self.redis.set(self.marker, self.replica_id, px=int(self.interval_ms * 0.9))

    def _note_degraded(self, error: BaseException) -> None:
        if not self._degraded:
            log.warning("refresh coordination unavailable (%s): refreshing locally", error)
            self._degraded = True

    def _note_recovered(self) -> None:
        if self._degraded:
            log.info("refresh coordination through redis restored")
            self._degraded = False
