"""Views by name through the layered cache: the pipeline publishes, handlers read.

A cold miss of a view the pipeline owns runs one (coordinated) refresh that
publishes every view; an on-demand view (candles) is computed for its key alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import TYPE_CHECKING

from app.cache.coherence import Coherence
from app.cache.entry import CacheEntry
from app.cache.keys import make_key
from app.cache.layered import CacheRead, Compute, Computed, LayeredCache
from app.services.catalogue import spec_of, view_parts

if TYPE_CHECKING:  # the pipeline runs where views are computed; serving only reads
    from app.services.pipeline import Pipeline


class ViewCache:
    def __init__(
        self, cache: LayeredCache, coherence: Coherence, pipeline: Pipeline, namespace: str
    ) -> None:
        self.cache = cache
        self.coherence = coherence
        self.pipeline = pipeline
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
            return self._refresh_pipeline
        _, parts = view_parts(view_name)

        async def candles() -> Computed:
            body, generated_at_ms = await self.pipeline.candles(*parts)
            return Computed(body, generated_at_ms)

        return candles

    async def _refresh_pipeline(self) -> None:
        await self.pipeline.refresh(force=True)
        return None
