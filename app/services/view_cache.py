"""Views by name through the layered cache: the pipeline publishes, handlers read.

A cold miss of a view the pipeline owns asks the collector for one (coordinated)
refresh that publishes every view; an on-demand view (candles) is asked for its key
alone.

When another replica did the refresh, its copy of the view is read back from the
shared tiers; a copy that is missing there (Memcached just lost it, nothing in Redis)
or unreadable (a corrupt, truncated or other-version Redis copy) is a miss to
recompute: the next round asks for a forced refresh, which runs here (the peer's lock
is free by then) or waits for the peer holding it again, up to ``PEER_ROUNDS`` times.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from app.cache.coherence import Coherence
from app.cache.entry import CacheEntry
from app.cache.keys import make_key
from app.cache.layered import CacheRead, Compute, Computed, LayeredCache
from app.services.catalogue import spec_of, view_parts
from app.services.collector_link import CollectorLink

# Rounds of "refresh, or wait for the peer refreshing" before giving up on the view:
# the first may be a peer's refresh whose copies did not land; the second then
# refreshes here unless yet another peer holds the lock again.
PEER_ROUNDS = 3


class ViewCache:
    def __init__(
        self, cache: LayeredCache, coherence: Coherence, collector: CollectorLink, namespace: str
    ) -> None:
        self.cache = cache
        self.coherence = coherence
        self.collector = collector
        self.namespace = namespace

    def locate(self, view_name: str) -> tuple[str, str]:
        """(key, family) of a view name; ValueError for an unknown view."""
        family, parts = view_parts(view_name)
        return make_key(family, *parts, namespace=self.namespace), family

    async def read(self, view_name: str) -> CacheRead:
        key, family = self.locate(view_name)
        return await self.cache.read(key, family, self._compute(view_name))

    async def peek(self, view_name: str) -> CacheEntry | None:
        key, family = self.locate(view_name)
        return await self.cache.peek(key, family)

    async def publish(self, bodies: Mapping[str, bytes], generated_at_ms: int) -> None:
        """Stores every view of a snapshot in every tier and tells the other replicas."""
        entries = await asyncio.to_thread(self._entries, bodies, generated_at_ms)
        await self.cache.write_many(entries)
        await self.coherence.announce_landed(sorted({family for family, _ in entries.values()}))

    async def spread(self, entries: Mapping[str, CacheEntry]) -> dict[str, list[str]]:
        """Puts each view's entry (by view name) into every shared tier that lacks it
        and reads it back: the views some tier does not hold, with those tiers' names
        (empty: every view is in every shared tier). ValueError for an unknown view."""
        located = {name: self.locate(name) for name in entries}
        items = {key: (family, entries[name]) for name, (key, family) in located.items()}
        missing = await self.cache.spread(items)
        return {name: missing[key] for name, (key, _) in located.items() if key in missing}

    def _entries(
        self, bodies: Mapping[str, bytes], generated_at_ms: int
    ) -> dict[str, tuple[str, CacheEntry]]:
        entries = {}
        for view_name, body in bodies.items():
            key, family = self.locate(view_name)
            entries[key] = (family, self.cache.make_entry(family, body, generated_at_ms))
        return entries

    def _compute(self, view_name: str) -> Compute:
        if not spec_of(view_name).on_demand:

            async def refresh() -> None:
                await self._refresh_until_readable(view_name)

            return refresh
        _, parts = view_parts(view_name)

        async def candles() -> Computed:
            body, generated_at_ms = await self.collector.candles(*parts)
            return Computed(body, generated_at_ms)

        return candles

    async def _refresh_until_readable(self, view_name: str) -> None:
        """Returns once a fresh copy of ``view_name`` can be read from the tiers (this
        replica published it, or a peer did and its copy landed); LookupError after
        ``PEER_ROUNDS`` refreshes whose copies could not be read. Raises what the
        refresh raised (MarketDataError)."""
        for _ in range(PEER_ROUNDS):
            await self.collector.refresh(force=True)
            landed = await self.peek(view_name)
            if landed is not None and landed.is_fresh(self.cache.now_ms()):
                return
        raise LookupError(f"{view_name}: no readable copy after {PEER_ROUNDS} refreshes")
