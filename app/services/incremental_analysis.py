"""The Analysis of snapshots built many times a second, recomputing only what changed.

With exchange streams the collector builds a Snapshot on every price tick, but the
expensive analytics move much more slowly: a timeframe's confluence and a beta change
when a candle closes (a new one opens), not with every tick of the forming candle.
``IncrementalAnalyser`` keeps the expensive results between calls and recomputes:

- a symbol's confluence on one timeframe (``score_timeframe``) when that timeframe's
  candles changed: the open time of the last candle or the number of candles (a new
  candle opening means the previous one closed);
- all of a symbol's timeframes when its *live inputs* are due: its order book (or the
  forming candles) differ from what its scores were computed from and
  ``book_cadence_seconds`` have passed since they were last taken (order-book
  components refresh on a bounded cadence, not per tick); a book appearing or
  vanishing is taken at once;
- the combined (``COMBINED``) confluence when one of its timeframes was recomputed;
- a beta per (symbol, timeframe) when the symbol's or BTC's candles at that timeframe
  changed (last open time, count);
- everything of a symbol that appears, reappears after a listing issue, or failed.

``analyse(snapshot, max_rescored=n)`` (the collector's per-tick call) scores at most
``n`` symbols' confluence again; the other symbols that are due keep their last scores
until a later call takes them, in turn (round robin). Work that comes due for every
symbol at once — a candle closing on every symbol, a new derivatives read, the book
cadence of symbols that started together — is then spread over the next ticks instead
of holding one tick back for the whole market (≈ 45 ms of CPU for 25 symbols); the
refresh's call (no bound) catches up whatever is left. A symbol with no scores yet is
always scored.

The cheap sections (overview with BTC's 5m volatility, movers, signals, beta overview:
about 0.05 ms for 25 symbols) are computed on every call from the current tickers,
through ``app.services.analysis.assemble``, as ``analyse`` does. On a snapshot whose
inputs are all new the result equals ``analyse``'s exactly; afterwards it differs only
by the staleness allowed above (a forming candle's price moves, a book within its
cadence).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from functools import partial
from typing import TypeVar

import numpy as np

from app.market.analytics.beta import BETA_WINDOWS, BetaStats, explain_beta
from app.market.analytics.confluence import ConfluenceResult, combine_timeframes, score_timeframe
from app.market.analytics.overview import BTC
from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.services.analysis import (
    COMBINED,
    Analysis,
    AnalysisSettings,
    Expensive,
    assemble,
    failure_reason,
    traded,
)
from app.services.positioning import Positioning, PositioningKey, positioning_of
from app.services.snapshot import Snapshot

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_BOOK_CADENCE_SECONDS = 30.0

CandleKey = tuple[int, int]  # (open time of the last candle in ms, number of candles)
LastCandle = tuple[float, float, float, float]  # the last candle's close, high, low, volume


@dataclass(frozen=True, slots=True)
class AnalysisWork:
    """What analyses computed and what they reused, counted per unit of work:
    ``timeframes_*`` one symbol's confluence on one timeframe, ``combined_*`` one
    symbol's combined confluence, ``betas_*`` one symbol's beta on one timeframe;
    ``live_refreshes`` the symbols rescored because their live inputs (order book,
    forming candles) were due; ``symbols_held`` the symbols whose last scores were kept
    because the call's rescoring bound was reached. A failed computation counts as
    computed."""

    timeframes_computed: int = 0
    timeframes_reused: int = 0
    combined_computed: int = 0
    combined_reused: int = 0
    betas_computed: int = 0
    betas_reused: int = 0
    live_refreshes: int = 0
    symbols_held: int = 0

    def __add__(self, other: AnalysisWork) -> AnalysisWork:
        return AnalysisWork(
            **{f.name: getattr(self, f.name) + getattr(other, f.name) for f in fields(self)}
        )

    def to_dict(self) -> dict[str, int]:
        """``{"timeframes_computed": 4, ...}``, e.g. for metrics."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True, slots=True)
class _Scored:
    """One timeframe's confluence and the candles and positioning it was computed from."""

    key: CandleKey
    last: LastCandle
    result: ConfluenceResult
    positioning: PositioningKey = ()


