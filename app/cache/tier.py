"""What the layered cache needs from a shared tier (Memcached, Redis).

A tier that cannot answer raises ``app.backends.errors.TierUnavailable``, the error of
every backend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class SharedTier(Protocol):
    """A shared tier: bytes by physical key, with a TTL in seconds, in batches."""

    name: str  # "memcached" | "redis": the metric label

    @property
    def available(self) -> bool:
        """False while the tier is considered down; calls then fail fast."""
        ...

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values found (absent keys are misses). Raises TierUnavailable."""
        ...

    async def set_many(self, items: Mapping[str, bytes], ttl_seconds: int) -> None:
        """Stores every item with the TTL. Raises TierUnavailable."""
        ...

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Raises TierUnavailable."""
        ...

    async def stats(self) -> dict:
        """Memory used and limit, items, evictions (for /api/cache/metrics)."""
        ...

    async def close(self) -> None:
        """Releases the tier's connections."""
        ...
