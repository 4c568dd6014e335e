"""A cached view: its bytes and the times that decide whether it is fresh, stale or dead.

Times are epoch milliseconds. ``generated_at_ms`` is when the data was produced
(what ``age_ms`` counts from); an entry is fresh for ``ttl_ms`` after that,
servable as stale for ``grace_ms`` more while one refresh runs, and usable as a
last resort (stale-if-error) until ``max_stale_ms`` after generation.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored view: its JSON bytes, weak ETag, and the epoch-millisecond times of
    the module docstring. Immutable; the tiers store it through ``app.cache.codec``."""

    body: bytes  # a JSON object without age_ms and stale (see app.web.responses)
    etag: str
    generated_at_ms: int
    ttl_ms: int
    grace_ms: int
    max_stale_ms: int
    compute_ms: float = 0.0  # how long producing it took: XFetch's delta
    compressed: bytes | None = None  # zstd frame of body[1:], for clients that accept zstd

    @staticmethod
    def etag_of(body: bytes) -> str:
        """The weak ETag of ``body``: ``W/"<24 hex digits>"`` (BLAKE2b, 12 bytes)."""
        return f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'

    def age_ms(self, now_ms: int) -> int:
        """Milliseconds since the data was generated (never negative)."""
        return max(0, now_ms - self.generated_at_ms)

    @property
    def expires_at_ms(self) -> int:
        """Epoch ms at which the entry stops being fresh."""
        return self.generated_at_ms + self.ttl_ms

    def is_fresh(self, now_ms: int) -> bool:
        """Within its TTL: served as it is."""
        return now_ms < self.expires_at_ms

    def in_grace(self, now_ms: int) -> bool:
        """Past its TTL but within grace: served stale while one refresh runs."""
        return self.expires_at_ms <= now_ms < self.expires_at_ms + self.grace_ms

    def usable_if_error(self, now_ms: int) -> bool:
        """Young enough (under ``max_stale_ms``) to be served, stale, when computing fails."""
        return now_ms < self.generated_at_ms + self.max_stale_ms

    @property
    def size(self) -> int:
        """Bytes held: the body plus its compressed copy (what bounds the L1 tier)."""
        return len(self.body) + len(self.compressed or b"")
