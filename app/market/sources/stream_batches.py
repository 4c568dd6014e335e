"""What every exchange stream reader shares (tickers, candles, order books, trades):
subscriptions split into batches, one watching task per batch, back-off after a failed
watch, and liveness measured per batch.

Batches: ccxt sends all the topics of one ``watch_*_for_symbols`` call in one subscribe
request, and Bybit's spot stream refuses a request with more than 10 topics, so the
keys (symbols, or (symbol, timeframe) pairs) are split into batches of at most
``topics_per_request``, each watched by its own task.

Failures: a watch that raises (a dropped connection, a refused subscription, a reply
that never came) is counted in ``errors`` and the batch is watched again after a
jittered exponential back-off; ccxt reconnects on the next watch. One log line per
failure episode, one when it delivers again (counted in ``reconnects``).

Liveness: a stream can go silent while its connection still answers pings; ccxt then
waits forever without an error. So a batch is live only while it has delivered within
``silent_after`` seconds, and whoever reads a stream asks ``is_live()`` (or the
per-batch ``batch_live``) before trusting what it holds: a frozen stream is never
current data.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any, Generic, TypeVar

log = logging.getLogger(__name__)

TOPICS_PER_REQUEST = 10  # Bybit spot: "args size >10" beyond this

K = TypeVar("K", bound=Hashable)


def split_batches(keys: Sequence[K], size: int) -> list[tuple[K, ...]]:
    """``keys`` in order, cut into tuples of at most ``size`` (≥ 1)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]


class BatchedStream(Generic[K]):
    """Watches ``keys`` in batches until ``stop`` (see the module docstring).

    A subclass says how to watch one batch (``_watch``: one ccxt ``watch_*`` call that
    returns when the exchange sent something for it) and what to do once it delivered
    (``_deliver``: read ccxt's cache); ``_failed`` hears of each failed watch (or
    failed delivery) of a batch, and ``_label`` names a key for ``silent_symbols``.

    ``retry``: the first and longest wait (seconds) before watching a failed batch
    again; ``clock``: monotonic seconds. Counters: ``errors`` (failed watches or
    deliveries), ``reconnects`` (batches delivering again after failing),
    ``deliveries`` (watches that returned).
    """

    kind = "stream"
    """What is watched, for log lines and task names."""

    def __init__(
        self,
        keys: Sequence[K],
        *,
        topics_per_request: int = TOPICS_PER_REQUEST,
        silent_after: float = 5.0,
        retry: tuple[float, float] = (0.5, 10.0),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if topics_per_request < 1 or silent_after <= 0:
            raise ValueError("topics_per_request >= 1 and silent_after > 0")
        self.silent_after = silent_after
        self.retry = retry
        self.clock = clock
        self.batches: list[tuple[K, ...]] = split_batches(list(keys), topics_per_request)
        self.errors = 0
        self.reconnects = 0
        self.deliveries = 0
        self._batch_of: dict[K, tuple[K, ...]] = {k: b for b in self.batches for k in b}
        self._heard: dict[tuple[K, ...], float] = {}
        self._busy: set[tuple[K, ...]] = set()  # batches taking a delivery
        self._tasks: list[asyncio.Task[None]] = []

    # ----- what a subclass says -------------------------------------------------------

    async def _watch(self, batch: tuple[K, ...]) -> None:
        """One ccxt watch of ``batch``: returns when something arrived; raises on failure."""
        raise NotImplementedError

    async def _deliver(self, batch: tuple[K, ...], recovered: bool) -> None:
        """Take what ``batch`` delivered from ccxt's cache. ``recovered``: the batch
        had failed, or its watch waited longer than ``silent_after``, before this
        delivery (what came before may be incomplete); the first delivery is one too.
        Raising counts as a failure of the batch."""
        raise NotImplementedError

    def _failed(self, batch: tuple[K, ...]) -> None:
        """A watch or delivery of ``batch`` failed (default: nothing to do)."""

    def _label(self, key: K) -> str:
        """The canonical symbol ``key`` is about (for ``silent_symbols``)."""
        return str(key)

    # ----- running ---------------------------------------------------------------------

    def start(self) -> None:
        """One watching task per batch (once)."""
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._run(batch), name=f"{self.kind} {batch[0]}…")
                for batch in self.batches
            ]

    async def stop(self) -> None:
        """Stops watching (the exchange is the caller's to close)."""
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # ----- liveness --------------------------------------------------------------------

    def batch_live(self, batch: tuple[K, ...]) -> bool:
        """Whether ``batch`` delivered within ``silent_after`` seconds, or is still
        taking its last delivery (e.g. a REST backfill: our time, not the exchange's
        silence; what the exchange sends meanwhile waits in ccxt's cache)."""
        if batch in self._busy:
            return True
        heard = self._heard.get(batch)
        return heard is not None and self.clock() - heard <= self.silent_after

    def key_live(self, key: K) -> bool:
        """Whether the batch of ``key`` is live (False for an unknown key)."""
        batch = self._batch_of.get(key)
        return batch is not None and self.batch_live(batch)

    def is_live(self) -> bool:
        """Whether every batch delivered within ``silent_after`` seconds."""
        return all(self.batch_live(batch) for batch in self.batches)

    def silent_symbols(self) -> list[str]:
        """Canonical symbols (sorted, once each) of the batches not live."""
        return sorted(
            {self._label(key) for b in self.batches if not self.batch_live(b) for key in b}
        )

    # ----- the loop --------------------------------------------------------------------

    async def _run(self, batch: tuple[K, ...]) -> None:
        delay = self.retry[0]
        failing = False
        while True:
            try:
                asked = self.clock()
                await self._watch(batch)
                self.deliveries += 1
                now = self.clock()
                recovered = failing or batch not in self._heard or now - asked > self.silent_after
                self._heard[batch] = now
                self._busy.add(batch)
                try:
                    await self._deliver(batch, recovered)
                finally:
                    self._busy.discard(batch)
            except asyncio.CancelledError:
                raise
            except Exception as error:  # ccxt's NetworkError, ExchangeError, …
                self.errors += 1
                self._failed(batch)
                if not failing:  # one line per episode
                    log.warning(
                        "%s stream %s… failed (%s); watching again", self.kind, batch[0], error
                    )
                failing = True
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(self.retry[1], delay * 2)
                continue
            if failing:
                log.info("%s stream %s… delivers again", self.kind, batch[0])
                self.reconnects += 1
            failing, delay = False, self.retry[0]


class SymbolStream(BatchedStream[str]):
    """A stream with one topic per symbol (tickers, books, trades) on ``exchange`` (a
    ccxt.pro instance whose markets are loaded): ``symbols`` maps each ccxt symbol to
    its canonical one (``_ccxt_of`` the other way); the batching arguments are
    ``BatchedStream``'s."""

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        *,
        topics_per_request: int,
        silent_after: float,
        retry: tuple[float, float],
        clock: Callable[[], float],
    ) -> None:
        super().__init__(
            sorted(symbols),
            topics_per_request=topics_per_request,
            silent_after=silent_after,
            retry=retry,
            clock=clock,
        )
        self.exchange = exchange
        self.symbols = dict(symbols)
        self._ccxt_of = {canonical: name for name, canonical in self.symbols.items()}

    def _label(self, key: str) -> str:
        return self.symbols[key]
