"""Serialized views, ready to send: each is encoded once per snapshot version.

A StoredView keeps the orjson bytes of a view without its two time-dependent
fields; ``body_at(now)`` splices ``age_ms`` and ``stale`` in front, which costs a
byte concatenation instead of a re-serialization. The ETag is a hash of the
stored bytes (weak: the age in the body moves while the data does not).

``ViewStore`` is the interface the tiered cache replaces; ``LatestViews`` is the
in-process implementation holding the latest version of every view.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Protocol

import orjson


@dataclass(frozen=True, slots=True)
class StoredView:
    body: bytes  # a JSON object, without age_ms and stale
    etag: str
    generated_at_ms: int

    @classmethod
    def encode(cls, payload: dict) -> StoredView:
        body = orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)
        digest = hashlib.blake2b(body, digest_size=12).hexdigest()
        return cls(body=body, etag=f'W/"{digest}"', generated_at_ms=int(payload["generated_at"]))

    def age_ms(self, now_ms: int) -> int:
        return max(0, now_ms - self.generated_at_ms)

    def body_at(self, now_ms: int, stale_after_ms: int) -> bytes:
        age = self.age_ms(now_ms)
        stale = b"true" if age > stale_after_ms else b"false"
        return b'{"age_ms":%d,"stale":%s,' % (age, stale) + self.body[1:]


class ViewStore(Protocol):
    def get(self, name: str) -> StoredView | None: ...

    def publish(self, views: dict[str, StoredView]) -> None:
        """Replace every view with this version's (views absent from it are dropped)."""
        ...


class LatestViews:
    """The latest version of every view, in process memory."""

    def __init__(self) -> None:
        self._views: dict[str, StoredView] = {}

    def get(self, name: str) -> StoredView | None:
        return self._views.get(name)

    def publish(self, views: dict[str, StoredView]) -> None:
        self._views = dict(views)

    def __len__(self) -> int:
        return len(self._views)
