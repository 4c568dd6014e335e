"""Percentiles, latency summaries and the CPU time of the load generator itself."""

from __future__ import annotations

import math
import resource
from collections.abc import Iterable, Sequence


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The nearest-rank ``q``-th percentile (``q`` in 0..100) of ascending values.

    The smallest value such that at least ``q`` % of the values are ≤ it; ``q = 0``
    gives the minimum, ``q = 100`` the maximum. Raises ValueError on no values.
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"q must be within 0..100, not {q!r}")
    n = len(sorted_values)
    # round() so that 90 % of 10 values is rank 9, not 10 from 9.000000000000002
    rank = max(1, math.ceil(round(q * n / 100, 9)))
    return sorted_values[min(rank, n) - 1]


class LatencySummary(dict):
    """``{count, p50, p90, p99, max, mean}`` in milliseconds, rounded to 3 decimals.

    A dict (so it is JSON-able as is); with no values every figure but ``count`` is None.
    """

    KEYS = ("count", "p50", "p90", "p99", "max", "mean")

    @classmethod
    def from_ms(cls, values: Iterable[float]) -> LatencySummary:
        ordered = sorted(values)
        if not ordered:
            return cls(count=0, p50=None, p90=None, p99=None, max=None, mean=None)
        return cls(
            count=len(ordered),
            p50=round(percentile(ordered, 50), 3),
            p90=round(percentile(ordered, 90), 3),
            p99=round(percentile(ordered, 99), 3),
            max=round(ordered[-1], 3),
            mean=round(math.fsum(ordered) / len(ordered), 3),
        )


def cpu_seconds() -> float:
    """User + system CPU time of this process so far (every thread of it)."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def children_cpu_seconds() -> float:
    """User + system CPU time of this process's children that ended and were waited for.

    A child still running counts for nothing yet: take the difference around a
    ``subprocess.run`` (or another wait), not around a child that outlives it.
    """
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def raise_nofile_limit(needed: int) -> int:
    """Raises the soft RLIMIT_NOFILE to the hard limit when it is below ``needed``.

    Returns the soft limit in force afterwards (never lowers it; best effort).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY or soft >= needed:
        return soft
    target = hard
    if hard == resource.RLIM_INFINITY:  # Linux refuses an infinite NOFILE; ask for enough
        target = max(needed, soft)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError):
        return soft
    return target
