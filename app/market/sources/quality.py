"""Exchange data as it arrives: the cleaning rules for candles and the per-symbol
data-quality counters. They belong to the sources (the ccxt source applies them to
what the exchange sends); what cleaning did travels with the candles as
:class:`~app.market.models.candles.CandleQuality`.

Candle rules (applied by ``clean_candle_rows``, in this order; each one counted):

* ``dropped``: a row whose open time is missing or not a number cannot be placed
  and is dropped.
* ``reordered``: rows are sorted by open time (Bybit sends newest first; ccxt
  reverses it; anything else out of order is counted here).
* ``duplicates``: rows with the same open time keep the one that came *last* (the
  latest version of that candle: an exchange repeats a candle as it is revised).
* ``filled``: a candle whose open/high/low/close is empty, null, NaN, infinite or not
  positive is a minute without trades: it carries the previous candle's close as
  open, high, low and close with zero volume. A bad first candle has no previous
  close and is dropped (``dropped``). A bad volume alone becomes 0 (``filled``).
* ``gaps`` / ``missing``: open times further apart than one timeframe are left as
  gaps (nothing is invented); ``gaps`` counts the holes, ``missing`` the candles
  absent from them. Analytics that assume continuity (the TA-Lib indicators of
  confluence) run across them and report the count as ``gaps_bridged``; beta takes
  returns only between consecutive candles (see ``app.market.analytics.beta``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from itertools import pairwise
from typing import Any

from app.market.models.candles import CandleQuality


def finite(value: Any) -> float | None:
    """A finite float, or None for missing, empty (``""``), ``"NaN"``, infinite or
    unparsable values."""
    if value is None or value == "" or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def _placed(rows: Iterable[Sequence[Any]]) -> tuple[list[tuple[int, list[Any]]], int]:
    """(open time, row) of the rows that have a usable open time; and how many had not."""
    placed, dropped = [], 0
    for row in rows:
        when = finite(row[0]) if row else None
        if when is None:
            dropped += 1
        else:
            placed.append((int(when), list(row)))
    return placed, dropped


def _ordered_unique(placed: list[tuple[int, list[Any]]]) -> tuple[list, int, int]:
    """Sorted by open time, the last arrival kept per time; (rows, reordered, duplicates)."""
    times = [when for when, _ in placed]
    latest: dict[int, list[Any]] = {}
    for when, row in placed:
        latest[when] = row
    order = sorted(times)
    reordered = sum(1 for a, b in zip(times, order, strict=True) if a != b)
    return sorted(latest.items()), reordered, len(placed) - len(latest)


def _filled(rows: list[tuple[int, list[Any]]]) -> tuple[list[list[float]], int, int]:
    """Apply the no-trade rule; (clean rows, filled, dropped first rows)."""
    out: list[list[float]] = []
    filled = dropped = 0
    for when, row in rows:
        prices = [finite(v) for v in (list(row[1:5]) + [None] * 4)[:4]]
        volume = finite(row[5]) if len(row) > 5 else None
        positive = [p for p in prices if p is not None and p > 0]
        if len(positive) == len(prices):
            if volume is None or volume < 0:
                filled += 1
            out.append([when, *positive, volume if volume is not None and volume >= 0 else 0.0])
        elif out:
            filled += 1
            close = out[-1][4]
            out.append([when, close, close, close, close, 0.0])
        else:
            dropped += 1
    return out, filled, dropped


def count_gaps(times: Sequence[int], period_ms: int) -> tuple[int, int]:
    """(holes, candles missing from them) in ascending open times ``times`` (ms) with
    one candle every ``period_ms``."""
    gaps = missing = 0
    for a, b in pairwise(times):
        if b - a > period_ms:
            gaps += 1
            missing += (b - a) // period_ms - 1
    return gaps, missing


def clean_candle_rows(
    rows: Iterable[Sequence[Any]], period_ms: int
) -> tuple[list[list[float]], CandleQuality]:
    """Clean ccxt OHLCV rows ``[open time ms, open, high, low, close, volume]`` (any
    order, values possibly None/""/"NaN") by the module's rules.

    Returns rows oldest first with strictly increasing open times and finite values,
    and what was done. Never raises on bad values.
    """
    placed, bad_times = _placed(rows)
    ordered, reordered, duplicates = _ordered_unique(placed)
    cleaned, filled, bad_first = _filled(ordered)
    gaps, missing = count_gaps([int(row[0]) for row in cleaned], period_ms)
    quality = CandleQuality(filled, bad_times + bad_first, duplicates, reordered, gaps, missing)
    return cleaned, quality


class DataQualityCounters:
    """Per-symbol counts of bad exchange data, since start: ``counts[symbol][kind]``.

    Kinds: the candle kinds (``candles_filled``, ``candles_dropped``,
    ``duplicate_candles``, ``reordered_candles``, ``gaps``, ``missing_candles``), the
    ticker kinds (``ticker_missing``: no ticker at all; ``ticker_fields_missing``: a
    ticker lacking some fields; ``ticker_unpriced``: no usable last price, empty or 0),
    and the derivatives kinds (``app.market.sources.ccxt_derivatives.QUALITY_KINDS``:
    a funding rate, funding time, open interest or its value refused, history points
    dropped).

    Each kind also opens a log *episode* per (symbol, detail): ``start_episode``
    returns True only on the first bad observation after a clean one, so the caller
    logs one line per episode, and ``end_episode`` True when it clears.
    """

    def __init__(self) -> None:
        self.counts: dict[str, Counter[str]] = {}
        self._open: set[tuple[str, str]] = set()

    def add(self, symbol: str, kind: str, amount: int = 1) -> None:
        """Count ``amount`` occurrences of ``kind`` for ``symbol`` (0 adds nothing)."""
        if amount:
            self.counts.setdefault(symbol, Counter())[kind] += amount

    def add_candles(self, symbol: str, quality: CandleQuality) -> None:
        for kind, amount in quality.to_dict().items():
            self.add(symbol, kind, amount)

    def start_episode(self, symbol: str, detail: str) -> bool:
        """True when this is a new episode (log it), False while it goes on."""
        key = (symbol, detail)
        if key in self._open:
            return False
        self._open.add(key)
        return True

    def end_episode(self, symbol: str, detail: str) -> bool:
        """True when an open episode ends (log its end)."""
        key = (symbol, detail)
        if key not in self._open:
            return False
        self._open.discard(key)
        return True

    def snapshot(self) -> dict[str, dict[str, int]]:
        """A copy: ``{symbol: {kind: count}}``."""
        return {symbol: dict(kinds) for symbol, kinds in self.counts.items()}
