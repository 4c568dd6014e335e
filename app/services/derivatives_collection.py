"""Derivatives positioning collected on its own cadence.

Funding settles every few hours and open interest and account ratios are published
hourly, so the derivatives of the served symbols are read at most every
``every_seconds`` (a minute by default), not on every market refresh; between reads the
last one is handed to every snapshot, each value with its own ``timestamp_ms`` (the
views show how old it is). A failed read keeps the last good one and names every
symbol it covered in the snapshot's ``missing``; it is tried again at the cadence, not
on every refresh.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from app.market.errors import MarketDataError
from app.market.models.derivatives import DerivativesRead
from app.market.sources.base import MarketSource, fetch_derivatives

log = logging.getLogger(__name__)

DEFAULT_EVERY_SECONDS = 60.0


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

    def due(self, now: float) -> bool:
        """Never tried, or the last try is ``every_seconds`` old."""
        return self._tried_at is None or now - self._tried_at >= self.every_seconds

    async def read(
        self, symbols: Sequence[str], now: float, missing: dict[str, str]
    ) -> DerivativesRead:
        """The derivatives of ``symbols``: read anew when due, else the last read (cut to
        ``symbols``). While reads fail, each symbol the last read had data for is named
        in ``missing`` as ``SYMBOL/derivatives`` (the values kept grow old, visibly)."""
        if self.due(now):
            self._tried_at = now
            await self._refresh(symbols)
        if self.error is not None:
            for symbol in symbols:
                if symbol not in self.last.unavailable:
                    missing[f"{symbol}/derivatives"] = self.error
        wanted = set(symbols)
        return DerivativesRead(
            by_symbol={s: d for s, d in self.last.by_symbol.items() if s in wanted},
            unavailable={s: r for s, r in self.last.unavailable.items() if s in wanted},
        )

    async def _refresh(self, symbols: Sequence[str]) -> None:
        try:
            self.last = await fetch_derivatives(self.source, symbols)
        except MarketDataError as error:
            if self.error is None:
                log.warning("derivatives unavailable: %s", error)
            self.error = str(error)
            return
        if self.error is not None:
            log.info("derivatives available again")
        self.error = None
