"""Derivatives positioning collected on its own cadence.

Funding settles every few hours and open interest and account ratios are published
hourly, so the derivatives of the served symbols are read at most every
``every_seconds`` (a minute by default), not on every market refresh; between reads the
last one is handed to every snapshot, each value with its own ``timestamp_ms`` (the
views show how old it is). A failed read keeps the last good one and names every
symbol it covered in the snapshot's ``missing``; it is tried again at the cadence, not
on every refresh.

A read runs beside the refreshes, never inside one: a slow or hanging derivatives
endpoint (bounded by the guarded source's timeout) must not hold back prices, candles
and books. A snapshot takes the last read that finished; the first one waits for the
first read at most ``FIRST_READ_WAIT_SECONDS`` (a start shows the derivatives at once
when the exchange answers quickly, and is not held longer when it does not).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from app.backends.tasks import cancel_and_wait
from app.market.errors import MarketDataError
from app.market.models.derivatives import DerivativesRead
from app.market.sources.base import MarketSource, fetch_derivatives

log = logging.getLogger(__name__)

DEFAULT_EVERY_SECONDS = 60.0
FIRST_READ_WAIT_SECONDS = 3.0


class DerivativesCollector:
    """Reads ``source``'s derivatives (``fetch_derivatives``) at most every
    ``every_seconds`` (of the clock the caller passes as ``now``) and keeps the last good
    read. Raises ValueError for a non-positive cadence."""

    def __init__(self, source: MarketSource, every_seconds: float = DEFAULT_EVERY_SECONDS) -> None:
        if not every_seconds > 0:
            raise ValueError("every_seconds must be > 0")
        self.source = source
        self.every_seconds = every_seconds
        self.last = DerivativesRead()
        self.error: str | None = None
        self._tried_at: float | None = None
        self._task: asyncio.Task[None] | None = None

    def due(self, now: float) -> bool:
        """Never tried, or the last try is ``every_seconds`` old."""
        return self._tried_at is None or now - self._tried_at >= self.every_seconds

    async def read(
        self, symbols: Sequence[str], now: float, missing: dict[str, str]
    ) -> DerivativesRead:
        """The last finished read, cut to ``symbols``; a new read is started in the
        background when due (one at a time). While reads fail, each symbol the last read
        had data for is named in ``missing`` as ``SYMBOL/derivatives`` (the values kept
        grow old, visibly), and a history that failed alone as well."""
        if self.due(now) and (self._task is None or self._task.done()):
            first = self._tried_at is None
            self._tried_at = now
            self._task = asyncio.create_task(self._refresh(list(symbols)), name="derivatives")
            if first:  # the first snapshot waits a little for it, never long
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(self._task), FIRST_READ_WAIT_SECONDS)
        wanted = set(symbols)
        last = self.last
        for symbol, reason in last.partial.items():
            if symbol in wanted:
                missing[f"{symbol}/derivatives"] = reason
        if self.error is not None:
            for symbol in symbols:
                if symbol not in last.unavailable:
                    missing[f"{symbol}/derivatives"] = self.error
        return DerivativesRead(
            by_symbol={s: d for s, d in last.by_symbol.items() if s in wanted},
            unavailable={s: r for s, r in last.unavailable.items() if s in wanted},
            partial={s: r for s, r in last.partial.items() if s in wanted},
        )

    async def settled(self) -> None:
        """Waits for the read under way, if any (tests; shutdown)."""
        if self._task is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(self._task)

    async def close(self) -> None:
        """Cancels the read under way, if any."""
        task, self._task = self._task, None
        await cancel_and_wait([task])

    async def _refresh(self, symbols: Sequence[str]) -> None:
        try:
            self.last = await fetch_derivatives(self.source, symbols)
        except MarketDataError as error:
            if self.error is None:
                log.warning("derivatives unavailable: %s", error)
            self.error = str(error)
            return
        except Exception as error:  # a source's bug must not end the refreshes
            log.exception("derivatives read failed")
            self.error = f"unreadable: {error!r:.200}"
            return
        if self.error is not None:
            log.info("derivatives available again")
        self.error = None
