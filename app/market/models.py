"""Market data value types shared by every source and every analytic.

Symbols are canonical compact ids such as ``BTCUSDT`` (base + quote, upper case);
each source maps them to its own notation. :class:`CandleQuality` is here, not with
the cleaning rules (``app.market.sources.quality``), because every ``Candles`` carries
one to the analytics and the views, which know no source.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Literal, get_args

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
        return not any(asdict(self).values())

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


Timeframe = Literal["1m", "5m", "30m", "1h", "4h", "1d"]
"""The candle timeframes the service reads and serves (keys of TIMEFRAME_SECONDS)."""

TIMEFRAME_SECONDS: dict[str, int] = {
    "1m": 60,
    "5m": 300,
    "30m": 1800,
    "1h": 3600,
    "4h": 14400,
    "1d": 86400,
}
TIMEFRAMES: tuple[str, ...] = get_args(Timeframe)

QUOTE_ASSETS: tuple[str, ...] = ("USDT", "USDC", "USD", "BTC", "EUR")
_SYMBOL_CHARS = re.compile(r"^[A-Z0-9]{2,20}$")


def canonical_symbol(text: str) -> str:
    """``btc/usdt``, ``BTC-USDT`` and ``BTCUSDT`` all become ``BTCUSDT``.

    Raises ValueError for anything that cannot be a symbol.
    """
    compact = re.sub(r"[/\-_:]", "", text.strip().upper())
    if not _SYMBOL_CHARS.match(compact):
        raise ValueError(f"not a symbol: {text!r}")
    return compact


def split_symbol(symbol: str) -> tuple[str, str]:
    """``BTCUSDT`` → (``BTC``, ``USDT``) guessed from common quote assets: a fallback
    only — base and quote come from the exchange's market definitions (see
    ``app.market.sources.base.market_assets``). Raises ValueError when no suffix matches."""
    for quote in QUOTE_ASSETS:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"unknown quote asset in {symbol!r}; known: {', '.join(QUOTE_ASSETS)}")


@dataclass(frozen=True, slots=True)
class Ticker:
    """24-hour rolling statistics of one symbol. Volumes: base units and quote (USD) units.

    ``last`` is always a positive price: a symbol without one has no Ticker (the
    snapshot names it in ``unpriced``). ``change_24h_pct`` is NaN when unknown."""

    symbol: str
    last: float
    bid: float
    ask: float
    open_24h: float
    high_24h: float
    low_24h: float
    change_24h_pct: float
    base_volume_24h: float
    quote_volume_24h: float
    timestamp_ms: int
    missing: tuple[str, ...] = ()
    """Fields the exchange sent no usable value for (``bid``, ``ask``, ``high_24h``,
    ``low_24h``, ``change_24h``, ``volume_24h``): their values here are fallbacks (see
    ``app.market.sources.ccxt.ticker_from_ccxt``) and are shown as null."""


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
        start = max(0, len(self) - count)
        return Candles(
            self.symbol,
            self.timeframe,
            self.timestamp_ms[start:],
            self.open[start:],
            self.high[start:],
            self.low[start:],
            self.close[start:],
            self.volume[start:],
            self.quality,
        )


@dataclass(frozen=True, slots=True)
class OrderBook:
    """Top of the order book: ``bids`` best (highest) first, ``asks`` best (lowest) first.

    Each side is a float64 array of shape (levels, 2): price, quantity in base units.
    """

    symbol: str
    bids: np.ndarray
    asks: np.ndarray
    timestamp_ms: int

    @property
    def mid(self) -> float:
        return float((self.bids[0, 0] + self.asks[0, 0]) / 2)
