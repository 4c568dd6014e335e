"""Cache warming: the hot views of ``app.services.catalogue`` are computed and
stored before the replica says it is ready; afterwards the pipeline keeps them
warm, and ``warm()`` can be called again (``POST /api/cache/warm``) — e.g. after
an invalidation or a Memcached restart.

Warm means in every shared tier: each hot view read (from any tier, or computed)
is written into Memcached and Redis where their copy is missing, unreadable or
older, and read back; the report names the views a tier still does not hold (that
tier down, or refusing the write) rather than calling them warmed.
"""

from __future__ import annotations

import logging
import time
from collections import Counter

from app.cache.entry import CacheEntry
from app.cache.layered import NothingToServe
from app.market.errors import MarketDataError
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
        """Refreshes the pipeline's views, reads every hot view through the cache
        (computing what no tier holds) and puts it into every shared tier.

        Returns ``{"warmed": [view…], "failed": {view: reason}, "not_warmed": {view:
        [tier…]}, "stale": [view…], "duration_ms": float}``: ``warmed`` views are in
        every shared tier, read back; ``failed`` ones could not be had at all;
        ``not_warmed`` ones are missing from the tiers named; ``stale`` ones were warmed
        with a copy past its TTL (the source is failing). A refresh that fails (the
        exchange or the collector is down) leaves the copies the tiers hold to warm with.
        Raises NothingToServe when no pipeline view could be had."""
        started = time.perf_counter()
        try:
            await self.views.collector.refresh()  # a peer's recent refresh counts
        except MarketDataError as error:
            log.warning("warming without a refresh: %s", error)
        entries, failed = await self._read(known_symbols)
        if failed and set(failed) >= set(HOT_VIEWS):
            raise NothingToServe(f"no hot view could be warmed: {next(iter(failed.values()))}")
        not_warmed = await self.views.spread(entries)
        now = self.views.cache.now_ms()
        return {
            "warmed": [name for name in entries if name not in not_warmed],
            "failed": failed,
            "not_warmed": not_warmed,
            "stale": [name for name, entry in entries.items() if not entry.is_fresh(now)],
            "duration_ms": round((time.perf_counter() - started) * 1000, 1),
        }

    async def _read(self, known_symbols: list[str]) -> tuple[dict[str, CacheEntry], dict]:
        """Every hot view's entry by name, and the reasons of those that failed."""
        entries: dict[str, CacheEntry] = {}
        failed: dict[str, str] = {}
        for name in [*HOT_VIEWS, *self.hot_on_demand(known_symbols)]:
            try:
                entries[name] = (await self.views.read(name)).entry
            except NothingToServe as error:
                failed[name] = str(error)
        return entries, failed
