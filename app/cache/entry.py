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
        return f'W/"{hashlib.blake2b(body, digest_size=12).hexdigest()}"'

    def age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.generated_at_ms)

    @property
    def expires_at_ms(self) -> int:
        return self.generated_at_ms + self.ttl_ms

    def is_fresh(self, now_ms: int) -> bool:
        return now_ms < self.expires_at_ms

    def in_grace(self, now_ms: int) -> bool:
        """Past its TTL but within grace: served stale while one refresh runs."""
        return self.expires_at_ms <= now_ms < self.expires_at_ms + self.grace_ms

    def usable_if_error(self, now_ms: int) -> bool:
        return now_ms < self.generated_at_ms + self.max_stale_ms

    @property
    def size(self) -> int:
        return len(self.body) + len(self.compressed or b"")
