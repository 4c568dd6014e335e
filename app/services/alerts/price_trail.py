"""The prices a symbol went through between two alert evaluations, from its 1m candles.

A snapshot's ticker gives one price; the 1m candles give every extreme the exchange
traded at. ``PriceTrails.take`` returns, per symbol, the candle prices that are new
since the previous call (oldest first), so the alert engine can judge a spike that
crossed a threshold and came back between two snapshots.

Inside one candle the order of its high and low is unknown; the usual bar-path
convention is used: a rising candle (close ≥ open) goes open → low → high → close, a
falling one open → high → low → close. For the candle that was forming at the
previous call only what moved is new: a higher high, a lower low (ordered by whether
the price rose since), and the close. A symbol's first call returns nothing (there is
no "since"), and at most ``MAX_CANDLES`` candles are walked after a long gap.

The marks (where each symbol was read last) are plain JSON (``marks``/``PriceTrails(marks)``)
so that, with several replicas, whichever evaluates next continues from the same place
(the alert store keeps them beside the engine's state).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from app.market.models.candles import Candles

Point = tuple[float, str]  # (price, where it was seen)
MAX_CANDLES = 120  # two hours of 1m candles


@dataclass(frozen=True, slots=True)
class _Mark:
    """The newest 1m candle at the previous call."""

    open_ms: int
    high: float
    low: float
    close: float


class PriceTrails:
    """Per symbol, the 1m-candle prices seen since the previous ``take``. ``marks``: a
    previous ``marks()`` (ignored when malformed: the trails start afresh)."""

    def __init__(self, marks: dict[str, Any] | None = None) -> None:
        self._marks: dict[str, _Mark] = {}
        for symbol, mark in (marks or {}).items():
            try:
                open_ms, high, low, close = mark
                self._marks[str(symbol)] = _Mark(
                    int(open_ms), float(high), float(low), float(close)
                )
            except (TypeError, ValueError):
                continue

    def marks(self) -> dict[str, list[float]]:
        """Where each symbol was read last: ``{symbol: [open_ms, high, low, close]}``."""
        return {s: [m.open_ms, m.high, m.low, m.close] for s, m in self._marks.items()}

    def take(self, symbol: str, candles: Candles | None) -> tuple[Point, ...]:
        """The prices of ``candles`` (1m, oldest first) new since the previous call for
        ``symbol``, oldest first; remembers the newest candle. No candles: nothing (and
        the previous mark is kept)."""
        if candles is None or len(candles) == 0:
            return ()
        mark = self._marks.get(symbol)
        n = len(candles)
        self._marks[symbol] = _Mark(
            int(candles.timestamp_ms[n - 1]),
            float(candles.high[n - 1]),
            float(candles.low[n - 1]),
            float(candles.close[n - 1]),
        )
        if mark is None:
            return ()
        points: list[Point] = []
        for i in range(max(0, n - MAX_CANDLES), n):
            opened = int(candles.timestamp_ms[i])
            if opened == mark.open_ms:
                points += _moved_since(mark, candles, i)
            elif opened > mark.open_ms:
                points += _bar_path(candles, i)
        return tuple(points)

    def forget(self, keep: set[str]) -> None:
        """Drops the marks of symbols not in ``keep`` (no longer collected)."""
        for symbol in set(self._marks) - keep:
            del self._marks[symbol]


def _bar_path(candles: Candles, i: int) -> list[Point]:
    o, h = float(candles.open[i]), float(candles.high[i])
    low, c = float(candles.low[i]), float(candles.close[i])
    if c >= o:
        return [(o, "1m open"), (low, "1m low"), (h, "1m high"), (c, "1m close")]
    return [(o, "1m open"), (h, "1m high"), (low, "1m low"), (c, "1m close")]


def _moved_since(mark: _Mark, candles: Candles, i: int) -> list[Point]:
    h, low, c = float(candles.high[i]), float(candles.low[i]), float(candles.close[i])
    high_point = [(h, "1m high")] if h > mark.high else []
    low_point = [(low, "1m low")] if low < mark.low else []
    ordered = low_point + high_point if c >= mark.close else high_point + low_point
    return [*ordered, (c, "1m close")]
