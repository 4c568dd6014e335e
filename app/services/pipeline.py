"""The refresher: source → Snapshot → Analysis → views → cache, on a schedule and on demand.

Request handlers never touch the exchange: they read the cache, whose cold
misses call ``refresh(force=True)``. A refresh is single-flight in the process
(callers during a refresh share it) and, with a RefreshCoordinator, across
replicas. A source that cannot start (exchange unreachable) is retried with
back-off while the service keeps answering: not ready, 503 on data, until the
first snapshot lands.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Protocol

import orjson

from app.backends.errors import TierUnavailable
from app.backends.tasks import cancel_and_wait
from app.market.errors import MarketDataError
from app.market.listing import UNSERVED
from app.market.models.ticker import Ticker
from app.market.sources.base import MarketSource
from app.observability.tracing import step_span
from app.services.analysis import Analysis, AnalysisSettings, analyse
from app.services.cadence import Cadence
from app.services.collector_link import CollectorStatus
from app.services.coordination import RefreshCoordinator
from app.services.incremental_analysis import IncrementalAnalyser
from app.services.snapshot import Snapshot, SnapshotCollector
from app.services.views import ViewSettings, build_views, candles_view

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 60.0
TICK_BATCH_SECONDS = 0.02
"""Streamed tickers are applied at most this often (those in between together)."""
TICK_RESCORED_SYMBOLS = 2
"""A tick's analysis scores at most this many symbols again (≈ 2 ms of CPU each): work
due for the whole market at once is spread over the next ticks, and each refresh
catches up the rest."""
FRESHNESS_FIELDS = frozenset({"generated_at", "version"})
"""Fields of every view that change with each snapshot whatever its content."""

# Receives every view of a snapshot: JSON bytes by view name, and the data's time.
Publish = Callable[[dict[str, bytes], int], Awaitable[None]]
# Called after every refresh with its outcome (ok, error, skipped) and its seconds.
RefreshListener = Callable[[str, float], None]
# The pending critical alerts (as dicts) the mobile dashboard shows.
CriticalAlerts = Callable[[], Awaitable[list[dict]]]
# Waits for the tickers a source's streams pushed since the last call (by symbol).
NextTicks = Callable[[], Awaitable[dict[str, Ticker]]]


class SnapshotListener(Protocol):
    """Told of every new snapshot this replica produced, with its analysis (alert
    rules, live updates). An exception is logged once per failure episode and never
    reaches the refresher."""

    async def __call__(self, snapshot: Snapshot, analysis: Analysis, /) -> None: ...


@dataclass(frozen=True, slots=True)
class PipelineSettings:
    """What the refresher needs of the configuration: the symbols to collect, the
    refresh interval (seconds), candles kept per timeframe, order-book depth (levels),
    the analysis and view settings, and two optimisations the benchmark can switch off
    (``single_flight``: concurrent refreshes share one; ``refresh_ahead``: refresh on a
    schedule rather than only when a reader finds the views expired)."""

    symbols: tuple[str, ...]
    refresh_seconds: float
    candle_limits: dict[str, int]
    order_book_depth: int
    analysis: AnalysisSettings
    views: ViewSettings
    single_flight: bool = True
    refresh_ahead: bool = True
    views_per_second: float = 4.0  # views rebuilt from ticks at most this often
    derivatives_seconds: float = 60.0  # funding, open interest, ratios read this often


class Pipeline:
    """The refresher of one replica. ``publish`` receives every view of a snapshot;
    ``listeners`` are told of each new snapshot, in order; ``on_refresh`` of each
    refresh's outcome; ``critical_alerts`` gives the alerts the mobile view shows.

    Scheduled refreshes start every ``refresh_seconds``, start to start (``cadence``,
    on the ``monotonic`` clock); ``sleep`` waits between them (tests drive both)."""

    def __init__(
        self,
        settings: PipelineSettings,
        source: MarketSource,
        publish: Publish,
        coordinator: RefreshCoordinator | None = None,
        clock: Callable[[], float] = time.time,
        *,
        listeners: Sequence[SnapshotListener] = (),
        tick_listeners: Sequence[SnapshotListener] = (),
        on_refresh: Sequence[RefreshListener] = (),
        critical_alerts: CriticalAlerts | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self.settings = settings
        self.source = source
        self.publish = publish
        self.coordinator = coordinator
        self.clock = clock
        self.latest: Snapshot | None = None
        self.latest_analysis: Analysis | None = None
        self.listeners = tuple(listeners)
        self.tick_listeners = tuple(tick_listeners)
        self.monotonic = monotonic
        self.critical_alerts: CriticalAlerts = critical_alerts or _no_alerts
        self.on_refresh = tuple(on_refresh)
        self.cadence = Cadence(settings.refresh_seconds, monotonic)
        self._sleep = sleep
        self.status = CollectorStatus()
        self.collector: SnapshotCollector | None = None
        self._inflight: asyncio.Task[Snapshot | None] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._tick_task: asyncio.Task[None] | None = None
        self._views_task: asyncio.Task[None] | None = None
        self._newest: dict[str, Ticker] = {}  # the newest streamed ticker of each symbol
        self._ticked_at: dict[str, float] = {}  # when it came (monotonic seconds)
        self._views_at = -float("inf")  # monotonic time of the last views built from ticks
        self._digests: dict[str, bytes] = {}  # each view's last published content, hashed
        self._published = asyncio.Event()
        self.source_started = asyncio.Event()
        self._failing_listeners: set[str] = set()  # names of listeners in a failure episode
        # With streams (snapshots several times a second) the analytics are recomputed
        # only where their inputs changed; polled sources analyse each snapshot whole.
        self._next_ticks: NextTicks | None = getattr(source, "next_ticks", None)
        self.analyser = (
            IncrementalAnalyser(settings.analysis) if self._next_ticks is not None else None
        )

    async def start(self) -> None:
        """Starts the background loop; returns at once (data arrives when it can)."""
        self._loop_task = asyncio.create_task(self._run(), name="pipeline-refresh")

    async def halt(self) -> None:
        """Stops refreshing (the loop and a refresh in flight) but keeps the source open:
        ``start`` resumes (a collector that lost its leadership and may win it back)."""
        running = (self._loop_task, self._inflight, self._tick_task, self._views_task)
        await cancel_and_wait(running)  # outcomes already recorded
        self._loop_task = self._inflight = self._tick_task = self._views_task = None

    async def stop(self) -> None:
        """Stops refreshing (and a derivatives read under way) and closes the source."""
        await self.halt()
        if self.collector is not None:
            await self.collector.derivatives.close()
        await self.source.close()

    async def wait_ready(self, seconds: float) -> bool:
        """Waits until the first snapshot is published (tests and warm start-up)."""
        try:
            await asyncio.wait_for(self._published.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def refresh(self, force: bool = False) -> Snapshot | None:
        """One refresh, shared by every concurrent caller; None when another replica
        did it (its views are then in the shared tiers). Raises MarketDataError.
        ``force`` refreshes even if another replica did so moments ago (cold reads)."""
        if not self.settings.single_flight:  # ablation: every caller fetches
            return await self._coordinated(force)
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._coordinated(force))
        return await asyncio.shield(self._inflight)

    async def _coordinated(self, force: bool) -> Snapshot | None:
        started = time.perf_counter()
        with step_span("pipeline.refresh", force=force) as span:
            snapshot: Snapshot | None
            try:
                if self.coordinator is None:
                    snapshot = await self._refresh_once()
                else:
                    snapshot = await self.coordinator.run(self._refresh_once, force)
            except Exception:
                self._refreshed("error", started, span)
                raise
            self._refreshed("ok" if snapshot is not None else "skipped", started, span)
            return snapshot

    def _refreshed(self, outcome: str, started: float, span) -> None:
        span.set_attribute("pipeline.outcome", outcome)
        self.status.refreshes[outcome] = self.status.refreshes.get(outcome, 0) + 1
        self.status.streams = stream_status(self.source)
        seconds = time.perf_counter() - started
        for listener in self.on_refresh:
            listener(outcome, seconds)

    async def _run(self) -> None:
        if self.collector is None:  # started once; a resumed loop goes on with it
            await self._start_source()
        if self._next_ticks is not None and self._tick_task is None:
            self._tick_task = asyncio.create_task(
                self._follow(self._next_ticks), name="pipeline-ticks"
            )
        while True:
            self.cadence.started()
            try:
                await self.refresh()
            except MarketDataError:
                pass  # recorded in the status; the last published views stay served
            except Exception as error:  # a defect must not stop the refresher
                log.exception("refresh crashed")
                self._record_failure(f"internal error: {type(error).__name__}")
            if self._published.is_set() and not self.settings.refresh_ahead:
                return  # ablation: later snapshots only when a reader finds views expired
            # A steady cadence even while failing: a real exchange sits behind circuit
            # breakers (GuardedSource), which turn these attempts into the probe rate.
            # Start to start: the refresh's own duration is not added to the interval.
            await self._sleep(self.cadence.delay())

    async def _start_source(self) -> None:
        attempt = 0
        while True:
            try:
                await self.source.start()
                break
            except MarketDataError as error:
                attempt += 1
                delay = min(MAX_RETRY_SECONDS, 2.0**attempt)
                self._record_failure(f"cannot start {self.source.name}: {error}")
                log.warning(
                    "market source %s not available (%s); retrying in %.0fs",
                    self.source.name,
                    error,
                    delay,
                )
                await self._sleep(delay)
        listed = self.source.listed_symbols()
        symbols = [s for s in self.settings.symbols if s in listed]
        self.status.unlisted_symbols = tuple(s for s in self.settings.symbols if s not in listed)
        if self.status.unlisted_symbols:
            log.warning(
                "symbols not listed on %s, left out: %s",
                self.source.name,
                ", ".join(self.status.unlisted_symbols),
            )
        self.collector = SnapshotCollector(
            self.source,
            symbols,
            self.settings.candle_limits,
            self.settings.refresh_seconds,
            self.settings.order_book_depth,
            clock=self.clock,
            configured=self.settings.symbols,
            derivatives_seconds=self.settings.derivatives_seconds,
        )
        self.status.source_started = True
        self.source_started.set()

    async def _refresh_once(self) -> Snapshot:
        if self.collector is None:
            raise MarketDataError(f"{self.source.name} has not started yet")
        started = time.perf_counter()
        self.status.last_attempt_ms = int(self.clock() * 1000)
        since = self.monotonic()
        try:
            with step_span("market.fetch", exchange=self.source.name):
                snapshot = _with_ticks(await self.collector.collect(), self._ticked_since(since))
        except MarketDataError as error:
            if self.status.consecutive_failures == 0:  # one line per outage, not per attempt
                log.warning("refresh failed: %s", error)
            self._record_failure(str(error))
            raise
        alerts = await self.critical_alerts()
        with step_span("analysis", symbols=len(snapshot.tickers)):
            analysis = await asyncio.to_thread(self._analyse, snapshot)
        with step_span("views.build"):
            bodies, digests = await asyncio.to_thread(
                self._encode_views, snapshot, analysis, alerts
            )
        await self._publish(bodies, snapshot.fetched_at_ms, digests)
        self.latest, self.latest_analysis = snapshot, analysis
        self.status.snapshot_version = snapshot.version
        self.status.last_success_ms = snapshot.fetched_at_ms
        self._note_listing(snapshot)
        if self.status.consecutive_failures:
            log.info(
                "refresh works again after %d failed attempts", self.status.consecutive_failures
            )
        self.status.last_error = None
        self.status.consecutive_failures = 0
        self.status.last_duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self._published.set()
        with step_span("snapshot.announce"):
            await self._announce(snapshot, analysis)
        return snapshot

    def _note_listing(self, snapshot: Snapshot) -> None:
        """The status names the configured symbols the exchange does not list or serve."""
        issues = sorted(snapshot.listing.values(), key=lambda issue: issue.symbol)
        self.status.delisted = [issue.to_dict() for issue in issues]
        self.status.unlisted_symbols = tuple(
            issue.symbol for issue in issues if issue.status != UNSERVED
        )

    async def _publish(
        self, bodies: dict[str, bytes], generated_at_ms: int, digests: dict[str, bytes]
    ) -> None:
        if bodies:
            with step_span("views.publish", views=len(bodies)):
                await self.publish(bodies, generated_at_ms)
        self._digests |= digests
        self.status.views_built += len(bodies)
        self.status.data_at_ms = max(generated_at_ms, self.status.data_at_ms or 0)

    def _encode_views(
        self,
        snapshot: Snapshot,
        analysis: Analysis,
        alerts: list[dict],
        *,
        changed_only: bool = False,
    ) -> tuple[dict[str, bytes], dict[str, bytes]]:
        """The JSON body of every view of ``snapshot`` (by view name) and a digest of
        each one's content (its freshness fields left out). ``changed_only``: only the
        views whose content differs from the one last published."""
        bodies: dict[str, bytes] = {}
        digests: dict[str, bytes] = {}
        for name, payload in build_views(snapshot, analysis, self.settings.views, alerts).items():
            digest = _digest(payload)
            if changed_only and self._digests.get(name) == digest:
                continue
            bodies[name], digests[name] = _json(payload), digest
        return bodies, digests

    async def _follow(self, next_ticks: NextTicks) -> None:
        """Applies the streamed tickers to the latest snapshot as they come (a batch of
        whatever arrived while the last one was applied)."""
        failing = False
        while True:
            ticks = await next_ticks()
            applied = self.monotonic()
            try:
                await self._apply_ticks(ticks)
            except Exception:  # a defect must not stop the ticks (logged once per episode)
                if not failing:
                    log.exception("applying streamed tickers failed")
                failing = True
            else:
                failing = False
            # ticks that come meanwhile wait and are applied together: at most
            # 1 / TICK_BATCH_SECONDS applications a second however busy the market
            await self._sleep(max(0.0, applied + TICK_BATCH_SECONDS - self.monotonic()))

    async def _apply_ticks(self, ticks: dict[str, Ticker]) -> None:
        """The latest snapshot with these tickers (newer ones only) → the cheap analysis
        → the tick listeners (live updates, coalesced per key); the views are rebuilt at
        most ``views_per_second`` (the last change is never left unbuilt)."""
        newer = {
            s: t
            for s, t in ticks.items()
            if (old := self._newest.get(s)) is None or t.timestamp_ms >= old.timestamp_ms
        }
        self._newest |= newer
        now = self.monotonic()
        self._ticked_at |= dict.fromkeys(newer, now)
        snapshot, analysis = self.latest, self.latest_analysis
        if snapshot is None or analysis is None or not newer:
            return
        snapshot = _with_ticks(snapshot, newer, int(self.clock() * 1000))
        if snapshot is self.latest:
            return
        analysis = await asyncio.to_thread(self._analyse, snapshot, TICK_RESCORED_SYMBOLS)
        self.latest, self.latest_analysis = snapshot, analysis
        for listener in self.tick_listeners:
            await self._tell(listener, snapshot, analysis)
        self._views_due()

    def _ticked_since(self, since: float) -> dict[str, Ticker]:
        """The streamed tickers that came after ``since`` (a refresh that started then
        must not put back older prices)."""
        return {s: t for s, t in self._newest.items() if self._ticked_at[s] >= since}

    def _analyse(self, snapshot: Snapshot, max_rescored: int | None = None) -> Analysis:
        """The analysis of ``snapshot``: incremental with streams (at most
        ``max_rescored`` symbols scored again, see ``IncrementalAnalyser``), else whole."""
        if self.analyser is not None:
            return self.analyser.analyse(snapshot, max_rescored)
        return analyse(snapshot, self.settings.analysis)

    def _views_due(self) -> None:
        """Rebuilds the views of the latest snapshot now, or when their turn comes."""
        if self._views_task is not None and not self._views_task.done():
            return  # already waiting for its turn: it builds the newest
        wait = self._views_at + 1.0 / self.settings.views_per_second - self.monotonic()
        self._views_task = asyncio.create_task(self._views_later(max(0.0, wait)))

    async def _views_later(self, wait: float) -> None:
        if wait > 0:
            await self._sleep(wait)
        self._views_at = self.monotonic()
        try:
            # only what the ticks changed: the rest keeps the copy of the last refresh
            # (which publishes every view), as old as that refresh says it is
            await self.republish(changed_only=True)
        except Exception as error:  # the next tick or refresh tries again
            log.warning("views from streamed tickers not published: %s", error)

    async def republish(
        self, fresh_within: float | None = None, *, changed_only: bool = False
    ) -> bool:
        """Rebuilds the views of the latest snapshot (e.g. after alerts changed) without
        fetching; False when this replica holds no snapshot (the next refresh will) or,
        with ``fresh_within`` (seconds), none that recent (another replica makes them:
        an older one must not replace its views). ``changed_only``: publishes only the
        views whose content changed since last published (a streamed tick changes a
        few of the ~130)."""
        snapshot, analysis = self.latest, self.latest_analysis
        if snapshot is None or analysis is None:
            return False
        age_ms = self.clock() * 1000 - snapshot.fetched_at_ms
        if fresh_within is not None and age_ms > fresh_within * 1000:
            return False
        alerts = await self.critical_alerts()
        bodies, digests = await asyncio.to_thread(
            partial(self._encode_views, changed_only=changed_only), snapshot, analysis, alerts
        )
        await self._publish(bodies, snapshot.fetched_at_ms, digests)
        return True

    async def _announce(self, snapshot: Snapshot, analysis: Analysis) -> None:
        for listener in self.listeners:
            await self._tell(listener, snapshot, analysis)

    async def _tell(
        self, listener: SnapshotListener, snapshot: Snapshot, analysis: Analysis
    ) -> None:
        name = getattr(listener, "__qualname__", repr(listener))
        try:
            await listener(snapshot, analysis)
        except Exception as error:  # a listener's failure must not stop the refresher
            self._listener_failed(name, error)
        else:
            if name in self._failing_listeners:
                self._failing_listeners.discard(name)
                log.info("snapshot listener %s works again", name)

    def _listener_failed(self, name: str, error: Exception) -> None:
        """One log line per failure episode of a listener: a backend that is down
        (Redis, the disk) is a warning without a traceback; a defect gets its traceback
        once. Later failures of the same episode are logged at debug level only."""
        if name in self._failing_listeners:
            log.debug("snapshot listener %s still failing: %s", name, error)
            return
        self._failing_listeners.add(name)
        if isinstance(error, TierUnavailable | OSError):
            log.warning("snapshot listener %s cannot reach its backend: %s", name, error)
        else:
            log.exception("snapshot listener %s failed", name)

    async def candles(self, symbol: str, timeframe: str) -> tuple[bytes, int]:
        """The on-demand candles view of one symbol and timeframe (for charts): from the
        collector's candles, fetched through the source only when due."""
        if self.collector is None:
            raise MarketDataError(f"{self.source.name} has not started yet")
        read = await self.collector.candles(symbol, timeframe)
        # Fresh as of now when the latest check succeeded; as old as the last success
        # when it failed (so the view's age and stale flag tell the truth).
        now_ms = int(self.clock() * 1000)
        generated_ms = now_ms if read.error is None else int(read.fetched_at * 1000)
        errors = {} if read.error is None else {f"{symbol}/candles/{timeframe}": read.error}
        issue = self.collector.listing.issues.get(symbol)
        listing = None if issue is None else issue.to_dict()
        payload = candles_view(read.candles, self.source.name, generated_ms, errors, listing)
        return _json(payload), generated_ms

    def _record_failure(self, reason: str) -> None:
        self.status.last_error = reason
        self.status.consecutive_failures += 1
        self.status.last_attempt_ms = int(self.clock() * 1000)


