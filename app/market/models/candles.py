"""OHLCV candles of one symbol and timeframe (numpy arrays), and what cleaning did to
them on arrival.

:class:`CandleQuality` is here, not with the cleaning rules
(``app.market.sources.quality``), because every ``Candles`` carries one to the
analytics and the views, which know no source.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CANDLE_KINDS: tuple[str, ...] = ("filled", "dropped", "duplicates", "reordered", "gaps", "missing")


@dataclass(frozen=True, slots=True)
class CandleQuality:
    """What cleaning did to one fetch of candles (counts of rows or, for ``gaps``,
    of holes); all zero for a clean fetch."""

    filled: int = 0
    dropped: int = 0
    duplicates: int = 0
    reordered: int = 0
    gaps: int = 0
    missing: int = 0
    empty: int = 0  # 1 when the fetch left no usable candle at all (an empty answer)

    @property
    def clean(self) -> bool:
        return self == CLEAN  # field by field (``asdict`` was a hot spot of view building)

    def to_dict(self) -> dict[str, int]:
        """``{"candles_filled": 3, "candles_dropped": 0, ..., "gaps": 1,
        "missing_candles": 2}`` — the per-timeframe ``data_quality`` note."""
        return {
            "candles_filled": self.filled,
            "candles_dropped": self.dropped,
            "duplicate_candles": self.duplicates,
            "reordered_candles": self.reordered,
            "gaps": self.gaps,
            "missing_candles": self.missing,
            "candles_empty": self.empty,
        }


CLEAN = CandleQuality()
"""The quality of candles nothing had to be done to."""


@dataclass(frozen=True, slots=True)
class Candles:
    """OHLCV candles of one symbol and timeframe, oldest first.

    ``timestamp_ms`` is each candle's open time (int64); the price and volume
    columns are float64 arrays of the same length. The newest candle may still
    be forming.
    """

    symbol: str
    timeframe: str
    timestamp_ms: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    quality: CandleQuality = CLEAN
    """What cleaning did to these candles on arrival (``app.market.sources.quality``)."""

    def __len__(self) -> int:
        return int(self.close.shape[0])

    @classmethod
    def from_rows(
        cls,
        symbol: str,
        timeframe: str,
        rows: list[list[float]],
        quality: CandleQuality | None = None,
    ) -> Candles:
        """Build from clean ccxt-style rows ``[ts_ms, open, high, low, close, volume]``,
        oldest first (see ``app.market.sources.quality.clean_candle_rows``)."""
        table = np.asarray(rows, dtype=np.float64).reshape(-1, 6)
        return cls(
            symbol=symbol,
            timeframe=timeframe,
            timestamp_ms=table[:, 0].astype(np.int64),
            open=table[:, 1].copy(),
            high=table[:, 2].copy(),
            low=table[:, 3].copy(),
            close=table[:, 4].copy(),
            volume=table[:, 5].copy(),
            quality=quality or CLEAN,
        )

    def tail(self, count: int) -> Candles:
        """The newest ``count`` candles."""
        return self._cut(max(0, len(self) - count), len(self))

    def closed(self) -> Candles:
        """All but the newest candle (the one a live series is still forming)."""
        return self._cut(0, max(0, len(self) - 1))

    def _cut(self, start: int, end: int) -> Candles:
        return Candles(
            self.symbol,
            self.timeframe,
            self.timestamp_ms[start:end],
            self.open[start:end],
            self.high[start:end],
            self.low[start:end],
            self.close[start:end],
            self.volume[start:end],
            self.quality,
        )
