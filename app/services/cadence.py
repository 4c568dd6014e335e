"""The refresher's schedule: one refresh start every interval, counted start to start.

A refresh that takes ``d`` seconds is followed by a wait of ``interval - d``, not
``interval``: with a 5 s interval and 2 s refreshes a snapshot still comes every 5 s
(waiting the whole interval after each refresh made it every 7 s). A refresh that
takes the interval or longer is followed by the next at once, and missed starts are
not made up: the schedule counts from the start that really happened, so a slow
exchange never makes refreshes pile up back to back.

Times come from a monotonic clock (seconds), injected so tests drive it by hand.
"""

from __future__ import annotations

import time
from collections.abc import Callable


class Cadence:
    """Start-to-start schedule of period ``interval`` (seconds, > 0).

    Call ``started()`` when a refresh starts and ``delay()`` when it ended: the
    seconds to wait before the next start (0 when the refresh overran). ``starts``
    counts the starts noted. Raises ValueError for an interval that is not positive.
    """

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        if not interval > 0:
            raise ValueError(f"the refresh interval must be positive, not {interval!r}")
        self.interval = interval
        self._clock = clock
        self._last_start: float | None = None
        self.starts = 0

    def started(self) -> float:
        """Notes a refresh starting now; returns the clock's reading."""
        self._last_start = self._clock()
        self.starts += 1
        return self._last_start

    def delay(self) -> float:
        """Seconds until the next start is due: ``interval`` after the last start,
        minus the time since; 0 when that is past (or no start was noted yet)."""
        if self._last_start is None:
            return 0.0
        return max(0.0, self._last_start + self.interval - self._clock())
