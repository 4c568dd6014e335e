"""L1: the in-process tier. Holds CacheEntry objects (already-serialized bytes),
bounded by bytes with least-recently-used eviction."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from app.cache.entry import CacheEntry


class L1Cache:
    """Entries by physical key, each with its cache family, holding at most
    ``max_bytes`` of bodies (``CacheEntry.size``); the least recently read go first.
    ``ValueError`` for a negative bound (0 holds nothing)."""

    def __init__(self, max_bytes: int) -> None:
        if max_bytes < 0:  # 0: holds nothing (the benchmark's ablation of this tier)
            raise ValueError("max_bytes must not be negative")
        self.max_bytes = max_bytes
        self.bytes = 0
        self.evictions = 0
        self._entries: OrderedDict[str, tuple[str, CacheEntry]] = OrderedDict()

    def get(self, key: str) -> CacheEntry | None:
        """The entry, now the most recently used; None when absent."""
        item = self._entries.get(key)
        if item is None:
            return None
        self._entries.move_to_end(key)
        return item[1]

    def put(self, key: str, family: str, entry: CacheEntry) -> None:
        """Stores the entry (an entry larger than the whole tier is not kept)."""
        self.delete(key)
        if entry.size > self.max_bytes:
            return
        self._entries[key] = (family, entry)
        self.bytes += entry.size
        while self.bytes > self.max_bytes:
            _, (_, evicted) = self._entries.popitem(last=False)
            self.bytes -= evicted.size
            self.evictions += 1

    def delete(self, key: str) -> bool:
        """Forgets the key; False when it was not held."""
        item = self._entries.pop(key, None)
        if item is None:
            return False
        self.bytes -= item[1].size
        return True

    def delete_families(self, families: Iterable[str]) -> int:
        """Forgets every entry of these families; returns how many there were."""
        doomed = set(families)
        keys = [key for key, (family, _) in self._entries.items() if family in doomed]
        for key in keys:
            self.delete(key)
        return len(keys)

    def clear(self) -> None:
        """Forgets everything (evictions are not counted)."""
        self._entries.clear()
        self.bytes = 0

    def items_by_family(self) -> dict[str, int]:
        """How many entries each family holds (families holding none are absent)."""
        counts: dict[str, int] = {}
        for family, _ in self._entries.values():
            counts[family] = counts.get(family, 0) + 1
        return counts

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, key: str) -> bool:
        return key in self._entries
