"""When a stream's data may be trusted: what was heard when, per batch and per key.

A batch (one subscribe request's topics, one watching task) is heard whenever a watch
of it returns; a key (a symbol, or a (symbol, timeframe) pair) only when its reader
finds new data for it in ccxt's cache. A key is live while it was heard within
``silent_after`` seconds (or its batch is busy taking a delivery: our time, not the
exchange's silence). Judging each key on its own matters: an exchange that forgets one
topic of a batch leaves the batch delivering on the others, and that topic's last value
must not pass for current.

A key is stalled when nothing came for it for ``stall_after`` seconds since it was last
heard or (re)subscribed: its reader subscribes it again (a quiet but healthy topic
then gets a fresh snapshot; a forgotten one comes back).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)


class StreamLiveness(Generic[K]):
    """Heard times per batch and per key on ``clock`` (monotonic seconds); see the
    module docstring. ``silent_after`` and ``stall_after``: seconds (> 0)."""

    def __init__(self, silent_after: float, stall_after: float, clock: Callable[[], float]) -> None:
        self.silent_after = silent_after
        self.stall_after = stall_after
        self.clock = clock
        self._batch_heard: dict[tuple[K, ...], float] = {}
        self._key_heard: dict[K, float] = {}
        self._key_since: dict[K, float] = {}  # (re)subscribed at: a stall counts from here
        self.busy: set[tuple[K, ...]] = set()  # batches taking a delivery

    # ----- what happened ------------------------------------------------------------

    def batch_heard(self, batch: tuple[K, ...], at: float) -> None:
        """A watch of ``batch`` returned at ``at``."""
        self._batch_heard[batch] = at

    def key_heard(self, key: K) -> None:
        """New data for ``key`` (now)."""
        self._key_heard[key] = self.clock()

    def subscribed(self, keys: Iterable[K]) -> None:
        """``keys`` were (re)subscribed now: their stall is counted from here."""
        now = self.clock()
        for key in keys:
            self._key_since[key] = now

    def ever_heard(self, batch: tuple[K, ...]) -> bool:
        """Whether a watch of ``batch`` ever returned."""
        return batch in self._batch_heard

    # ----- judgements ---------------------------------------------------------------

    def batch_live(self, batch: tuple[K, ...]) -> bool:
        """Whether ``batch`` delivered within ``silent_after``, or is busy delivering."""
        if batch in self.busy:
            return True
        heard = self._batch_heard.get(batch)
        return heard is not None and self.clock() - heard <= self.silent_after

    def key_live(self, key: K, batch: tuple[K, ...]) -> bool:
        """Whether ``key`` (of ``batch``) had new data within ``silent_after``, or its
        batch is busy delivering."""
        if batch in self.busy:
            return True
        heard = self._key_heard.get(key)
        return heard is not None and self.clock() - heard <= self.silent_after

    def stalled(self, batch: tuple[K, ...]) -> tuple[K, ...]:
        """The keys of ``batch`` with nothing new for ``stall_after`` since they were
        last heard or subscribed (never-subscribed keys are not judged)."""
        now = self.clock()
        return tuple(
            key
            for key in batch
            if key in self._key_since
            and now - max(self._key_heard.get(key, 0.0), self._key_since[key]) > self.stall_after
        )
