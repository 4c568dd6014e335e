"""The read-through cache over the tiers: L1 → Memcached → Redis backup → compute.

- A hit in a lower tier fills the tiers above it.
- Single-flight: concurrent readers of one missing key share one computation in
  this process; with Redis, a lock per key makes it one across replicas (the Redis
  tier is read again once the lock is taken: another replica may have stored the key
  since this one looked); views the pipeline owns are coordinated by the pipeline's
  own refresh lock instead.
- Stale-while-revalidate: past its TTL but within grace, an entry is served at
  once, marked stale, while one background refresh runs.
- Stale-if-error: when computing fails, the newest copy found in any tier is
  served, marked stale, until its ``max_stale``; after that ``NothingToServe``.
- XFetch (Vattani et al., VLDB 2015) refreshes hot on-demand keys early, with a
  probability that rises as expiry nears, so they never expire under traffic.
- ``spread`` (cache warming) makes every shared tier hold given entries and reads
  them back, naming the tiers that do not.
- Invalidation bumps a family's generation (part of every physical key) for the
  family and everything downstream, in every tier and, through pub/sub, on every
  replica.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass

from app.backends.errors import TierUnavailable
from app.backends.locks import RedisLock
from app.backends.tasks import cancel_and_wait
from app.cache.codec import CorruptEntry, compress_body_tail, decode, encode
from app.cache.entry import CacheEntry
from app.cache.generations import Generations
from app.cache.l1 import L1Cache
from app.cache.policy import CachePolicy
from app.cache.stats import CacheStats
from app.cache.tier import SharedTier
from app.observability.tracing import cache_lookup_span, record_cache_result

log = logging.getLogger(__name__)

XFETCH_BETA = 1.0
LOCK_WAIT_SECONDS = 10.0
TRACKED_ETAGS = 10_000


@dataclass(frozen=True, slots=True)
class Computed:
    """What a compute function produces: the JSON bytes and when its data was generated."""

    body: bytes
    generated_at_ms: int


# A compute function returns the value, or None when its producer stored it in the
# cache itself (the pipeline publishes every view of a snapshot at once).
Compute = Callable[[], Awaitable[Computed | None]]


@dataclass(frozen=True, slots=True)
class CacheRead:
    """What :meth:`LayeredCache.read` found: the entry, whether it is served stale
    (past its TTL, in grace or as stale-if-error) and the tier that answered."""

    entry: CacheEntry
    stale: bool
    tier: str  # l1 | memcached | redis | computed


class NothingToServe(Exception):
    """Computing failed and no copy young enough for stale-if-error exists."""


class LayeredCache:
    """The read-through cache of the module docstring over an L1 tier and the optional
    shared ones. Keys are logical (``app.cache.keys``); each read names its family,
    whose policy (``config/cache.yaml``) gives the TTL, grace and max-stale. A shared tier
    that fails is skipped (``TierUnavailable`` is counted, never raised to readers)."""

    def __init__(
        self,
        policy: CachePolicy,
        l1: L1Cache,
        *,
        memcached: SharedTier | None = None,
        backup: SharedTier | None = None,
        locks: RedisLock | None = None,
        generations: Generations | None = None,
        stats: CacheStats | None = None,
        clock: Callable[[], float] = time.time,
        rng: Callable[[], float] = random.random,
        single_flight: bool = True,
        compression: bool = True,
        refresh_ahead: bool = True,
    ) -> None:
        """The last three switch optimisations off for the benchmark's ablation."""
        self.policy = policy
        self.single_flight = single_flight
        self.compression = compression
        self.refresh_ahead = refresh_ahead
        self.l1 = l1
        self.memcached = memcached
        self.backup = backup
        self.locks = locks
        self.generations = generations or Generations()
        self.stats = stats or CacheStats()
        self.clock = clock
        self.rng = rng
        self.ttl_seconds: dict[str, float] = {f: policy.family(f).ttl for f in policy.families}
        self._flights: dict[str, asyncio.Task[CacheEntry]] = {}
        self._background: set[asyncio.Task[CacheEntry]] = set()
        self._last_etags: OrderedDict[str, str] = OrderedDict()  # change tracking, bounded

    # --- reading ------------------------------------------------------------------------

    def physical_key(self, key: str, family: str) -> str:
        """The key as stored: the logical key with its family's generation
        (``<key>#g<n>``; the bare key at generation 0)."""
        generation = self.generations.get(family)
        return key if generation == 0 else f"{key}#g{generation}"

    async def read(self, key: str, family: str, compute: Compute) -> CacheRead:
        """The entry of ``key``: fresh from the first tier holding it, stale within
        grace (one refresh starts behind it), else computed once however many readers
        wait. Raises :class:`NothingToServe` when computing fails and no copy is under
        its max-stale."""
        physical = self.physical_key(key, family)
        now = self.now_ms()
        found, tier = await self._lookup(physical, family, now)
        if found is not None and found.is_fresh(now):
            self.stats.serve(family, "hit")
            self._maybe_refresh_early(physical, key, family, found, compute, now)
            return CacheRead(found, stale=False, tier=tier)
        if found is not None and found.in_grace(now):
            self.stats.serve(family, "stale")
            self._refresh_in_background(physical, key, family, compute, found)
            return CacheRead(found, stale=True, tier=tier)
        try:
            entry = await self._compute_once(physical, key, family, compute, found)
        except Exception as error:
            if found is not None and found.usable_if_error(now):
                self.stats.serve(family, "stale")
                return CacheRead(found, stale=True, tier=tier)
            self.stats.serve(family, "error")
            raise NothingToServe(f"{key}: {error}") from error
        self.stats.serve(family, "miss")
        return CacheRead(entry, stale=not entry.is_fresh(self.now_ms()), tier="computed")

    async def peek(self, key: str, family: str) -> CacheEntry | None:
        """The best copy in any tier, without computing (readiness checks)."""
        entry, _ = await self._lookup(self.physical_key(key, family), family, self.now_ms())
        return entry

    async def _lookup(self, physical: str, family: str, now: int) -> tuple[CacheEntry | None, str]:
        """The newest copy and its tier: L1 first; the shared tiers only when L1 has
        nothing fresh. Fills the tiers above the one it came from."""
        with cache_lookup_span("l1", family) as span:
            started = time.perf_counter()
            best = self.l1.get(physical)
            self.stats.timed("l1", "get", time.perf_counter() - started)
            result = _result(best, now)
            record_cache_result(span, result)
        best_tier = "l1"
        self.stats.lookup("l1", family, result)
        if best is not None and best.is_fresh(now):
            return best, best_tier
        for tier in (self.memcached, self.backup):
            if tier is None:
                continue
            entry = await self._tier_get(tier, physical, family, now)
            if entry is None or (
                best is not None and entry.generated_at_ms <= best.generated_at_ms
            ):
                continue
            best, best_tier = entry, tier.name
            await self._fill_above(tier, physical, family, entry)
            if entry.is_fresh(now):
                break
        return best, best_tier

    async def _tier_get(
        self, tier: SharedTier, physical: str, family: str, now: int, *, serving: bool = True
    ) -> CacheEntry | None:
        """The entry in ``tier``, traced; counted in the tiers' hit ratios when
        ``serving`` (a reader's look-up, not a check under the lock)."""
        with cache_lookup_span(tier.name, family) as span:
            entry, result = await self._tier_read(tier, physical, now)
            record_cache_result(span, "error" if result == "corrupt" else result)
        if serving:
            self.stats.lookup(tier.name, family, result)
        return entry

    async def _tier_read(
        self, tier: SharedTier, physical: str, now: int
    ) -> tuple[CacheEntry | None, str]:
        """The entry in ``tier`` and the lookup's result (hit, stale, miss, error, corrupt)."""
        if not tier.available:
            return None, "error"
        started = time.perf_counter()
        try:
            raw = (await tier.get_many([physical])).get(physical)
        except TierUnavailable:
            return None, "error"
        finally:
            self.stats.timed(tier.name, "get", time.perf_counter() - started)
        if raw is None:
            return None, "miss"
        try:
            entry = decode(raw)
        except CorruptEntry:
            return None, "corrupt"
        return entry, _result(entry, now)

    async def _fill_above(
        self, source: SharedTier, physical: str, family: str, entry: CacheEntry
    ) -> None:
        self.l1.put(physical, family, entry)
        if source is self.backup and self.memcached is not None and entry.is_fresh(self.now_ms()):
            await self._tier_set(self.memcached, {physical: encode(entry)}, self._l2_ttl(family))

    # --- computing ----------------------------------------------------------------------

    async def _compute_once(
        self, physical: str, key: str, family: str, compute: Compute, seen: CacheEntry | None
    ) -> CacheEntry:
        """``seen``: the copy the caller found (None: none), which a computation replaces."""
        if not self.single_flight:  # ablation: every caller computes
            return await self._run_compute(physical, key, family, compute)
        task = self._flights.get(physical)
        if task is None:
            stored = self._compute_and_store(physical, key, family, compute, seen)
            task = asyncio.create_task(stored)
            self._flights[physical] = task
            task.add_done_callback(lambda done: self._forget_flight(physical, done))
        else:
            self.stats.singleflight_waits[family] += 1
        return await asyncio.shield(task)

    def _forget_flight(self, physical: str, task: asyncio.Task[CacheEntry]) -> None:
        if self._flights.get(physical) is task:
            del self._flights[physical]

    async def _compute_and_store(
        self, physical: str, key: str, family: str, compute: Compute, seen: CacheEntry | None
    ) -> CacheEntry:
        lease = await self._lock(physical, family)
        try:
            if lease is False:  # another replica computed it while we waited
                landed, _ = await self._lookup(physical, family, self.now_ms())
                if landed is not None and landed.is_fresh(self.now_ms()):
                    return landed
            elif lease is not None:
                stored = await self._stored_meanwhile(physical, family, seen)
                if stored is not None:
                    return stored
            return await self._run_compute(physical, key, family, compute)
        finally:
            if lease not in (None, False) and self.locks is not None:
                with contextlib.suppress(TierUnavailable):  # the lock expires on its own
                    await self.locks.release(lease)

    async def _stored_meanwhile(
        self, physical: str, family: str, seen: CacheEntry | None
    ) -> CacheEntry | None:
        """A fresh copy newer than ``seen`` in the Redis tier (where every computation
        lands), else None: a replica may compute, store and release between this one's
        look-up and its lock. One GET, not counted as a serving look-up."""
        if self.backup is None:
            return None
        stored = await self._tier_get(self.backup, physical, family, self.now_ms(), serving=False)
        if stored is None or not stored.is_fresh(self.now_ms()):
            return None
        if seen is not None and stored.generated_at_ms <= seen.generated_at_ms:
            return None  # the copy this computation replaces (an early refresh)
        await self._fill_above(self.backup, physical, family, stored)
        return stored

    async def _lock(self, physical: str, family: str):
        """A lease when this replica should compute; False after waiting for another
        replica's computation; None when no cross-replica lock applies."""
        if self.locks is None or self.policy.family(family).owner == "pipeline":
            return None
        name = f"compute:{physical}"
        try:
            lease = await self.locks.acquire(name, ttl_ms=int(LOCK_WAIT_SECONDS * 1000))
            if lease is not None:
                return lease
            self.stats.singleflight_waits[family] += 1
            await self.locks.wait_for_release(name, LOCK_WAIT_SECONDS)
        except TierUnavailable:
            return None  # Redis is down: single-flight within this process only
        return False

    async def _run_compute(
        self, physical: str, key: str, family: str, compute: Compute
    ) -> CacheEntry:
        started = time.perf_counter()
        self.stats.computations[family] += 1
        try:
            computed = await compute()
        except Exception:
            self.stats.compute_failures[family] += 1
            raise
        if computed is None:  # the producer stored it: read it back
            stored = await self.peek(key, family)
            if stored is None:
                raise LookupError(f"{key} was not produced")
            return stored
        elapsed_ms = (time.perf_counter() - started) * 1000
        entry = self.make_entry(family, computed.body, computed.generated_at_ms, elapsed_ms)
        await self.write_many({key: (family, entry)})
        return entry

    def _refresh_in_background(
        self, physical: str, key: str, family: str, compute: Compute, seen: CacheEntry
    ) -> None:
        if physical in self._flights:
            return
        task = asyncio.ensure_future(self._compute_once(physical, key, family, compute, seen))
        self._background.add(task)
        task.add_done_callback(self._background_done)

    def _background_done(self, task: asyncio.Task[CacheEntry]) -> None:
        self._background.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("background refresh failed: %s", task.exception())

    def _maybe_refresh_early(
        self, physical: str, key: str, family: str, entry: CacheEntry, compute: Compute, now: int
    ) -> None:
        """XFetch: refresh when now − δ·β·ln(rand) ≥ expiry (δ = compute time)."""
        if not self.refresh_ahead or self.policy.family(family).owner != "on_demand":
            return
        delta = max(entry.compute_ms, 1.0)
        if now - delta * XFETCH_BETA * math.log(max(self.rng(), 1e-12)) >= entry.expires_at_ms:
            self._refresh_in_background(physical, key, family, compute, entry)

    # --- writing ------------------------------------------------------------------------

    def make_entry(
        self, family: str, body: bytes, generated_at_ms: int, compute_ms: float = 0.0
    ) -> CacheEntry:
        """An entry of ``family`` for ``body`` (JSON bytes) generated at
        ``generated_at_ms`` (epoch ms), with the family's TTL (adaptive TTLs included),
        grace and max-stale, and its zstd copy when the family is compressed.
        ``KeyError`` for a family the policy does not know."""
        rules = self.policy.family(family)
        return CacheEntry(
            body=body,
            etag=CacheEntry.etag_of(body),
            generated_at_ms=generated_at_ms,
            ttl_ms=int(self.ttl_seconds[family] * 1000),
            grace_ms=int(rules.grace * 1000),
            max_stale_ms=int(rules.max_stale * 1000),
            compute_ms=compute_ms,
            compressed=compress_body_tail(body) if rules.compress and self.compression else None,
        )

    async def write_many(self, items: Mapping[str, tuple[str, CacheEntry]]) -> None:
        """Stores entries (by logical key) in every tier."""
        by_ttl: dict[tuple[int, int], dict[str, bytes]] = {}
        for key, (family, entry) in items.items():
            physical = self.physical_key(key, family)
            self._count_write(physical, family, entry)
            self.l1.put(physical, family, entry)
            ttls = (self._l2_ttl(family), self._backup_ttl(family))
            by_ttl.setdefault(ttls, {})[physical] = encode(entry)
        writes = []
        for (l2_ttl, backup_ttl), encoded in by_ttl.items():
            if self.memcached is not None:
                writes.append(self._tier_set(self.memcached, encoded, l2_ttl))
            if self.backup is not None:
                writes.append(self._tier_set(self.backup, encoded, backup_ttl))
        await asyncio.gather(*writes)

    async def spread(self, items: Mapping[str, tuple[str, CacheEntry]]) -> dict[str, list[str]]:
        """Makes every shared tier hold each entry (by logical key) or a newer copy,
        and reads what it wrote back: the keys some tier does not hold then, each with
        those tiers' names (a tier that is down holds none). An empty answer: every
        key is in every shared tier. Copies already there (and readable, and at least
        as new) are left alone; missing, unreadable or older ones are written."""
        physicals = {
            self.physical_key(key, family): (key, family, entry)
            for key, (family, entry) in items.items()
        }
        missing: dict[str, list[str]] = {}
        for tier in (self.memcached, self.backup):
            if tier is None:
                continue
            for physical in await self._spread_to(tier, physicals):
                missing.setdefault(physicals[physical][0], []).append(tier.name)
        return missing

    async def _spread_to(
        self, tier: SharedTier, physicals: Mapping[str, tuple[str, str, CacheEntry]]
    ) -> list[str]:
        """The physical keys ``tier`` does not hold after writing those it lacked."""
        wanted = {physical: entry for physical, (_, _, entry) in physicals.items()}
        lacking = await self._lacking(tier, wanted)
        by_ttl: dict[int, dict[str, bytes]] = {}
        for physical in lacking:
            _, family, entry = physicals[physical]
            ttl = self._l2_ttl(family) if tier is self.memcached else self._backup_ttl(family)
            by_ttl.setdefault(ttl, {})[physical] = encode(entry)
        for ttl, encoded in by_ttl.items():
            await self._tier_set(tier, encoded, ttl)
        return await self._lacking(tier, {physical: wanted[physical] for physical in lacking})

    async def _lacking(self, tier: SharedTier, wanted: Mapping[str, CacheEntry]) -> list[str]:
        """The keys whose copy in ``tier`` is absent, unreadable or older than wanted
        (all of them while the tier cannot be read)."""
        if not wanted:
            return []
        if not tier.available:
            return list(wanted)
        try:
            found = await tier.get_many(list(wanted))
        except TierUnavailable:
            return list(wanted)
        return [
            physical
            for physical, entry in wanted.items()
            if not _holds(found.get(physical), entry.generated_at_ms)
        ]

    def _count_write(self, physical: str, family: str, entry: CacheEntry) -> None:
        """Counts writes and those whose bytes differ from the key's previous write
        (how often the data really changes: an input of adaptive TTL)."""
        self.stats.writes[family] += 1
        if self._last_etags.get(physical) != entry.etag:
            self.stats.changed_writes[family] += 1
        self._last_etags[physical] = entry.etag
        self._last_etags.move_to_end(physical)
        if len(self._last_etags) > TRACKED_ETAGS:
            self._last_etags.popitem(last=False)

    async def _tier_set(self, tier: SharedTier, items: dict[str, bytes], ttl: int) -> None:
        if not tier.available:
            return
        started = time.perf_counter()
        with contextlib.suppress(
            TierUnavailable
        ):  # the tier logs its own outage once; L1 and the other tier still hold it
            await tier.set_many(items, ttl)
        self.stats.timed(tier.name, "set", time.perf_counter() - started)

    def _l2_ttl(self, family: str) -> int:
        """Memcached keeps an entry while it is servable (TTL + grace)."""
        return max(1, math.ceil(self.ttl_seconds[family] + self.policy.family(family).grace))

    def _backup_ttl(self, family: str) -> int:
        """Redis keeps its backup copy for the family's ``backup_ttl``."""
        return int(self.policy.family(family).backup_ttl)

    # --- invalidation -------------------------------------------------------------------

    async def invalidate_families(self, families: Iterable[str]) -> list[str]:
        """Invalidates the families and everything downstream, in every tier here
        (other replicas follow through the generations' pub/sub)."""
        affected: list[str] = []
        for family in families:
            for name in self.policy.downstream(family):
                if name not in affected:
                    affected.append(name)
        await self.generations.bump(affected)
        self.l1.delete_families(affected)
        for name in affected:
            self.stats.invalidations[name] += 1
        return affected

    async def invalidate_key(self, key: str, family: str) -> list[str]:
        """Deletes one key in every tier, then cascades to the families downstream of it."""
        physical = self.physical_key(key, family)
        self.l1.delete(physical)
        for tier in (self.memcached, self.backup):
            if tier is not None and tier.available:
                with contextlib.suppress(TierUnavailable):
                    await tier.delete_many([physical])
        self.stats.invalidations[family] += 1
        downstream = [f for f in self.policy.downstream(family) if f != family]
        return [family, *await self.invalidate_families(downstream)] if downstream else [family]

    def drop_local(self, families: Iterable[str]) -> None:
        """Another replica published newer entries of these families: forget our copies."""
        self.l1.delete_families(families)

    def now_ms(self) -> int:
        """The cache's clock in epoch milliseconds."""
        return int(self.clock() * 1000)

    async def close(self) -> None:
        """Cancels the background refreshes and computations in flight and waits
        for them to end (their errors are dropped)."""
        await cancel_and_wait([*self._background, *self._flights.values()])


def _holds(raw: bytes | None, generated_at_ms: int) -> bool:
    """True when ``raw`` decodes to an entry generated at ``generated_at_ms`` or later."""
    if raw is None:
        return False
    try:
        return decode(raw).generated_at_ms >= generated_at_ms
    except CorruptEntry:
        return False


def _result(entry: CacheEntry | None, now: int) -> str:
    if entry is None:
        return "miss"
    if entry.is_fresh(now):
        return "hit"
    return "stale"
