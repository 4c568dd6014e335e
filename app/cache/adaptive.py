"""Adaptive TTL: within each family's [min_ttl, max_ttl], tune the TTL from what
the cache measures, and keep every decision for ``/api/cache/metrics``.

Per tick, for each adaptive family, over the lookups and writes since the last tick:
- the data rarely changes (most rewrites carry the same bytes) while readers
  still miss → lengthen the TTL: the same bytes would have served them;
- the data changes on most rewrites and readers got stale copies → shorten it,
  so "fresh" means what it says.
A derived family's TTL is then held at or below its dependencies' current TTLs,
so tuning can never make a view outlive what it was computed from.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass

from app.cache.layered import LayeredCache

STEP = 1.5
RARE_CHANGE = 0.2
FREQUENT_CHANGE = 0.8
TARGET_HIT_RATIO = 0.995
STALE_SHARE = 0.05
MIN_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class TtlDecision:
    at_ms: int
    family: str
    old_ttl: float
    new_ttl: float
    reason: str
    hit_ratio: float | None
    change_ratio: float | None
    samples: int


class AdaptiveTtl:
    def __init__(
        self, cache: LayeredCache, clock: Callable[[], float] = time.time, keep: int = 100
    ) -> None:
        self.cache = cache
        self.clock = clock
        self.decisions: deque[TtlDecision] = deque(maxlen=keep)
        self._seen_served: dict[tuple[str, str], int] = {}
        self._seen_writes: dict[str, tuple[int, int]] = {}

    def tick(self) -> list[TtlDecision]:
        """One tuning round; returns the changes it made."""
        made = []
        for family in self.cache.policy.families:
            rules = self.cache.policy.family(family)
            served, writes, changed = self._since_last(family)
            if not rules.adaptive or sum(served.values()) < MIN_SAMPLES:
                continue
            decision = self._decide(family, served, writes, changed)
            if decision is not None:
                made.append(decision)
        made += self._hold_dependents_below_dependencies()
        self.decisions.extend(made)
        return made

    def report(self) -> dict:
        return {
            "ttl_seconds": dict(self.cache.ttl_seconds),
            "decisions": [asdict(d) for d in self.decisions],
        }

    def _since_last(self, family: str) -> tuple[dict[str, int], int, int]:
        stats = self.cache.stats
        served = {}
        for outcome in ("hit", "stale", "miss", "error"):
            total = stats.served[(family, outcome)]
            served[outcome] = total - self._seen_served.get((family, outcome), 0)
            self._seen_served[(family, outcome)] = total
        last_writes, last_changed = self._seen_writes.get(family, (0, 0))
        writes, changed = stats.writes[family], stats.changed_writes[family]
        self._seen_writes[family] = (writes, changed)
        return served, writes - last_writes, changed - last_changed

    def _decide(
        self, family: str, served: dict[str, int], writes: int, changed: int
    ) -> TtlDecision | None:
        total = sum(served.values())
        hit_ratio = (served["hit"] + served["stale"]) / total
        stale_share = served["stale"] / total
        change_ratio = changed / writes if writes else None
        ttl = self.cache.ttl_seconds[family]
        rules = self.cache.policy.family(family)
        if (
            change_ratio is not None
            and change_ratio <= RARE_CHANGE
            and hit_ratio < TARGET_HIT_RATIO
        ):
            new, reason = rules.clamp_ttl(ttl * STEP), "data rarely changes and readers missed"
        elif (
            change_ratio is not None
            and change_ratio >= FREQUENT_CHANGE
            and stale_share > STALE_SHARE
        ):
            new, reason = rules.clamp_ttl(ttl / STEP), "data changes on most rewrites; stale serves"
        else:
            return None
        if new == ttl:
            return None
        return self._apply(family, new, reason, hit_ratio, change_ratio, total)

    def _hold_dependents_below_dependencies(self) -> list[TtlDecision]:
        made = []
        for family in self.cache.policy.families:  # dependencies come first
            rules = self.cache.policy.family(family)
            ceiling = min((self.cache.ttl_seconds[d] for d in rules.depends_on), default=None)
            if ceiling is not None and self.cache.ttl_seconds[family] > ceiling:
                made.append(
                    self._apply(family, ceiling, "held at its dependencies' TTL", None, None, 0)
                )
        return made

    def _apply(
        self,
        family: str,
        new: float,
        reason: str,
        hit_ratio: float | None,
        change_ratio: float | None,
        samples: int,
    ) -> TtlDecision:
        decision = TtlDecision(
            at_ms=int(self.clock() * 1000),
            family=family,
            old_ttl=self.cache.ttl_seconds[family],
            new_ttl=new,
            reason=reason,
            hit_ratio=None if hit_ratio is None else round(hit_ratio, 4),
            change_ratio=None if change_ratio is None else round(change_ratio, 4),
            samples=samples,
        )
        self.cache.ttl_seconds[family] = new
        return decision
