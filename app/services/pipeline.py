"""The refresher: source → Snapshot → Analysis → views → store, on a schedule and on demand.

Request handlers never touch the exchange: they read the store. A refresh is
single-flight (callers during a refresh share it). A source that cannot start
(exchange unreachable) is retried with back-off while the service keeps
answering: not ready, 503 on data, until the first snapshot lands.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from app.market.errors import MarketDataError
from app.market.source import MarketSource
from app.services.analysis import analyse
from app.services.snapshot import Snapshot, SnapshotCollector
from app.services.view_store import StoredView, ViewStore
from app.services.views import build_views
from app.settings import Settings

log = logging.getLogger(__name__)

MAX_RETRY_SECONDS = 60.0


@dataclass(slots=True)
class PipelineStatus:
    source_started: bool = False
    snapshot_version: int = 0
    last_success_ms: int | None = None
    last_attempt_ms: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    last_duration_ms: float | None = None
    unlisted_symbols: tuple[str, ...] = ()


class Pipeline:
    def __init__(
        self,
        settings: Settings,
        source: MarketSource,
        store: ViewStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.source = source
        self.store = store
        self.clock = clock
        self.status = PipelineStatus()
        self.collector: SnapshotCollector | None = None
        self._inflight: asyncio.Task[Snapshot] | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._published = asyncio.Event()

    async def start(self) -> None:
        """Starts the background loop; returns at once (data arrives when it can)."""
        self._loop_task = asyncio.create_task(self._run(), name="pipeline-refresh")

    async def stop(self) -> None:
        tasks = [t for t in (self._loop_task, self._inflight) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)  # outcomes already recorded
        await self.source.close()

    async def wait_ready(self, seconds: float) -> bool:
        """Waits until the first snapshot is published (tests and warm start-up)."""
        try:
            await asyncio.wait_for(self._published.wait(), seconds)
        except TimeoutError:
            return False
        return True

    async def refresh(self) -> Snapshot:
        """One refresh, shared by every concurrent caller. Raises MarketDataError."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.create_task(self._refresh_once())
        return await asyncio.shield(self._inflight)

    async def _run(self) -> None:
        await self._start_source()
        while True:
            try:
                await self.refresh()
            except MarketDataError:
                pass  # recorded in the status; the last published views stay served
            except Exception as error:  # a defect must not stop the refresher
                log.exception("refresh crashed")
                self._record_failure(f"internal error: {type(error).__name__}")
            await asyncio.sleep(self._next_delay())

    def _next_delay(self) -> float:
        failures = self.status.consecutive_failures
        if failures == 0:
            return self.settings.refresh_seconds
        return min(MAX_RETRY_SECONDS, self.settings.refresh_seconds * 2 ** (failures - 1))

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
                await asyncio.sleep(delay)
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
        )
        self.status.source_started = True

    async def _refresh_once(self) -> Snapshot:
        if self.collector is None:
            raise MarketDataError(f"{self.source.name} has not started yet")
        started = time.perf_counter()
        self.status.last_attempt_ms = int(self.clock() * 1000)
        try:
            snapshot = await self.collector.collect()
        except MarketDataError as error:
            self._record_failure(str(error))
            log.warning("refresh failed: %s", error)
            raise
        views = await asyncio.to_thread(self._encode_views, snapshot)
        self.store.publish(views)
        self.status.snapshot_version = snapshot.version
        self.status.last_success_ms = snapshot.fetched_at_ms
        self.status.last_error = None
        self.status.consecutive_failures = 0
        self.status.last_duration_ms = round((time.perf_counter() - started) * 1000, 1)
        self._published.set()
        return snapshot

    def _encode_views(self, snapshot: Snapshot) -> dict[str, StoredView]:
        payloads = build_views(snapshot, analyse(snapshot, self.settings), self.settings)
        return {name: StoredView.encode(payload) for name, payload in payloads.items()}

    def _record_failure(self, reason: str) -> None:
        self.status.last_error = reason
        self.status.consecutive_failures += 1
        self.status.last_attempt_ms = int(self.clock() * 1000)
