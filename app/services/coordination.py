"""Across replicas: one market refresh per interval, and one at a time.

The replica that takes the refresh lock fetches, computes and publishes; the
others skip their scheduled refresh while a recent one is marked, and a cold
read on another replica waits for the running refresh instead of starting its
own. When Redis cannot be reached every replica refreshes for itself (logged).

The recent-refresh marker lives until 0.9 intervals after the refresh *started*
(not after it ended): the next scheduled start, one interval after this one, finds
it gone, so a refresh's duration never pushes the cadence past the interval.
"""

from __future__ import annotations

import contextlib
import logging
import time
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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """``locks`` name the lock in the deployment's namespace; ``keyspace`` names the
        recent-refresh marker (``<namespace>:refreshed``); ``clock`` (monotonic seconds)
        times the refresh, whose duration the marker's life is shortened by."""
        self.redis = redis
        self.locks = locks
        self.interval_ms = int(interval_seconds * 1000)
        self.replica_id = replica_id
        self.marker = keyspace.name("refreshed")
        self.lock_ttl_ms = max(30_000, 3 * self.interval_ms)
        self._degraded = False
        self._clock = clock

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
            started = self._clock()
            result = await refresh()
            await self._mark_refreshed(self._clock() - started)
            return result
        finally:
            with contextlib.suppress(TierUnavailable):  # the lease expires by itself
                await self.locks.release(lease)

    async def _recently_refreshed(self) -> bool:
        return bool(await self.redis.exists(self.marker))

    def marker_ttl_ms(self, took_seconds: float) -> int:
        """How long the marker of a refresh that took ``took_seconds`` lives: until 0.9
        intervals after its start; 0 (no marker) when the refresh took that long."""
        return max(0, int(self.interval_ms * 0.9 - took_seconds * 1000))

    async def _mark_refreshed(self, took_seconds: float) -> None:
        ttl_ms = self.marker_ttl_ms(took_seconds)
        if ttl_ms <= 0:
            return  # the next scheduled start is due already
        with contextlib.suppress(
            RedisError, OSError
        ):  # at worst another replica refreshes once more
            await self.redis.set(self.marker, self.replica_id, px=ttl_ms)

    def _note_degraded(self, error: BaseException) -> None:
        if not self._degraded:
            log.warning("refresh coordination unavailable (%s): refreshing locally", error)
            self._degraded = True

    def _note_recovered(self) -> None:
        if self._degraded:
            log.info("refresh coordination through redis restored")
            self._degraded = False