@dataclass(slots=True)
class _SymbolMemo:
    """A symbol's confluence as last computed: the book its scores used, when it was
    taken (snapshot time, ms), each timeframe's score and the combined one."""

    book: OrderBook | None
    book_taken_ms: int
    scored: dict[str, _Scored] = field(default_factory=dict)
    combined: tuple[tuple[tuple[str, CandleKey, PositioningKey], ...], ConfluenceResult] | None = (
        None
    )


@dataclass(frozen=True, slots=True)
class _Beta:
    """One beta as last computed: its inputs' keys (asset, BTC) and the outcome
    (statistics, or None and why)."""

    key: tuple[CandleKey, CandleKey]
    stats: BetaStats | None
    reason: str


class _Episodes:
    """Section failures over repeated analyses: each failure is named in the call's
    ``errors``; it is logged (with its traceback) when it starts or its reason
    changes, and its end is logged once — not once per tick."""

    def __init__(self) -> None:
        self._failing: dict[str, str] = {}
        self._seen: dict[str, str] = {}

    def __call__(self, errors: dict[str, str], name: str, compute: Callable[[], T], /) -> T | None:
        try:
            return compute()
        except Exception as error:
            reason = failure_reason(error)
            errors[name] = reason
            self._seen[name] = reason
            if self._failing.get(name) != reason:
                log.warning("section %s unavailable: %s", name, error, exc_info=True)
            return None

    def end_call(self) -> None:
        """Closes the call: failures not seen in it have ended."""
        for name in self._failing.keys() - self._seen.keys():
            log.info("section %s available again", name)
        self._failing, self._seen = self._seen, {}