def stream_status(source: MarketSource) -> dict | None:
    """The source's stream state (``StreamingSource.status``), None when it only polls."""
    status = getattr(source, "status", None)
    return status() if callable(status) else None


def _with_ticks(snapshot: Snapshot, ticks: dict[str, Ticker], at_ms: int | None = None) -> Snapshot:
    """``snapshot`` with the tickers in ``ticks`` that are newer than its own (for the
    symbols it prices), as of ``at_ms`` (default: unchanged); itself when none is."""
    fresher = {
        s: t
        for s, t in ticks.items()
        if (old := snapshot.tickers.get(s)) is not None and t.timestamp_ms > old.timestamp_ms
    }
    if not fresher:
        return snapshot
    fetched = snapshot.fetched_at_ms if at_ms is None else max(at_ms, snapshot.fetched_at_ms)
    return replace(snapshot, tickers=snapshot.tickers | fresher, fetched_at_ms=fetched)


def _digest(view: dict) -> bytes:
    """A digest of a view's content: its JSON without the freshness fields."""
    content = {k: v for k, v in view.items() if k not in FRESHNESS_FIELDS}
    return hashlib.blake2b(_json(content), digest_size=16).digest()


def _json(payload: dict) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SERIALIZE_NUMPY)


async def _no_alerts() -> list[dict]:
    return []
