"""Counters of every cache lookup and computation, by tier, family and result.

They feed ``/api/cache/metrics`` and the adaptive TTL tuner; the Prometheus
layer reads the same events through ``listeners``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

TIERS = ("l1", "memcached", "redis")
RESULTS = ("hit", "miss", "stale", "error", "corrupt")
SERVED_OUTCOMES = ("hit", "stale", "miss", "error")  # what a caller gets

Listener = Callable[[str, str, str], None]  # (tier, family, result)
TimingListener = Callable[[str, str, float], None]  # (tier, operation, seconds)


@dataclass
class CacheStats:
    lookups: Counter[tuple[str, str, str]] = field(default_factory=Counter)
    computations: Counter[str] = field(default_factory=Counter)  # by family
    compute_failures: Counter[str] = field(default_factory=Counter)
    singleflight_waits: Counter[str] = field(default_factory=Counter)
    writes: Counter[str] = field(default_factory=Counter)
    changed_writes: Counter[str] = field(default_factory=Counter)  # new bytes differ
    invalidations: Counter[str] = field(default_factory=Counter)
    served: Counter[tuple[str, str]] = field(default_factory=Counter)  # (family, outcome)
    listeners: list[Listener] = field(default_factory=list)
    timing_listeners: list[TimingListener] = field(default_factory=list)

    def lookup(self, tier: str, family: str, result: str) -> None:
        self.lookups[(tier, family, result)] += 1
        for listener in self.listeners:
            listener(tier, family, result)

    def timed(self, tier: str, operation: str, seconds: float) -> None:
        """One operation (get, set) on one tier took ``seconds``."""
        for listener in self.timing_listeners:
            listener(tier, operation, seconds)

    def serve(self, family: str, outcome: str) -> None:
        """What the caller got: ``hit`` (fresh from any tier), ``stale``, ``miss`` (computed)
        or ``error`` (nothing to serve). The hit ratio the KPIs speak of is over these."""
        self.served[(family, outcome)] += 1

    def hit_ratio(self, family: str | None = None) -> float | None:
        rows = [(f, o, n) for (f, o), n in self.served.items() if family in (None, f)]
        total = sum(n for _, _, n in rows)
        hits = sum(n for _, o, n in rows if o in ("hit", "stale"))
        return None if total == 0 else hits / total

    def summary(self) -> dict:
        """Per tier and family: hits, misses, stale, errors, corrupt and the tier hit ratio."""
        tiers: dict[str, dict[str, dict[str, int | float | None]]] = {}
        for (tier, family, result), count in self.lookups.items():
            row = tiers.setdefault(tier, {}).setdefault(family, dict.fromkeys(RESULTS, 0))
            row[result] = int(row[result] or 0) + count
        for tier_rows in tiers.values():
            for row in tier_rows.values():
                looked = sum(int(row[r] or 0) for r in ("hit", "miss", "stale", "corrupt"))
                row["hit_ratio"] = round(int(row["hit"] or 0) / looked, 4) if looked else None
        families = sorted({f for f, _ in self.served} | set(self.computations))
        return {
            "tiers": tiers,
            "families": {
                family: {
                    "served": {o: n for (f, o), n in self.served.items() if f == family},
                    "hit_ratio": _rounded(self.hit_ratio(family)),
                    "computations": self.computations[family],
                    "compute_failures": self.compute_failures[family],
                    "singleflight_waits": self.singleflight_waits[family],
                    "writes": self.writes[family],
                    "changed_writes": self.changed_writes[family],
                    "invalidations": self.invalidations[family],
                }
                for family in families
            },
            "hit_ratio": _rounded(self.hit_ratio()),
        }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
