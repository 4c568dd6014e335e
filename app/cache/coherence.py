"""Keeps this replica's L1 coherent with the others, through the InvalidationBus.

Two kinds of message: ``l1`` — another replica published newer entries of these
families (drop our L1 copies, the shared tiers hold the new ones); ``all`` — an
invalidation (generations were bumped in Redis: reload them, drop L1 copies).
A reconnect means messages may have been missed: reload and clear L1.

``watch`` lets a producer hear that another replica invalidated a family it derives
views from (e.g. alerts changed elsewhere: the replica holding the snapshot rebuilds
the dashboards that show them).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence

from app.backends.errors import TierUnavailable
from app.cache.layered import LayeredCache
from app.cache.pubsub import Invalidation, InvalidationBus

log = logging.getLogger(__name__)


class Coherence:
    def __init__(self, cache: LayeredCache) -> None:
        self.cache = cache
        self.bus: InvalidationBus | None = None
        self.applied = 0
        self._watchers: dict[str, list[Callable[[], Awaitable[None]]]] = {}
        self._running: set[asyncio.Task] = set()

    def watch(self, family: str, callback: Callable[[], Awaitable[None]]) -> None:
        """Runs ``callback`` (in the background; failures logged) after another replica
        invalidated ``family``."""
        self._watchers.setdefault(family, []).append(callback)

    async def handle(self, message: Invalidation) -> None:
        if message.scope == "all":
            await self.cache.generations.load()
        self.cache.drop_local(message.families)
        for key in message.keys:
            self.cache.l1.delete(key)
        self.applied += 1
        if message.scope == "all":
            for family in message.families:
                for callback in self._watchers.get(family, ()):
                    task = asyncio.create_task(_logged(callback, family))
                    self._running.add(task)
                    task.add_done_callback(self._running.discard)

    async def resync(self) -> None:
        await self.cache.generations.load()
        self.cache.l1.clear()

    async def announce_landed(self, families: Sequence[str]) -> None:
        await self._publish(families, scope="l1")

    async def invalidate_families(self, families: Sequence[str]) -> list[str]:
        affected = await self.cache.invalidate_families(families)
        await self._publish(affected, scope="all")
        return affected

    async def invalidate_alone(self, families: Sequence[str]) -> None:
        """Invalidates exactly these families, on every replica, without the cascade:
        for a producer that rebuilds the dependents itself (alerts → dashboards)."""
        await self.cache.generations.bump(families)
        self.cache.drop_local(families)
        await self._publish(families, scope="all")

    async def invalidate_key(self, key: str, family: str) -> list[str]:
        physical = self.cache.physical_key(key, family)
        affected = await self.cache.invalidate_key(key, family)
        await self._publish(affected, keys=[physical], scope="all")
        return affected

    async def _publish(
        self, families: Sequence[str], keys: Sequence[str] = (), scope: str = "all"
    ) -> None:
        if self.bus is None:
            return
        try:
            await self.bus.publish(families=families, keys=keys, scope=scope)  # type: ignore[arg-type]
        except TierUnavailable:
            log.debug("redis down: %s message for %s not sent", scope, ", ".join(families))


async def _logged(callback: Callable[[], Awaitable[None]], family: str) -> None:
    try:
        await callback()
    except Exception:
        log.exception("reacting to another replica's %s invalidation failed", family)
