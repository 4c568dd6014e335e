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
failure episode, one when it delivers again (counted in ``reconnects``). A connection
that closes while no watch of a batch is pending (between two watches, or during a
delivery) fails no watch: ccxt only drops it, and the next watch would dial anew at
once, so a gateway that answers once and hangs up would be dialled in a tight loop.
So the connections of the reader's exchange instance open when a batch's watch
returned are kept, and the batch's next turn fails (``ConnectionLost``), backing off as
if a watch had raised, when one of them is gone; a reader's instance speaks to one
stream URL (``ExchangeStreams`` gives each reader its own), so those are the batch's
connection. A delivery that fails, and the reader's own reset (``_reset_connections``),
forget what was kept: neither counts twice.

Liveness: a stream can go silent while its connection still answers pings; ccxt then
waits forever without an error. So a batch is live only while it has delivered within
``silent_after`` seconds, and whoever reads a stream asks ``is_live()`` (or the
per-batch ``batch_live``) before trusting what it holds: a frozen stream is never
current data.

Stalls: a watch that brings nothing for ``resubscribe_after`` seconds (the exchange
forgot the subscription, or the connection is alive but dead to data) is given up and
the batch subscribed again: its topics are unsubscribed (``_unwatch``) so that the next
watch sends a fresh subscribe request. If the exchange does not acknowledge the
unsubscribe either, the reader's connections are reset (every pending watch on them
fails with a ``NetworkError``, so each batch watches again and ccxt dials anew).

A watch that ends cancelled while nobody cancelled its task (ccxt cancels the pending
futures of a connection it closes) is a failure of the batch like any other: the
task must outlive every connection it reads.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from ccxt.base.errors import ExchangeError, NetworkError

from app.backends.tasks import cancel_and_wait
from app.market.sources.stream_liveness import StreamLiveness

log = logging.getLogger(__name__)

TOPICS_PER_REQUEST = 10  # Bybit spot: "args size >10" beyond this
UNWATCH_TIMEOUT = 5.0
"""Seconds to wait at least for the exchange to acknowledge an unsubscribe."""

K = TypeVar("K", bound=Hashable)


class ConnectionLost(NetworkError):
    """The connection a batch last delivered on closed before its next watch."""


def split_batches(keys: Sequence[K], size: int) -> list[tuple[K, ...]]:
    """``keys`` in order, cut into tuples of at most ``size`` (≥ 1)."""
    if size < 1:
        raise ValueError("batch size must be >= 1")
    return [tuple(keys[i : i + size]) for i in range(0, len(keys), size)]


@dataclass(frozen=True)
class Batching:
    """How a reader batches, judges and retries its watches (see the module docstring).

    ``topics_per_request``: keys per batch (≥ 1); ``silent_after``: seconds without a
    delivery after which a batch is not live (> 0); ``resubscribe_after``: seconds a
    watch may bring nothing before the batch is subscribed again (default three times
    ``silent_after``; ≥ ``silent_after``); ``retry``: the first and longest wait
    (seconds) before watching a failed batch again; ``unwatch_timeout``: seconds to
    wait at least for the exchange to acknowledge an unsubscribe (> 0; the wait is
    never shorter than ``silent_after``); ``clock``: monotonic seconds.

    Raises ValueError for a bound out of range.
    """

    topics_per_request: int = TOPICS_PER_REQUEST
    silent_after: float = 5.0
    resubscribe_after: float | None = None
    retry: tuple[float, float] = (0.5, 10.0)
    unwatch_timeout: float = UNWATCH_TIMEOUT
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    def __post_init__(self) -> None:
        if self.topics_per_request < 1 or not self.silent_after > 0:
            raise ValueError("topics_per_request >= 1 and silent_after > 0")
        if not self.unwatch_timeout > 0:
            raise ValueError("unwatch_timeout > 0")
        if self.resubscribe_after is not None and not self.resubscribe_after >= self.silent_after:
            raise ValueError("resubscribe_after >= silent_after")

    @property
    def stall_after(self) -> float:
        """Seconds a watch may bring nothing before its batch is subscribed again."""
        return self.resubscribe_after or 3 * self.silent_after


DEFAULT_BATCHING = Batching()


