"""The collector's desk on the wire (``app.services.collector_wire``): it answers the
servers' requests from its pipeline and sends its status report every second, through
its ``end`` (Redis, or the local channel to its server).

Requests are handled concurrently, at most ``MAX_CONCURRENT`` at once (more are
answered "busy" at once rather than queued without bound); a request whose asker has
stopped waiting (past its deadline) is dropped; a malformed one is counted and dropped.
The pipeline is single-flight, so many servers asking for the same refresh or candles
share one exchange call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable

from app.backends.errors import TierUnavailable
from app.backends.local_channel import ChannelError
from app.backends.tasks import cancel_and_wait
from app.market.errors import MarketDataError
from app.services.collector_link import LocalCollector
from app.services.collector_wire import (
    CollectorEnd,
    Reply,
    Request,
    StatusReport,
    WireError,
    decode_request,
    encode_reply,
    encode_status,
)

log = logging.getLogger(__name__)

MAX_CONCURRENT = 32
STATUS_EVERY_SECONDS = 1.0


class CollectorDesk:
    """Answers requests for ``link`` (the pipeline of this process) and reports its
    status under ``collector_id``. ``clock``: epoch seconds."""

    def __init__(
        self,
        end: CollectorEnd,
        link: LocalCollector,
        collector_id: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.end = end
        self.link = link
        self.collector_id = collector_id
        self.clock = clock
        self.counts: dict[str, int] = {}  # requests by outcome: ok, error, busy, late, malformed
        self._busy = 0
        self._tasks: set[asyncio.Task[None]] = set()
        self._status_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Starts answering requests and reporting the status."""
        self.end.start(self._on_request)
        self._status_task = asyncio.create_task(self._report_every_second(), name="status")

    async def stop(self) -> None:
        """Stops answering and reporting; requests being answered are cancelled."""
        await cancel_and_wait([self._status_task, *self._tasks])
        await self.end.close()

    def wait_listening(self, seconds: float) -> Awaitable[bool]:
        """True once requests can arrive (tests, start-up)."""
        return self.end.wait_listening(seconds)

    # --- status -------------------------------------------------------------------------

    def report(self) -> StatusReport:
        """The status report as of now."""
        return StatusReport(
            status=self.link.status,
            symbols=self.link.symbols(),
            breakers=self.link.exchange_breakers(),
            source=self.link.pipeline.source.name,
            collector_id=self.collector_id,
            heartbeat_ms=int(self.clock() * 1000),
        )

    async def publish_status(self) -> None:
        """Sends the status report now. Raises TierUnavailable or ChannelError."""
        await self.end.report(encode_status(self.report()))

    async def _report_every_second(self) -> None:
        while True:
            with contextlib.suppress(TierUnavailable, ChannelError):  # logged where it failed
                await self.publish_status()
            await asyncio.sleep(STATUS_EVERY_SECONDS)

    # --- requests -----------------------------------------------------------------------

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1

    def _on_request(self, raw: bytes) -> None:
        try:
            request = decode_request(raw)
        except WireError as error:
            self._count("malformed")
            log.debug("collector request dropped: %s", error)
            return
        if request.deadline_ms < self.clock() * 1000:
            self._count("late")
            return
        if self._busy >= MAX_CONCURRENT:
            self._count("busy")
            reply = Reply(request.id, ok=False, error="the collector is busy; try again")
            self._spawn(self._send(request, reply))
            return
        self._spawn(self._answer(request))

    def _spawn(self, work) -> None:
        task = asyncio.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _answer(self, request: Request) -> None:
        self._busy += 1
        try:
            reply = await self._reply_to(request)
        finally:
            self._busy -= 1
        self._count("ok" if reply.ok else "error")
        await self._send(request, reply)

    async def _reply_to(self, request: Request) -> Reply:
        args = request.args
        try:
            if request.kind == "candles":
                body, at = await self.link.candles(str(args["symbol"]), str(args["timeframe"]))
                return Reply(request.id, ok=True, body=body, generated_at_ms=at)
            if request.kind == "republish":
                fresh_within = args.get("fresh_within")
                done = await self.link.pipeline.republish(
                    None if fresh_within is None else float(fresh_within)
                )
                return Reply(request.id, ok=True, body=b"true" if done else b"false")
            await self.link.refresh(force=bool(args.get("force")))
            return Reply(request.id, ok=True, generated_at_ms=int(self.clock() * 1000))
        except MarketDataError as error:
            return Reply(request.id, ok=False, error=str(error))
        except (KeyError, TypeError, ValueError) as error:
            return Reply(request.id, ok=False, error=f"malformed {request.kind} request: {error}")
        except TierUnavailable as error:
            return Reply(request.id, ok=False, error=f"cache unavailable: {error}")
        except Exception:  # a defect: the asker gets an answer, the log the traceback
            log.exception("collector request %s failed", request.kind)
            return Reply(request.id, ok=False, error="internal error in the collector")

    async def _send(self, request: Request, reply: Reply) -> None:
        with contextlib.suppress(TierUnavailable, ChannelError):  # the asker times out
            await self.end.reply(request.reply_to, encode_reply(reply))
