"""Exchange data as it arrives: the plausibility bounds and cleaning rules for what an
exchange sends, and the per-symbol data-quality counters. They belong to the sources
(the ccxt source and the stream readers apply them to what the exchange sends); what
cleaning did travels with the candles as
:class:`~app.market.models.candles.CandleQuality`.

Bounds (one place for every kind of data: tickers, book levels, candles, trades):

* ``MAX_PRICE``: a price is plausible when finite, above 0 and below 1e12 quote units.
  The dearest spot pairs quote around 1e5–1e6 (BTC in USD, in TRY, in IDR ~1e9 at
  most); 1e12 leaves three orders of magnitude of room, and anything above is a
  corrupt field (``"1e308"``) whose arithmetic overflows the analytics.
* ``MAX_VOLUME``: a volume or size is plausible when finite, not negative and below
  1e18 base (or quote) units: the largest supplies of meme tokens are ~1e15, and 1e18
  keeps a product of a price and a volume (< 1e30) far from float overflow.
* ``MAX_CHANGE_PCT``: a 24 h change is plausible when finite, above -100 % and below
  1e6 % (a ten-thousandfold rise in a day, beyond any real listing spike).
* ``FUTURE_TOLERANCE_MS``: an exchange time up to 60 s ahead of our clock is clock
  skew; further ahead it is wrong, and a time from the future would keep the data
  looking fresh forever (the quiet and stale checks compare against it). It is
  replaced by the time we received the data (a ticker, a book) or the row is dropped
  (a trade, a candle), and counted (``future_timestamp``).

A value out of its bound is treated like NaN: the field is missing, or the row
dropped, and counted (``implausible_value``).

Candle rules (applied by ``clean_candle_rows``, in this order; each one counted):

* ``dropped``: a row whose open time is missing, not a number, or more than
  ``FUTURE_TOLERANCE_MS`` ahead of our clock cannot be placed and is dropped.
* ``reordered``: rows are sorted by open time (Bybit sends newest first; ccxt
  reverses it; anything else out of order is counted here).
* ``duplicates``: rows with the same open time keep the one that came *last* (the
  latest version of that candle: an exchange repeats a candle as it is revised).
* ``filled``: a candle whose open/high/low/close is empty, null, NaN, infinite or not
  positive is a minute without trades: it carries the previous candle's close as
  open, high, low and close with zero volume; so is one with a price out of the
  plausible bound (``MAX_PRICE``), and one whose high and low do not bound its open
  and close (high below low: a corrupt row, nothing of it can be trusted). A bad
  first candle has no previous close and is dropped (``dropped``). A bad or
  implausible volume alone becomes 0 (``filled``).
* ``gaps`` / ``missing``: open times further apart than one timeframe are left as
  gaps (nothing is invented); ``gaps`` counts the holes, ``missing`` the candles
  absent from them. Analytics that assume continuity (the TA-Lib indicators of
  confluence) run across them and report the count as ``gaps_bridged``; beta takes
  returns only between consecutive candles (see ``app.market.analytics.beta``).
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import pairwise
from typing import Any

import numpy as np

from app.market.models.candles import CandleQuality

MAX_PRICE = 1e12
"""Prices at or above this many quote units are implausible (see the module docstring)."""
MAX_VOLUME = 1e18
"""Volumes and sizes at or above this many units are implausible."""
MAX_CHANGE_PCT = 1e6
"""24 h changes (percent) at or above this are implausible."""
FUTURE_TOLERANCE_MS = 60_000
"""How far (ms) an exchange time may run ahead of our clock before it is wrong."""

FUTURE_TIMESTAMP = "future_timestamp"
"""Data-quality kind: an exchange time beyond ``FUTURE_TOLERANCE_MS`` ahead of ours."""
IMPLAUSIBLE_VALUE = "implausible_value"
"""Data-quality kind: a price, volume or change out of its plausible bound."""


def now_ms() -> int:
    """Our clock: epoch milliseconds."""
    return int(time.time() * 1000)


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


def price(value: Any) -> float | None:
    """A plausible price: finite, above 0 and below ``MAX_PRICE``; else None."""
    number = finite(value)
    return number if number is not None and 0 < number < MAX_PRICE else None


def volume(value: Any) -> float | None:
    """A plausible volume or size: finite, at least 0 and below ``MAX_VOLUME``; else None."""
    number = finite(value)
    return number if number is not None and 0 <= number < MAX_VOLUME else None


def change_pct(value: Any) -> float | None:
    """A plausible 24 h change in percent: finite, above -100 and below ``MAX_CHANGE_PCT``."""
    number = finite(value)
    return number if number is not None and -100 < number < MAX_CHANGE_PCT else None


def implausible(value: Any, plausible: Callable[[Any], float | None]) -> bool:
    """Whether ``value`` is a number (finite) that ``plausible`` refuses: a field that
    was sent but is out of bound (a missing, empty or NaN field is not counted here)."""
    return finite(value) is not None and plausible(value) is None


def from_future(stamp: Any, now: int) -> bool:
    """Whether the exchange time ``stamp`` (epoch ms) is more than
    ``FUTURE_TOLERANCE_MS`` ahead of ``now`` (epoch ms)."""
    number = finite(stamp)
    return number is not None and number > now + FUTURE_TOLERANCE_MS


def exchange_time(stamp: Any, received_ms: int) -> int:
    """The time to keep for data the exchange stamped ``stamp`` (epoch ms) and we
    received at ``received_ms``: the exchange's, unless it is missing or from the
    future (``from_future``), then ours."""
    number = finite(stamp)
    if number is None or from_future(number, received_ms):
        return received_ms
    return int(number)


_TICKER_BOUNDS: dict[str, Callable[[Any], float | None]] = {
    **dict.fromkeys(("last", "close", "bid", "ask", "high", "low", "open"), price),
    "baseVolume": volume,
    "quoteVolume": volume,
    "percentage": change_pct,
}
"""ccxt's unified ticker fields and the bound each must keep."""


