"""The names the service writes in shared stores, all under the deployment's namespace.

Every Redis key and pub/sub channel (views, locks and their fences, the refresh
marker, generations, the invalidation bus, realtime channel and sequences, sessions,
rate-limit buckets, alert store) and every Memcached key starts with the namespace
of the cache policy (``config/cache.yaml``), so deployments sharing a server never
read, lock or announce each other's state. Components that write to a shared store
take a ``Keyspace`` and name what they write through it; none has a prefix of its own.

``Keyspace("staging").name("lock", "refresh")`` is ``staging:lock:refresh``; the
empty namespace leaves the prefix out (``lock:refresh``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

NAMESPACE_PATTERN = re.compile(r"[A-Za-z0-9._-]{1,64}")
DEFAULT_NAMESPACE = "virtuoso"


@dataclass(frozen=True, slots=True)
class Keyspace:
    """One deployment's namespace. Raises ValueError for a namespace outside
    ``[A-Za-z0-9._-]{1,64}`` (the empty one is allowed: no prefix)."""

    namespace: str

    def __post_init__(self) -> None:
        if self.namespace and not NAMESPACE_PATTERN.fullmatch(self.namespace):
            raise ValueError(
                f"cache namespace {self.namespace!r} must match [A-Za-z0-9._-]{{1,64}}"
            )

    def name(self, *parts: str) -> str:
        """``<namespace>:<part>:<part>…`` (the parts alone for the empty namespace)."""
        return ":".join((self.namespace, *parts) if self.namespace else parts)

    def prefix(self, *parts: str) -> str:
        """``name(*parts) + ":"``: the head of a family of keys (``staging:session:``)."""
        return self.name(*parts) + ":"
