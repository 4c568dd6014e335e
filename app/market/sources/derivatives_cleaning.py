"""The cleaning rules for derivatives data as an exchange sends it (funding rates, open
interest, long/short ratios and their histories): a value that cannot be right becomes
None (a history point is dropped), and the caller counts it in the source's data-quality
counters (``app.market.sources.quality.DataQualityCounters``). Nothing here raises on
bad input.

Rules (``finite`` first: missing, empty, ``"NaN"``, infinite or unparsable is bad):

* funding rate: a fraction per funding interval, bad beyond ±``MAX_FUNDING_RATE``
  (5 %: exchanges clamp funding far below that — Bybit's caps are a few tenths of a
  percent to 2 % per interval for most contracts — so a larger value is a unit or
  parsing error, not a market);
* a time (epoch ms): bad unless positive;
* the next funding time (epoch ms), against the exchange's time of the read: bad when
  more than ``NEXT_FUNDING_PAST_MS`` (5 minutes) before it — a settlement a few minutes
  past may not be rolled over yet in the answer, one older is stale — or more than
  ``NEXT_FUNDING_AHEAD_MS`` (8 days) after it — funding intervals are hours (Bybit:
  1 to 8 h), so a time days ahead is a unit or clock error, not a schedule;
* open interest (contracts) and its value (quote): bad when negative (0 is a
  contract nobody holds);
* long/short account ratio: bad unless positive (accounts long ÷ short; 0 would mean no
  long account at all, and an exchange that has none sends no ratio).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from app.market.models.derivatives import Point
from app.market.sources.quality import finite

MAX_FUNDING_RATE = 0.05
"""The largest believable funding rate per interval, either sign (a fraction)."""
NEXT_FUNDING_PAST_MS = 5 * 60_000
"""How long before the read's time a next funding time may be (a settlement not yet
rolled over in the answer)."""
NEXT_FUNDING_AHEAD_MS = 8 * 24 * 3_600_000
"""How far after the read's time a next funding time may be."""


def funding_rate(value: Any) -> float | None:
    """A funding rate within ±``MAX_FUNDING_RATE``, else None."""
    number = finite(value)
    return number if number is not None and abs(number) <= MAX_FUNDING_RATE else None


def time_ms(value: Any) -> int | None:
    """A positive epoch-ms time, else None."""
    number = finite(value)
    return int(number) if number is not None and number > 0 else None


def next_funding_time(value: Any, now_ms: int) -> int | None:
    """A next funding time (epoch ms) within [``now_ms − NEXT_FUNDING_PAST_MS``,
    ``now_ms + NEXT_FUNDING_AHEAD_MS``] of the read's time ``now_ms`` (the exchange's,
    epoch ms), else None."""
    stamp = time_ms(value)
    if stamp is None or not -NEXT_FUNDING_PAST_MS <= stamp - now_ms <= NEXT_FUNDING_AHEAD_MS:
        return None
    return stamp


def amount(value: Any) -> float | None:
    """A non-negative amount (open interest in contracts, or its value), else None."""
    number = finite(value)
    return number if number is not None and number >= 0 else None


def ratio(value: Any) -> float | None:
    """A positive ratio, else None."""
    number = finite(value)
    return number if number is not None and number > 0 else None


def field(entry: Mapping[str, Any] | None, unified: str, raw: str | None = None) -> Any:
    """``entry[unified]`` (ccxt's parsed value), else the exchange's own field ``raw``
    (default the same name) from ``entry["info"]``: ccxt turns a value it cannot parse
    (``"abc"``) into None, and the raw text is what tells it was sent, and bad."""
    if not isinstance(entry, Mapping):
        return None
    value = entry.get(unified)
    if value is None:
        info = entry.get("info")
        if isinstance(info, Mapping):
            value = info.get(raw or unified)
    return value


def history(
    rows: Iterable[Any], value_key: str, clean: Callable[[Any], float | None], raw_key: str
) -> tuple[tuple[Point, ...], int, bool]:
    """ccxt history rows (``timestamp`` and ``value_key``, any order) → points oldest
    first, one per time (the last row sent for a time wins), bad ones dropped.

    Returns ``(points, dropped, newest_ok)``: how many rows were dropped, and whether
    the newest row sent (by time) is among the points — when it is not, the current
    value is unknown (an older point is not "now")."""
    kept: dict[int, float] = {}
    dropped = 0
    newest_sent: int | None = None
    for row in rows:
        stamp = time_ms(field(row, "timestamp"))
        value = clean(field(row, value_key, raw_key))
        if stamp is not None:
            newest_sent = stamp if newest_sent is None else max(newest_sent, stamp)
        if stamp is None or value is None:
            dropped += 1
            continue
        kept[stamp] = value
    points = tuple(sorted(kept.items()))
    newest_ok = bool(points) and points[-1][0] == newest_sent
    return points, dropped, newest_ok