class IncrementalAnalyser:
    """Analyses successive snapshots of one market, reusing the expensive results
    (confluence per symbol and timeframe, betas) whose inputs did not change; see the
    module docstring for what counts as a change.

    ``analyse`` is CPU-bound (run it in a worker thread) and calls are serialised:
    the memos are this instance's state. ``last`` counts the work of the latest call,
    ``totals`` since construction."""

    def __init__(
        self,
        settings: AnalysisSettings,
        book_cadence_seconds: float = DEFAULT_BOOK_CADENCE_SECONDS,
    ) -> None:
        """``book_cadence_seconds``: the least time (snapshot time, ``fetched_at_ms``)
        between two rescorings of a symbol for a changed order book or forming candle;
        must not be negative (0 rescores on every change)."""
        if not book_cadence_seconds >= 0:
            raise ValueError(f"book_cadence_seconds must be >= 0, got {book_cadence_seconds}")
        self.settings = settings
        self.book_cadence_ms = int(book_cadence_seconds * 1000)
        self.last = AnalysisWork()
        self.totals = AnalysisWork()
        self._symbols: dict[str, _SymbolMemo] = {}
        self._betas: dict[tuple[str, str], _Beta] = {}
        self._episodes = _Episodes()
        self._lock = threading.Lock()
        self._work: Counter[str] = Counter()
        self._next_turn: str | None = None  # where the last bounded call stopped rescoring

    def analyse(self, snapshot: Snapshot, max_rescored: int | None = None) -> Analysis:
        """The Analysis of ``snapshot`` (the shape and errors of
        ``app.services.analysis.analyse``), reusing what did not change since the
        previous call. A failed section is named in ``errors``; what failed keeps no
        memo and is computed again on the next call. ``max_rescored``: at most this many
        symbols with scores already have their confluence scored again (see the module
        docstring); None: every symbol that is due."""
        with self._lock:
            self._work = Counter()
            symbols = traded(snapshot)
            errors: dict[str, str] = {}
            confluence = self._all_confluence(snapshot, symbols, errors, max_rescored)
            unavailable: dict[str, dict[str, str]] = {}
            beta = self._episodes(
                errors, "beta", lambda: self._all_betas(snapshot, symbols, errors, unavailable)
            )
            self._forget_all_but(symbols)
            analysis = assemble(
                snapshot,
                self.settings,
                Expensive(confluence, beta, unavailable),
                errors,
                self._episodes,
            )
            self._episodes.end_call()
            self.last = AnalysisWork(**self._work)
            self.totals += self.last
            return analysis

    # --- confluence -----------------------------------------------------------------

    def _all_confluence(
        self,
        snapshot: Snapshot,
        symbols: list[str],
        errors: dict[str, str],
        max_rescored: int | None,
    ) -> dict[str, dict[str, ConfluenceResult]]:
        confluence = {}
        rescored, held_from = 0, None
        for symbol in _turn_order(symbols, self._next_turn):
            held = None
            if max_rescored is not None and rescored >= max_rescored:
                held = self._held(snapshot, symbol)
            if held is not None:
                confluence[symbol] = held
                held_from = held_from or symbol  # the next call starts with it
                self._work["symbols_held"] += 1
                continue
            before = self._work["timeframes_computed"]
            result = self._episodes(
                errors, f"confluence/{symbol}", partial(self._confluence, snapshot, symbol)
            )
            rescored += self._work["timeframes_computed"] > before
            if result:
                confluence[symbol] = result
            else:
                self._symbols.pop(symbol, None)  # failed: computed afresh next time
        self._next_turn = held_from
        return {symbol: confluence[symbol] for symbol in symbols if symbol in confluence}

    def _held(self, snapshot: Snapshot, symbol: str) -> dict[str, ConfluenceResult] | None:
        """The symbol's last scores for the timeframes it has candles for, unchanged;
        None when one of them (or the combined score) was never scored."""
        memo = self._symbols.get(symbol)
        if memo is None or memo.combined is None:
            return None
        candles = snapshot.candles.get(symbol, {})
        timeframes = [tf for tf in self.settings.weights.timeframes if tf in candles]
        if not timeframes or any(tf not in memo.scored for tf in timeframes):
            return None
        held = {tf: memo.scored[tf].result for tf in timeframes}
        return held | {COMBINED: memo.combined[1]}

    def _confluence(self, snapshot: Snapshot, symbol: str) -> dict[str, ConfluenceResult]:
        """The symbol's confluence per timeframe and combined, as ``analyse`` computes
        it, each timeframe scored again only when its candles or the live inputs changed.
        Raises what scoring raises (the caller then drops the symbol's memo)."""
        candles = snapshot.candles.get(symbol, {})
        book = snapshot.books.get(symbol)
        memo = self._symbols.get(symbol)
        fresh = memo is None or self._live_due(memo, book, candles, snapshot.fetched_at_ms)
        if memo is None or fresh:
            if memo is not None:
                self._work["live_refreshes"] += 1
            memo = _SymbolMemo(book, snapshot.fetched_at_ms)
            self._symbols[symbol] = memo
        weights = self.settings.weights
        positioning = positioning_of(snapshot, symbol)
        per_timeframe: dict[str, ConfluenceResult] = {}
        for timeframe in weights.timeframes:
            if timeframe in candles:
                per_timeframe[timeframe] = self._scored(
                    memo, timeframe, candles[timeframe], positioning
                )
        for timeframe in memo.scored.keys() - per_timeframe.keys():
            del memo.scored[timeframe]
        if per_timeframe:
            per_timeframe[COMBINED] = self._combined(memo, per_timeframe)
        return per_timeframe

    def _scored(
        self, memo: _SymbolMemo, timeframe: str, candles: Candles, positioning: Positioning
    ) -> ConfluenceResult:
        key = candle_key(candles)
        held = memo.scored.get(timeframe)
        if held is not None and held.key == key and held.positioning == positioning.key():
            self._work["timeframes_reused"] += 1
            return held.result
        self._work["timeframes_computed"] += 1
        result = score_timeframe(
            candles, memo.book, self.settings.weights, **positioning.score_inputs()
        )
        memo.scored[timeframe] = _Scored(key, last_candle(candles), result, positioning.key())
        return result

    def _combined(
        self, memo: _SymbolMemo, per_timeframe: Mapping[str, ConfluenceResult]
    ) -> ConfluenceResult:
        inputs = tuple(
            (tf, memo.scored[tf].key, memo.scored[tf].positioning) for tf in per_timeframe
        )
        if memo.combined is not None and memo.combined[0] == inputs:
            self._work["combined_reused"] += 1
            return memo.combined[1]
        self._work["combined_computed"] += 1
        result = combine_timeframes(per_timeframe, self.settings.weights)
        memo.combined = (inputs, result)
        return result

    def _live_due(
        self,
        memo: _SymbolMemo,
        book: OrderBook | None,
        candles: Mapping[str, Candles],
        now_ms: int,
    ) -> bool:
        """Whether the symbol is rescored with its live inputs now: a book appeared or
        vanished, or ``book_cadence_ms`` have passed since the memo's book was taken and
        the book or a forming candle (same open time, other prices or volume) differs."""
        if (book is None) != (memo.book is None):
            return True
        if now_ms - memo.book_taken_ms < self.book_cadence_ms:
            return False
        if not same_book(book, memo.book):
            return True
        return any(
            (series := candles.get(tf)) is not None
            and candle_key(series) == held.key
            and last_candle(series) != held.last
            for tf, held in memo.scored.items()
        )

    # --- beta -----------------------------------------------------------------------

    def _all_betas(
        self,
        snapshot: Snapshot,
        symbols: list[str],
        errors: dict[str, str],
        unavailable: dict[str, dict[str, str]],
    ) -> dict[str, dict[str, BetaStats]]:
        """As ``analysis._all_betas``: one symbol failing is named ``beta/SYMBOL``;
        no BTC candles at all fails the section (LookupError)."""
        if not snapshot.candles.get(BTC):
            raise LookupError("no BTC candles to measure beta against")
        betas = {}
        for symbol in symbols:
            if symbol == BTC:
                continue
            result = self._episodes(
                errors,
                f"beta/{symbol}",
                partial(self._symbol_betas, snapshot, symbol, unavailable),
            )
            if result is not None:
                betas[symbol] = result
        return betas

    def _symbol_betas(
        self, snapshot: Snapshot, symbol: str, unavailable: dict[str, dict[str, str]]
    ) -> dict[str, BetaStats]:
        asset = snapshot.candles.get(symbol, {})
        btc = snapshot.candles.get(BTC, {})
        result = {}
        for timeframe, window in BETA_WINDOWS.items():
            if timeframe in asset and timeframe in btc:
                beta = self._beta(symbol, asset[timeframe], btc[timeframe], window)
                if beta.stats is not None:
                    result[timeframe] = beta.stats
                else:
                    unavailable.setdefault(symbol, {})[timeframe] = beta.reason
        return result

    def _beta(self, symbol: str, asset: Candles, btc: Candles, window: int) -> _Beta:
        key = (candle_key(asset), candle_key(btc))
        held = self._betas.get((symbol, asset.timeframe))
        if held is not None and held.key == key:
            self._work["betas_reused"] += 1
            return held
        self._work["betas_computed"] += 1
        self._betas.pop((symbol, asset.timeframe), None)  # a failure keeps no memo
        stats, reason = explain_beta(asset, btc, window)
        beta = _Beta(key, stats, reason)
        self._betas[(symbol, asset.timeframe)] = beta
        return beta

    def _forget_all_but(self, symbols: list[str]) -> None:
        """Drops the memos of symbols no longer traded (gone, or a listing issue): one
        coming back is computed afresh."""
        keep = set(symbols)
        for symbol in self._symbols.keys() - keep:
            del self._symbols[symbol]
        for key in [k for k in self._betas if k[0] not in keep]:
            del self._betas[key]


def _turn_order(symbols: list[str], first: str | None) -> list[str]:
    """``symbols`` starting at ``first`` (wrapping round); as given without it."""
    if first is None or first not in symbols:
        return symbols
    at = symbols.index(first)
    return symbols[at:] + symbols[:at]


def candle_key(candles: Candles) -> CandleKey:
    """What identifies closed candles: the last candle's open time (ms) and the count.
    (0, 0) for no candles."""
    count = len(candles)
    return (int(candles.timestamp_ms[-1]), count) if count else (0, 0)


def last_candle(candles: Candles) -> LastCandle:
    """The forming (last) candle's close, high, low and volume; NaNs for no candles."""
    if not len(candles):
        nan = float("nan")
        return (nan, nan, nan, nan)
    return (
        float(candles.close[-1]),
        float(candles.high[-1]),
        float(candles.low[-1]),
        float(candles.volume[-1]),
    )


def same_book(a: OrderBook | None, b: OrderBook | None) -> bool:
    """Whether two books have the same levels (their timestamps aside)."""
    if a is b:
        return True
    if a is None or b is None:
        return False
    return np.array_equal(a.bids, b.bids) and np.array_equal(a.asks, b.asks)
