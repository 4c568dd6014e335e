"""Cache warming: the hot views of ``app.services.catalogue`` are computed and
stored before the replica says it is ready; afterwards the pipeline keeps them
warm, and ``warm()`` can be called again (``POST /api/cache/warm``) — e.g. after
an invalidation."""

from __future__ import annotations

import logging
import time
from collections import Counter

from app.cache.layered import NothingToServe
from app.services.catalogue import DEFAULT_HOT_ON_DEMAND, HOT_VIEWS
from app.services.view_cache import ViewCache

log = logging.getLogger(__name__)

HOT_ON_DEMAND = 20
TRACKED_LIMIT = 1000


class Warmer:
    def __init__(self, views: ViewCache) -> None:
        self.views = views
        self.demand: Counter[str] = Counter()  # reads of on-demand views, for the hot set

    def note_read(self, view_name: str) -> None:
        if len(self.demand) < TRACKED_LIMIT or view_name in self.demand:
            self.demand[view_name] += 1

    def hot_on_demand(self, known_symbols: list[str]) -> list[str]:
        tracked = [name for name, _ in self.demand.most_common(HOT_ON_DEMAND)]
        defaults = [n for n in DEFAULT_HOT_ON_DEMAND if n.split(":")[1] in known_symbols]
        return list(dict.fromkeys(tracked + defaults))

    async def warm(self, known_symbols: list[str]) -> dict:
        """Refreshes the pipeline's views, then reads every hot view through the cache
        (computing the on-demand ones). Raises NothingToServe when data cannot be had."""
        started = time.perf_counter()
        await self.views.collector.refresh()  # a peer's recent refresh counts
        warmed, failed = [], {}
        for name in [*HOT_VIEWS, *self.hot_on_demand(known_symbols)]:
            try:
                await self.views.read(name)
                warmed.append(name)
            except NothingToServe as error:
                failed[name] = str(error)
        if failed and set(failed) >= set(HOT_VIEWS):
            raise NothingToServe(f"no hot view could be warmed: {next(iter(failed.values()))}")
        return {
            "warmed": warmed,
            "failed": failed,
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }
