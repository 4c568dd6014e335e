"""What the serving side knows of the collecting side, and what it may ask of it.

The routes, readiness, warming and the view cache's cold reads go through a
:class:`CollectorLink`, never through the pipeline itself: in the embedded service the
link is the pipeline of the same process (:class:`LocalCollector`); a server whose
collector runs elsewhere gets a link that reads the collector's published status and
sends it requests. Nothing here imports the market sources or the analytics.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from app.services.pipeline import Pipeline


@dataclass(slots=True)
class CollectorStatus:
    """The collector's refreshes as the last one left them. Times are epoch ms.

    ``unlisted_symbols``: configured symbols the exchange does not list now.
    ``delisted``: configured symbols the exchange does not list or serve now, each
    ``{symbol, status (delisted | unserved | not_listed), since, reason, last_price,
    last_seen}``. ``refreshes``: counts by outcome (ok | error | skipped).
    ``streams``: the exchange streams' state when the source streams (``mode``
    streaming | polling, ``answered`` by feed | rest, ``fallbacks``, ``feed``: per
    stream, ``data_quality``: bad exchange data by kind), None when it only polls.
    """

    source_started: bool = False
    snapshot_version: int = 0
    last_success_ms: int | None = None
    last_attempt_ms: int | None = None
    last_error: str | None = None
    consecutive_failures: int = 0
    last_duration_ms: float | None = None
    unlisted_symbols: tuple[str, ...] = ()
    delisted: list[dict] = field(default_factory=list)
    refreshes: dict[str, int] = field(default_factory=dict)  # a plain dict: asdict-safe
    views_built: int = 0
    streams: dict | None = None
    data_at_ms: int | None = None  # the time of the newest data published (ticks too)


class CollectorLink(Protocol):
    """The collecting side as the serving side sees it."""

    @property
    def status(self) -> CollectorStatus:
        """The status of the collector's refreshes."""
        ...

    @property
    def started(self) -> asyncio.Event:
        """Set once the collector's market source has started (symbols known)."""
        ...

    def symbols(self) -> list[str] | None:
        """The symbols collected (those the exchange lists), None before the source started."""
        ...

    def listing_issue(self, symbol: str) -> dict | None:
        """The symbol's listing issue as the latest refresh saw it (``delisted``,
        ``unserved`` or ``not_listed``, see ``app.market.listing``), None when served."""
        ...

    def exchange_breakers(self) -> dict[str, dict]:
        """The exchange's circuit breakers, ``"<exchange>:<operation>"`` → snapshot
        (``state``, counts, transitions); empty for a source without breakers."""
        ...

    def problems(self) -> list[str]:
        """Why the collector cannot be counted on now (readiness reasons, e.g. it stopped
        reporting); empty when all is well. Refresh failures are in ``status``."""
        ...

    async def refresh(self, force: bool = False) -> None:
        """Asks for a refresh now (``force``: even if one was recent); returns once its
        views are published or it failed (raises what the refresh raised)."""
        ...

    async def candles(self, symbol: str, timeframe: str) -> tuple[bytes, int]:
        """The serialized candles view of ``symbol`` at ``timeframe`` and its
        ``generated_at`` (epoch ms); raises what the source raised."""
        ...


class LocalCollector:
    """The link to the pipeline of this very process (the embedded service)."""

    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline

    @property
    def status(self) -> CollectorStatus:
        return self.pipeline.status

    @property
    def started(self) -> asyncio.Event:
        return self.pipeline.source_started

    def symbols(self) -> list[str] | None:
        collector = self.pipeline.collector
        return None if collector is None else list(collector.symbols)

    def listing_issue(self, symbol: str) -> dict | None:
        collector = self.pipeline.collector
        issue = None if collector is None else collector.listing.issues.get(symbol)
        return None if issue is None else issue.to_dict()

    def exchange_breakers(self) -> dict[str, dict]:
        source = self.pipeline.source
        found = getattr(source, "breakers", None)
        if not callable(found):
            return {}
        return {f"{source.name}:{name}": b.snapshot() for name, b in found().items()}

    def problems(self) -> list[str]:
        return []  # the collector is this process: it is there while the process is

    async def refresh(self, force: bool = False) -> None:
        await self.pipeline.refresh(force=force)

    async def candles(self, symbol: str, timeframe: str) -> tuple[bytes, int]:
        return await self.pipeline.candles(symbol, timeframe)