class BatchedStream(Generic[K]):
    """Watches ``keys`` in batches on ``exchange`` (a ccxt.pro instance of this reader
    alone: a stall may reset its connections) until ``stop`` (see the module
    docstring); ``batching``: the bounds, as ``Batching``.

    A subclass says how to watch one batch (``_watch``: one ccxt ``watch_*`` call that
    returns when the exchange sent something for it) and what to do once it delivered
    (``_deliver``: read ccxt's cache, calling ``_heard(key)`` for each key with new
    data); ``_failed`` hears of each failed watch (or failed delivery) of a batch and of
    stalled keys, ``_unwatch`` unsubscribes keys, and ``_label`` names a key for
    ``silent_symbols``.

    Counters: ``errors`` (failed watches or deliveries, and connections lost between
    two watches of a batch), ``reconnects`` (batches
    delivering again after failing), ``deliveries`` (watches that
    returned), ``resubscribes`` (stalled batches or keys subscribed again), ``resets``
    (connections reset because an unsubscribe went unanswered), ``splits`` (batches cut
    in two after the exchange refused them, to isolate the topic it refuses).
    """

    kind = "stream"
    """What is watched, for log lines and task names."""

    def __init__(self, exchange: Any, keys: Sequence[K], batching: Batching) -> None:
        self.exchange = exchange
        self.silent_after = batching.silent_after
        self.stall_after = batching.stall_after
        self.retry = batching.retry
        self.unwatch_timeout = max(batching.unwatch_timeout, batching.silent_after)
        self.clock = batching.clock
        self.batches: list[tuple[K, ...]] = split_batches(list(keys), batching.topics_per_request)
        self.errors = 0
        self.reconnects = 0
        self.deliveries = 0
        self.resubscribes = 0
        self.resets = 0
        self.splits = 0
        self.liveness: StreamLiveness[K] = StreamLiveness(
            self.silent_after, self.stall_after, self.clock
        )
        self._batch_of: dict[K, tuple[K, ...]] = {k: b for b in self.batches for k in b}
        self._tasks: list[asyncio.Task[None]] = []
        self._delay: dict[tuple[K, ...], float] = {}  # the wait before a failed batch's next watch
        # the connections (URL, ccxt client) open when each batch's last watch returned
        self._delivered_on: dict[tuple[K, ...], tuple[tuple[str, Any], ...]] = {}

    # ----- what a subclass says -------------------------------------------------------

    async def _watch(self, batch: tuple[K, ...]) -> None:
        """One ccxt watch of ``batch``: returns when something arrived; raises on failure."""
        raise NotImplementedError

    async def _deliver(self, batch: tuple[K, ...], recovered: bool) -> None:
        """Take what ``batch`` delivered from ccxt's cache, calling ``_heard`` for each
        key with new data. ``recovered``: the batch had failed, or its watch waited
        longer than ``silent_after``, before this delivery (what came before may be
        incomplete); the first delivery is one too. Raising counts as a failure."""
        raise NotImplementedError

    async def _unwatch(self, keys: tuple[K, ...]) -> None:
        """Unsubscribe ``keys``' topics (ccxt ``un_watch_*``): returns once the exchange
        acknowledged; their batch's next watch subscribes them again."""
        raise NotImplementedError

    def _failed(self, keys: tuple[K, ...]) -> None:
        """A watch or delivery of the batch of ``keys`` failed, or these keys stalled and
        are subscribed again (default: nothing)."""

    def _label(self, key: K) -> str:
        """The canonical symbol ``key`` is about (for ``silent_symbols``)."""
        return str(key)

    def _heard(self, key: K) -> None:
        """The reader found new data for ``key`` (see ``stream_liveness``)."""
        self.liveness.key_heard(key)

    # ----- running ---------------------------------------------------------------------

    def start(self) -> None:
        """One watching task per batch (once)."""
        if not self._tasks:
            for batch in self.batches:
                self._spawn(batch)

    def _spawn(self, batch: tuple[K, ...]) -> None:
        task = asyncio.create_task(self._run(batch), name=f"{self.kind} {batch[0]}…")
        self._tasks.append(task)

    async def stop(self) -> None:
        """Stops watching (the exchange is the caller's to close)."""
        tasks, self._tasks = self._tasks, []
        await cancel_and_wait(tasks)
        self._delivered_on.clear()

    # ----- liveness --------------------------------------------------------------------

    def batch_live(self, batch: tuple[K, ...]) -> bool:
        """Whether ``batch`` delivered within ``silent_after`` seconds, or is still
        taking its last delivery (e.g. a REST backfill: our time, not the exchange's
        silence; what the exchange sends meanwhile waits in ccxt's cache)."""
        return self.liveness.batch_live(batch)

    def key_live(self, key: K) -> bool:
        """Whether ``key`` had new data within ``silent_after`` seconds (or its batch is
        taking a delivery); False for an unknown key."""
        batch = self._batch_of.get(key)
        return batch is not None and self.liveness.key_live(key, batch)

    def is_live(self) -> bool:
        """Whether every batch delivered within ``silent_after`` seconds."""
        return all(self.batch_live(batch) for batch in self.batches)

    def backoff(self, batch: tuple[K, ...]) -> float:
        """Seconds (before jitter) the batch waits after its next failure: doubling from
        ``retry[0]`` to ``retry[1]`` while it fails, and back to ``retry[0]`` only once it
        has kept delivering for ``retry[1]`` seconds since its first delivery after the
        failure — a connection that delivers once and drops again (a reconnect storm)
        does not reset it, however slowly it reconnects."""
        return self._delay.get(batch, self.retry[0])

    def silent_symbols(self) -> list[str]:
        """Canonical symbols (sorted, once each) of the keys not live."""
        return sorted({self._label(key) for key in self._batch_of if not self.key_live(key)})

    # ----- the loop --------------------------------------------------------------------

    async def _run(self, batch: tuple[K, ...]) -> None:
        delay, failing = self.retry[0], False
        healthy_since: float | None = None  # first delivery since the last failure
        stalled = False  # subscribed again after a stall: the next delivery is a recovery
        while True:
            if _cancelling():  # a stop that asyncio.wait_for swallowed (Python 3.11 returns
                raise asyncio.CancelledError  # an awaited result that came with the cancel)
            try:
                self._check_connection(batch)
                delivered = await self._turn(batch, failing or stalled)
            except asyncio.CancelledError as cancelled:
                if _cancelling():
                    raise
                error: BaseException = cancelled  # a ccxt future cancelled under us
            except Exception as failure:  # ccxt's NetworkError, ExchangeError, …
                error = failure
            else:
                if delivered and failing:
                    log.info("%s stream %s… delivers again", self.kind, batch[0])
                    self.reconnects += 1
                if delivered:
                    now = self.clock()
                    healthy_since = now if healthy_since is None else healthy_since
                    if now - healthy_since >= self.retry[1]:
                        delay = self.retry[0]  # delivering for a while: a new episode starts short
                self._delay[batch] = delay
                failing = failing and not delivered
                stalled = not delivered
                continue
            if _refused(error) and len(batch) > 1:
                self._split(batch, error)
                return
            self._delivered_on.pop(batch, None)  # counted here, not again next turn
            self.errors += 1
            self._failed(batch)
            if not failing:  # one line per episode
                log.warning("%s stream %s… failed (%r); watching again", self.kind, batch[0], error)
            failing, healthy_since = True, None
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = self._delay[batch] = min(self.retry[1], delay * 2)

    async def _turn(self, batch: tuple[K, ...], recovering: bool) -> bool:
        """One watch of ``batch`` and its delivery, then its stalled keys subscribed
        again; False when the whole watch stalled and the batch was subscribed again.
        ``recovering``: the batch failed or stalled before (what it delivers now may
        follow a hole)."""
        asked = self.clock()
        if not await self._watch_within(batch):
            await self._resubscribe(batch, quiet=recovering)
            return False
        clients = self._clients()
        if clients is not None:
            self._delivered_on[batch] = tuple(clients.items())
        self.deliveries += 1
        now = self.clock()
        liveness = self.liveness
        recovered = recovering or not liveness.ever_heard(batch) or now - asked > self.silent_after
        liveness.batch_heard(batch, now)
        if recovered:
            liveness.subscribed(batch)
        liveness.busy.add(batch)
        try:
            await self._deliver(batch, recovered)
        finally:
            liveness.busy.discard(batch)
        stalled = liveness.stalled(batch)
        if stalled:
            await self._resubscribe_keys(stalled)
        return True

    def _clients(self) -> dict[str, Any] | None:
        """ccxt's open connections of this reader's exchange, by URL (ccxt removes one
        from it when it closes or fails); None for an exchange without them."""
        clients = getattr(self.exchange, "clients", None)
        return clients if isinstance(clients, dict) else None

    def _check_connection(self, batch: tuple[K, ...]) -> None:
        """Raise ``ConnectionLost`` when a connection open when ``batch``'s last watch
        returned is no longer ccxt's (or none was: it closed before this reader resumed).
        """
        seen = self._delivered_on.pop(batch, None)
        clients = self._clients()
        if seen is None or clients is None:
            return  # no delivery since the last check (or a failure forgot it)
        if not seen or any(clients.get(url) is not client for url, client in seen):
            raise ConnectionLost("the connection closed after the batch's last delivery")

    async def _watch_within(self, batch: tuple[K, ...]) -> bool:
        """One watch of ``batch``; False when it brought nothing in ``stall_after``
        seconds (ccxt's own timeouts still raise)."""
        try:
            async with asyncio.timeout(self.stall_after) as deadline:
                await self._watch(batch)
        except TimeoutError:
            if deadline.expired():
                return False
            raise
        return True

    async def _resubscribe(self, batch: tuple[K, ...], *, quiet: bool) -> None:
        """``batch`` stalled: unsubscribe it so its next watch subscribes anew (or reset
        the connections, see ``_unwatch_within``)."""
        self.resubscribes += 1
        self._failed(batch)
        self.liveness.subscribed(batch)
        if not quiet:  # a quiet market, or a subscription the exchange forgot
            log.info(
                "%s stream %s… brought nothing for %.0f s; subscribing again",
                self.kind,
                batch[0],
                self.stall_after,
            )
        await self._unwatch_within(batch)

    async def _resubscribe_keys(self, keys: tuple[K, ...]) -> None:
        """Keys of a delivering batch had nothing new for ``stall_after``: a quiet topic
        gets a fresh snapshot, a forgotten one comes back."""
        self.resubscribes += 1
        self._failed(keys)
        self.liveness.subscribed(keys)
        log.debug("%s stream: %d quiet topic(s) subscribed again", self.kind, len(keys))
        await self._unwatch_within(keys)

    async def _unwatch_within(self, keys: tuple[K, ...]) -> bool:
        """Unsubscribe ``keys``; reset the reader's connections when the exchange does
        not acknowledge in time (or refuses). True when it acknowledged; False when the
        connection failed meanwhile or was reset (the next watch dials anew)."""
        try:
            await asyncio.wait_for(self._unwatch(keys), self.unwatch_timeout)
        except NetworkError:
            return False  # the connection failed meanwhile
        except Exception as error:  # no acknowledgement in time, or a refusal
            self._reset_connections(f"unsubscribe of a stalled {self.kind} stream: {error!r}")
            return False
        return True

    def _split(self, batch: tuple[K, ...], error: BaseException) -> None:
        """The exchange refused ``batch``'s subscription: watch its halves apart, so a
        refused topic ends up alone and the others deliver (this task ends)."""
        middle = len(batch) // 2
        halves = (batch[:middle], batch[middle:])
        index = self.batches.index(batch)
        self.batches[index : index + 1] = list(halves)
        self.splits += 1
        log.warning(
            "%s stream %s… refused (%s): watching %d and %d topics apart",
            self.kind,
            batch[0],
            " ".join(str(error).split())[:200],
            *map(len, halves),
        )
        for half in halves:
            for key in half:
                self._batch_of[key] = half
            self._spawn(half)

    def _reset_connections(self, why: str) -> None:
        """Fail every pending watch on this reader's connections and close them, as
        ccxt does with a connection it gives up on (``Client.on_error``: the watches
        raise ``NetworkError``, the client leaves ``exchange.clients``, so the next
        watch dials anew)."""
        clients = list((self._clients() or {}).values())
        self._delivered_on.clear()  # our reset: every batch watches again, none failed
        for client in clients:
            client.on_error(NetworkError(why))
        self.resets += len(clients)
        log.warning("%s stream: %d connection(s) reset (%s)", self.kind, len(clients), why)


def _cancelling() -> bool:
    """Whether the running task was asked to stop (not a future it awaited cancelled)."""
    task = asyncio.current_task()
    return task is None or task.cancelling() > 0


def _refused(error: BaseException) -> bool:
    """An exchange's refusal of a request (ccxt ``ExchangeError``: a bad symbol or
    topic), not a connection's failure."""
    return isinstance(error, ExchangeError) and not isinstance(error, NetworkError)


class SymbolStream(BatchedStream[str]):
    """A stream with one topic per symbol (tickers, books, trades) on ``exchange`` (a
    ccxt.pro instance whose markets are loaded): ``symbols`` maps each ccxt symbol to
    its canonical one (``_ccxt_of`` the other way); ``batching`` as ``BatchedStream``."""

    def __init__(self, exchange: Any, symbols: Mapping[str, str], batching: Batching) -> None:
        super().__init__(exchange, sorted(symbols), batching)
        self.symbols = dict(symbols)
        self._ccxt_of = {canonical: name for name, canonical in self.symbols.items()}

    def _label(self, key: str) -> str:
        return self.symbols[key]
