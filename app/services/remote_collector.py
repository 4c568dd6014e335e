"""The link of a serving process whose collector runs elsewhere (``virtuoso collect``,
over Redis, or the server's own collector child, over a local channel: the ``end``).

It takes the collector's status report (every second) and answers the serving
side's questions from it (symbols, listing issues, breakers, refresh status); a report
that stops coming means the collector is gone: the views already in the tiers keep
being served (stale once they age), readiness says ``degraded`` with the reason, and
everything resumes when a collector reports again. Cold reads (candles nobody asked for
yet, or views lost from every tier) are requests over the wire, one in flight per
question, awaited until a deadline; the server never fetches market data itself.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from app.services.collector_link import CollectorStatus
from app.services.collector_wire import (
    CollectorUnavailable,
    Reply,
    Request,
    ServerEnd,
    StatusReport,
    WireError,
    decode_reply,
    decode_status,
    encode_request,
)

log = logging.getLogger(__name__)

MAX_PENDING = 256  # requests awaiting a reply at once; more are refused at once


@dataclasses.dataclass(frozen=True, slots=True)
class RemoteTimings:
    """``gone_after_seconds``: a status report older than this means the collector is
    gone; ``request_seconds``: how long a request waits for its reply;
    ``republish_seconds``: how long a republish does (an alert write waits for it, and
    the next refresh rebuilds the views anyway)."""

    gone_after_seconds: float = 5.0
    request_seconds: float = 15.0
    republish_seconds: float = 3.0


class RemoteCollector:
    """A :class:`~app.services.collector_link.CollectorLink` through ``end`` (see the
    module docstring). ``replica_id`` names this server on the wire (its requests' ids
    and replies' address); ``clock``: epoch seconds."""

    def __init__(
        self,
        end: ServerEnd,
        replica_id: str,
        clock: Callable[[], float] = time.time,
        timings: RemoteTimings | None = None,
        more_problems: Sequence[Callable[[], list[str]]] = (),
    ) -> None:
        self.end = end
        self.more_problems = tuple(more_problems)
        self.replica_id = replica_id
        self.clock = clock
        self.timings = timings or RemoteTimings()
        self.report: StatusReport | None = None
        self.unreadable_messages = 0  # replies or reports that could not be decoded
        self._started = asyncio.Event()
        self._pending: dict[str, asyncio.Future[Reply]] = {}
        self._shared: dict[tuple[Any, ...], asyncio.Task[Reply]] = {}
        self._ids = itertools.count(1)
        # Requests by (kind, outcome): ok, refused (answered with an error), timeout,
        # unavailable (no collector to send to, or too many waiting).
        self.requests: Counter[tuple[str, str]] = Counter()

    async def start(self) -> None:
        """Listens for replies and status reports."""
        self.end.start(self._on_reply, self.take_status)

    async def close(self) -> None:
        """Stops listening; requests still waiting fail with CollectorUnavailable."""
        await self.end.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(CollectorUnavailable("the server is stopping"))
        self._pending.clear()

    # --- what the collector reported -----------------------------------------------------

    @property
    def status(self) -> CollectorStatus:
        """The collector's last reported status; while it is gone, with the reason as its
        ``last_error``."""
        report = self.report
        if report is None:
            return CollectorStatus(last_error=self._gone_reason())
        gone = self._gone_reason()
        if gone is None:
            return report.status
        return dataclasses.replace(report.status, last_error=gone)

    @property
    def started(self) -> asyncio.Event:
        """Set once a collector reported that its market source started."""
        return self._started

    def symbols(self) -> list[str] | None:
        return None if self.report is None else self.report.symbols

    def listing_issue(self, symbol: str) -> dict | None:
        if self.report is None:
            return None
        return next((i for i in self.report.status.delisted if i.get("symbol") == symbol), None)

    def exchange_breakers(self) -> dict[str, dict]:
        return {} if self.report is None else dict(self.report.breakers)

    def problems(self) -> list[str]:
        """Why the collector cannot be counted on now (readiness reasons): it does not
        report on time, or what ``more_problems`` say (e.g. a child that keeps exiting)."""
        gone = self._gone_reason()
        found = [] if gone is None else [gone]
        for more in self.more_problems:
            found += more()
        return found

    def _gone_reason(self) -> str | None:
        report = self.report
        if report is None:
            return "no collector has reported yet"
        silent = self.clock() - report.heartbeat_ms / 1000
        if silent > self.timings.gone_after_seconds:
            return f"collector not heard from for {silent:.0f}s"
        return None

    def take_status(self, raw: bytes) -> None:
        """Takes a status report as the collector sent it (kept as ``report``, unless it
        is older than the kept one of the same collector); an unreadable one, or one
        dated further ahead of this server's clock than ``gone_after_seconds``, is
        counted and the last one kept.

        A report from another collector replaces the kept one whatever its date (a new
        leader's clock may be behind the old one's), and none from the future is taken:
        one would outdate every true report after it and hide a silent collector."""
        try:
            report = decode_status(raw)
            ahead = report.heartbeat_ms / 1000 - self.clock()
            if ahead > self.timings.gone_after_seconds:
                raise WireError(f"status dated {ahead:.0f}s ahead of this server's clock")
        except WireError as error:
            self.unreadable_messages += 1
            log.warning("collector status unreadable: %s", error)
            return
        kept = self.report
        if (
            kept is None
            or report.collector_id != kept.collector_id
            or report.heartbeat_ms >= kept.heartbeat_ms
        ):
            self.report = report
        if report.status.source_started:
            self._started.set()

    # --- questions ------------------------------------------------------------------------

    async def refresh(self, force: bool = False) -> None:
        """Asks the collector to publish the views (``force``: even if recent) and waits
        until it did. Raises CollectorUnavailable (a MarketDataError)."""
        await self._ask_once(("refresh",), "refresh", {"force": force})

    async def candles(self, symbol: str, timeframe: str) -> tuple[bytes, int]:
        """The collector's candles view of ``symbol`` at ``timeframe`` and its
        ``generated_at`` (epoch ms). Raises CollectorUnavailable."""
        args = {"symbol": symbol, "timeframe": timeframe}
        reply = await self._ask_once(("candles", symbol, timeframe), "candles", args)
        return reply.body, reply.generated_at_ms

    async def republish(self, fresh_within: float | None = None) -> bool:
        """Has the collector rebuild the views of its latest snapshot (alerts changed);
        False when it holds none that recent, is gone (not asked: the caller, an alert
        write, would wait for nothing) or does not answer within ``republish_seconds``
        (its next refresh rebuilds them anyway)."""
        gone = self._gone_reason()
        if gone is not None:
            log.debug("republish not asked: %s", gone)
            return False
        try:
            reply = await self._ask_once(
                ("republish", fresh_within),
                "republish",
                {"fresh_within": fresh_within},
                self.timings.republish_seconds,
            )
        except CollectorUnavailable as error:
            log.info("republish not done: %s", error)
            return False
        return reply.body == b"true"

    async def _ask_once(
        self, question: tuple[Any, ...], kind: str, args: dict, seconds: float | None = None
    ) -> Reply:
        """One request per distinct question in flight; every caller shares its reply,
        awaited ``seconds`` (default ``request_seconds``)."""
        task = self._shared.get(question)
        if task is None or task.done():
            task = asyncio.create_task(self._ask(kind, args, seconds))
            self._shared[question] = task
            task.add_done_callback(functools.partial(self._forget, question))
        return await asyncio.shield(task)

    def _forget(self, question: tuple[Any, ...], task: asyncio.Task[Reply]) -> None:
        if self._shared.get(question) is task:
            del self._shared[question]
        if not task.cancelled():
            task.exception()  # retrieved: a failure nobody awaited is not logged as lost

    async def _ask(self, kind: str, args: dict, seconds: float | None = None) -> Reply:
        try:
            reply = await self._ask_unseen(kind, args, seconds)
        except CollectorUnavailable as error:
            self.requests[(kind, error.outcome)] += 1
            raise
        self.requests[(kind, "ok")] += 1
        return reply

    async def _ask_unseen(self, kind: str, args: dict, seconds: float | None) -> Reply:
        if len(self._pending) >= MAX_PENDING:
            raise CollectorUnavailable("too many requests to the collector are waiting")
        if not self.end.listening:
            raise CollectorUnavailable("not listening for the collector's replies")
        wait = self.timings.request_seconds if seconds is None else seconds
        request = Request(
            id=f"{self.replica_id}.{next(self._ids)}",
            kind=kind,
            reply_to=self.replica_id,
            deadline_ms=int((self.clock() + wait) * 1000),
            args=args,
        )
        future: asyncio.Future[Reply] = asyncio.get_running_loop().create_future()
        self._pending[request.id] = future
        try:
            await self.end.send(encode_request(request))
            async with asyncio.timeout(wait):
                reply = await future
        except TimeoutError:
            raise CollectorUnavailable(
                f"the collector did not answer within {wait:g}s", outcome="timeout"
            ) from None
        finally:
            self._pending.pop(request.id, None)
        if not reply.ok:
            raise CollectorUnavailable(
                reply.error or "the collector could not answer", outcome="refused"
            )
        return reply

    def _on_reply(self, raw: bytes) -> None:
        try:
            reply = decode_reply(raw)
        except WireError as error:
            self.unreadable_messages += 1
            log.warning("collector reply unreadable: %s", error)
            return
        future = self._pending.get(reply.id)
        if future is not None and not future.done():
            future.set_result(reply)
