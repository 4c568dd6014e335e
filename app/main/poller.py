"""Numbers that take a network call to read — Memcached's and Redis's memory, items
and evictions, and the age of the newest snapshot this replica can serve — polled
in the background so a scrape never waits on a backend."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from app.services.catalogue import READINESS_VIEW
from app.state import ServiceState

log = logging.getLogger(__name__)

POLL_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class TierNumbers:
    items: int
    used_bytes: int
    limit_bytes: int | None  # None: no limit configured (Redis maxmemory 0)
    evictions: int


class BackendPoller:
    def __init__(self, state: ServiceState, every: float = POLL_SECONDS) -> None:
        self.state = state
        self.every = every
        self.tiers: dict[str, TierNumbers] = {}
        self.served_snapshot_ms: int | None = None

    async def run(self) -> None:
        while True:
            with contextlib.suppress(Exception):  # a poll must never stop the poller
                await self.poll_once()
            await asyncio.sleep(self.every)

    async def poll_once(self) -> None:
        runtime = self.state.runtime
        if runtime.memcached is not None:
            self._memcached(await runtime.memcached.stats())
        if runtime.backup is not None:
            self._redis(await runtime.backup.stats())
        entry = await self.state.views.peek(READINESS_VIEW)
        if entry is not None:
            self.served_snapshot_ms = entry.generated_at_ms

    def _memcached(self, stats: dict[str, Any]) -> None:
        if not stats.get("servers_up"):
            self.tiers.pop("memcached", None)  # down: no number is better than an old one
            return
        totals = stats["totals"]
        self.tiers["memcached"] = TierNumbers(
            items=totals["curr_items"],
            used_bytes=totals["used_bytes"],
            limit_bytes=totals["limit_bytes"] or None,
            evictions=totals["evictions"],
        )

    def _redis(self, stats: dict[str, Any]) -> None:
        if not stats.get("available"):
            self.tiers.pop("redis", None)
            return
        self.tiers["redis"] = TierNumbers(
            items=stats["items"],
            used_bytes=stats["used_memory"],
            limit_bytes=stats["maxmemory"] or None,
            evictions=stats["evicted_keys"],
        )

    def snapshot_generated_ms(self) -> int | None:
        """The newest snapshot this replica made or can serve from the shared tiers."""
        made = self.state.collector.status.last_success_ms
        candidates = [ms for ms in (made, self.served_snapshot_ms) if ms is not None]
        return max(candidates) if candidates else None