def ticker_anomalies(raw: Mapping[str, Any], now: int) -> list[str]:
    """The data-quality kinds a ccxt unified ticker ``raw`` received at ``now`` (epoch
    ms) shows: ``future_timestamp`` and/or ``implausible_value`` (a price below 0 or
    at ``MAX_PRICE`` and above, a volume or change out of bound). A missing or 0
    price is not one of them (``ticker_unpriced`` / ``ticker_fields_missing``)."""
    kinds = []
    if from_future(raw.get("timestamp"), now):
        kinds.append(FUTURE_TIMESTAMP)
    if any(
        implausible(raw.get(key), bound) and finite(raw.get(key)) != 0
        for key, bound in _TICKER_BOUNDS.items()
    ):
        kinds.append(IMPLAUSIBLE_VALUE)
    return kinds


def plausible_level(level: Any) -> bool:
    """Whether a book level ``[price, size, …]`` has a plausible price and a plausible
    size above 0."""
    try:
        size = volume(level[1])
        return price(level[0]) is not None and size is not None and size > 0
    except (TypeError, IndexError, KeyError):
        return False


def clean_levels(levels: Any, depth: int) -> tuple[np.ndarray, int]:
    """The best ``depth`` plausible levels of one book side (ccxt levels ``[price,
    amount, (count)]``, best first) as a float64 array of shape (≤ depth, 2), and how
    many implausible levels were left out on the way (``plausible_level``)."""
    rows: list[list[float]] = []
    dropped = 0
    for level in levels or ():
        if len(rows) == depth:
            break
        if plausible_level(level):
            rows.append([float(level[0]), float(level[1])])
        else:
            dropped += 1
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2), dropped


def _placed(rows: Iterable[Sequence[Any]], now: int) -> tuple[list[tuple[int, list[Any]]], int]:
    """(open time, row) of the rows that have a usable open time (not from the future
    seen from ``now``); and how many had not."""
    placed, dropped = [], 0
    for row in rows:
        when = finite(row[0]) if row else None
        if when is None or from_future(when, now):
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
        prices = [price(v) for v in (list(row[1:5]) + [None] * 4)[:4]]
        amount = volume(row[5]) if len(row) > 5 else None
        positive = [p for p in prices if p is not None]
        if len(positive) == len(prices) and _bounded(*positive):
            if amount is None:
                filled += 1
            out.append([when, *positive, 0.0 if amount is None else amount])
        elif out:
            filled += 1
            close = out[-1][4]
            out.append([when, close, close, close, close, 0.0])
        else:
            dropped += 1
    return out, filled, dropped


def _bounded(open_: float, high: float, low: float, close: float) -> bool:
    """Whether high and low bound the candle's open and close."""
    return low <= min(open_, close) and high >= max(open_, close)


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
    rows: Iterable[Sequence[Any]], period_ms: int, now: int | None = None
) -> tuple[list[list[float]], CandleQuality]:
    """Clean ccxt OHLCV rows ``[open time ms, open, high, low, close, volume]`` (any
    order, values possibly None/""/"NaN"/absurd) by the module's rules; ``now``: our
    clock (epoch ms, default the wall clock), for open times from the future.

    Returns rows oldest first with strictly increasing open times and plausible
    values, and what was done. Never raises on bad values.
    """
    placed, bad_times = _placed(rows, now_ms() if now is None else now)
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
    ticker lacking some fields; ``ticker_unpriced``: no usable last price, empty, null,
    0 or implausible; ``ticker_unparsable``: ccxt could not read it), the kinds of
    every data kind (``future_timestamp``, ``implausible_value``; ``book_crossed``: a
    streamed order book whose best bid reached its best ask), and the derivatives kinds
    (``app.market.sources.ccxt_derivatives.QUALITY_KINDS``: a funding rate, funding
    time, open interest or its value refused, history points dropped).

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

    def observe(self, symbol: str, found: Iterable[str], watched: Iterable[str]) -> list[str]:
        """One observation of ``symbol``: count each kind in ``found``, end the episodes
        of the ``watched`` kinds not found. Returns the found kinds whose episode
        starts now (the caller logs one line for each)."""
        found = list(found)
        for kind in watched:
            if kind not in found:
                self.end_episode(symbol, kind)
        for kind in found:
            self.add(symbol, kind)
        return [kind for kind in found if self.start_episode(symbol, kind)]

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


Counts = dict[str, dict[str, int]]
"""``{symbol: {kind: count}}``, as ``DataQualityCounters.snapshot`` gives them."""


def merged(parts: Iterable[Counts]) -> Counts:
    """The sum of several ``{symbol: {kind: count}}``."""
    total: dict[str, Counter[str]] = {}
    for counts in parts:
        for symbol, kinds in counts.items():
            total.setdefault(symbol, Counter()).update(kinds)
    return {symbol: dict(kinds) for symbol, kinds in total.items()}


class MergedCounters:
    """The counts of several holders as one, read-only: ``snapshot()`` sums, at each
    call, the snapshots ``gather()`` returns (e.g. a REST source's and its stream
    readers', which come and go with the streams)."""

    def __init__(self, gather: Callable[[], Iterable[Counts]]) -> None:
        self.gather = gather

    def snapshot(self) -> Counts:
        """``{symbol: {kind: count}}`` summed over what ``gather`` returns now."""
        return merged(self.gather())
