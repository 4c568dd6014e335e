"""IncrementalAnalyser: the Analysis of analyse(), recomputing only what changed.

The snapshots are the simulated market's (25 symbols, every timeframe, books) and
hand-made variants of it: a candle opening, new prices, another book, a listing issue.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import fields, replace

import numpy as np
import pytest

from app.main.collector import pipeline_settings
from app.market.analytics.beta import BETA_WINDOWS
from app.market.analytics.overview import BTC
from app.market.listing import ListingIssue
from app.market.models.candles import Candles
from app.market.models.order_book import OrderBook
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.sources.simulated import SimulatedMarket
from app.services.analysis import COMBINED, Analysis, AnalysisSettings, analyse
from app.services.incremental_analysis import AnalysisWork, IncrementalAnalyser
from app.services.snapshot import Snapshot, SnapshotCollector
from tests.conftest import ManualClock, make_settings

ETH = "ETHUSDT"
CADENCE = 30.0


@pytest.fixture(scope="module")
def settings() -> AnalysisSettings:
    return pipeline_settings(make_settings()).analysis


@pytest.fixture(scope="module")
def snapshot() -> Snapshot:
    """One snapshot of the simulated market: 25 symbols, candles of every timeframe."""
    pipeline = pipeline_settings(make_settings())
    clock = ManualClock()

    async def collect() -> Snapshot:
        source = SimulatedMarket(clock=clock)
        await source.start()
        collector = SnapshotCollector(
            source,
            pipeline.symbols,
            pipeline.candle_limits,
            pipeline.refresh_seconds,
            pipeline.order_book_depth,
            clock=clock,
        )
        return await collector.collect()

    return asyncio.run(collect())


def later(snapshot: Snapshot, seconds: float, **changes: object) -> Snapshot:
    """The next snapshot, ``seconds`` later, with these fields replaced."""
    return replace(
        snapshot,
        version=snapshot.version + 1,
        fetched_at_ms=snapshot.fetched_at_ms + int(seconds * 1000),
        **changes,  # type: ignore[arg-type]
    )


def with_candles(snapshot: Snapshot, symbol: str, candles: Candles) -> dict:
    """The snapshot's candles with ``symbol``'s at ``candles.timeframe`` replaced."""
    by_symbol = dict(snapshot.candles)
    by_symbol[symbol] = {**by_symbol[symbol], candles.timeframe: candles}
    return by_symbol


def opened(candles: Candles) -> Candles:
    """The candles one period later: the oldest dropped, a new one opened at the last
    close (the last one has closed)."""
    close = candles.close[-1]
    opens = candles.timestamp_ms[-1] + TIMEFRAME_SECONDS[candles.timeframe] * 1000

    def shifted(column: np.ndarray, value: float) -> np.ndarray:
        return np.append(column[1:], value)

    return replace(
        candles,
        timestamp_ms=shifted(candles.timestamp_ms, opens),
        open=shifted(candles.open, close),
        high=shifted(candles.high, close),
        low=shifted(candles.low, close),
        close=shifted(candles.close, close),
        volume=shifted(candles.volume, 1.0),
    )


def repriced(snapshot: Snapshot, factor: float) -> dict:
    """The snapshot's tickers with every price and 24h change moved by ``factor``."""
    return {
        symbol: replace(
            ticker,
            last=ticker.last * factor,
            change_24h_pct=(ticker.last * factor / ticker.open_24h - 1) * 100,
        )
        for symbol, ticker in snapshot.tickers.items()
    }


def bid_heavy(book: OrderBook) -> OrderBook:
    """The same book with ten times the bid quantity."""
    bids = book.bids.copy()
    bids[:, 1] *= 10
    return replace(book, bids=bids, timestamp_ms=book.timestamp_ms + 1000)


def sizes(snapshot: Snapshot, settings: AnalysisSettings) -> tuple[int, int, int]:
    """(timeframes scored, symbols, betas) of a full analysis of ``snapshot``."""
    symbols = [s for s in snapshot.symbols if s not in snapshot.listing]
    timeframes = sum(
        1 for s in symbols for tf in settings.weights.timeframes if tf in snapshot.candles[s]
    )
    betas = sum(
        1
        for s in symbols
        if s != BTC
        for tf in BETA_WINDOWS
        if tf in snapshot.candles[s] and tf in snapshot.candles[BTC]
    )
    return timeframes, len(symbols), betas


def computed_nothing(snapshot: Snapshot, settings: AnalysisSettings) -> AnalysisWork:
    timeframes, symbols, betas = sizes(snapshot, settings)
    return AnalysisWork(timeframes_reused=timeframes, combined_reused=symbols, betas_reused=betas)


def assert_same(incremental: Analysis, full: Analysis) -> None:
    """Equal field by field (a failing field is named)."""
    for f in fields(Analysis):
        assert getattr(incremental, f.name) == getattr(full, f.name), f.name


def test_the_first_call_equals_analyse_field_by_field(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    assert_same(analyser.analyse(snapshot), analyse(snapshot, settings))
    timeframes, symbols, betas = sizes(snapshot, settings)
    assert (timeframes, symbols, betas) == (100, 25, 72)
    assert analyser.last == AnalysisWork(
        timeframes_computed=timeframes, combined_computed=symbols, betas_computed=betas
    )


def test_the_same_snapshot_again_recomputes_nothing(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    analyser.analyse(snapshot)
    again = analyser.analyse(snapshot)
    assert analyser.last == computed_nothing(snapshot, settings)
    assert_same(again, analyse(snapshot, settings))
    assert analyser.totals.timeframes_computed == 100
    assert analyser.totals.timeframes_reused == 100


def test_a_new_candle_recomputes_only_that_symbol(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    """A closed 1m candle moves the hour's price change that every timeframe's
    open-interest sub-score reads: that symbol's timeframes are scored again, the
    others reused."""
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    first = analyser.analyse(snapshot)
    candles = with_candles(snapshot, ETH, opened(snapshot.candles[ETH]["1m"]))
    next_minute = later(snapshot, 1, candles=candles)
    result = analyser.analyse(next_minute)
    nothing = computed_nothing(snapshot, settings)
    eth = sum(1 for tf in settings.weights.timeframes if tf in snapshot.candles[ETH])
    assert analyser.last == replace(
        nothing,
        timeframes_computed=eth,
        timeframes_reused=nothing.timeframes_reused - eth,
        combined_computed=1,
        combined_reused=nothing.combined_reused - 1,
    )
    assert_same(result, analyse(next_minute, settings))
    assert result.confluence[ETH]["1m"] != first.confluence[ETH]["1m"]
    assert result.confluence[BTC]["5m"] is first.confluence[BTC]["5m"]


def test_a_new_btc_candle_recomputes_the_betas_on_that_timeframe(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    analyser.analyse(snapshot)
    candles = with_candles(snapshot, BTC, opened(snapshot.candles[BTC]["5m"]))
    next_five = later(snapshot, 1, candles=candles)
    result = analyser.analyse(next_five)
    assert analyser.last.timeframes_computed == 1 and analyser.last.combined_computed == 1
    assert analyser.last.betas_computed == 24  # every other symbol's 5m beta
    assert analyser.last.betas_reused == 72 - 24
    assert_same(result, analyse(next_five, settings))


def test_new_prices_alone_recompute_no_confluence_or_beta_but_move_the_cheap_sections(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    first = analyser.analyse(snapshot)
    ticked = later(snapshot, 1, tickers=repriced(snapshot, 1.05))
    result = analyser.analyse(ticked)
    assert analyser.last == computed_nothing(snapshot, settings)
    assert_same(result, analyse(ticked, settings))
    assert result.overview and first.overview
    assert result.overview["btc_price"] == pytest.approx(first.overview["btc_price"] * 1.05)
    assert result.movers != first.movers
    assert result.beta_overview != first.beta_overview  # BTC's 24h change moved
    for old, new in zip(first.signals or [], result.signals or [], strict=True):
        assert new["price"] == pytest.approx(old["price"] * 1.05)


def test_a_changed_book_is_rescored_only_once_the_cadence_has_passed(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    first = analyser.analyse(snapshot)
    books = {**snapshot.books, ETH: bid_heavy(snapshot.books[ETH])}
    soon = later(snapshot, CADENCE - 1, books=books)
    within = analyser.analyse(soon)
    assert analyser.last == computed_nothing(snapshot, settings)
    assert within.confluence[ETH] == first.confluence[ETH]
    after = later(snapshot, CADENCE, books=books)
    result = analyser.analyse(after)
    nothing = computed_nothing(snapshot, settings)
    assert analyser.last == replace(
        nothing,
        timeframes_computed=4,
        timeframes_reused=nothing.timeframes_reused - 4,
        combined_computed=1,
        combined_reused=nothing.combined_reused - 1,
        live_refreshes=1,
    )
    assert_same(result, analyse(after, settings))
    eth = result.confluence[ETH][COMBINED].components["orderbook"].score
    assert eth is not None and eth > (
        first.confluence[ETH][COMBINED].components["orderbook"].score or 0
    )


def test_a_vanished_book_is_taken_at_once(snapshot: Snapshot, settings: AnalysisSettings) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    analyser.analyse(snapshot)
    books = {s: b for s, b in snapshot.books.items() if s != ETH}
    no_book = later(snapshot, 1, books=books)
    result = analyser.analyse(no_book)
    assert analyser.last.timeframes_computed == 4 and analyser.last.live_refreshes == 1
    assert_same(result, analyse(no_book, settings))
    assert result.confluence[ETH][COMBINED].components["orderbook"].score is None


def test_a_forming_candle_is_rescored_on_the_book_cadence(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    """A forming candle's new price (same open time) waits for the cadence, like a book."""
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    analyser.analyse(snapshot)
    forming = snapshot.candles[ETH]["1m"]
    close = forming.close.copy()
    close[-1] *= 1.001
    high = np.maximum(forming.high, close)
    candles = with_candles(snapshot, ETH, replace(forming, close=close, high=high))
    analyser.analyse(later(snapshot, 1, candles=candles))
    assert analyser.last.timeframes_computed == 0
    due = later(snapshot, CADENCE, candles=candles)
    assert_same(analyser.analyse(due), analyse(due, settings))
    assert analyser.last.timeframes_computed == 4 and analyser.last.live_refreshes == 1


def test_a_delisted_symbol_drops_out_and_comes_back_computed_afresh(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    analyser.analyse(snapshot)
    issue = ListingIssue(ETH, "delisted", snapshot.fetched_at_ms, "no longer listed")
    delisted = later(snapshot, 1, listing={ETH: issue})
    result = analyser.analyse(delisted)
    assert_same(result, analyse(delisted, settings))
    assert ETH not in result.confluence and ETH not in (result.beta or {})
    assert analyser.last == computed_nothing(delisted, settings)
    relisted = later(snapshot, 2)
    assert_same(analyser.analyse(relisted), analyse(relisted, settings))
    assert analyser.last.timeframes_computed == 4 and analyser.last.combined_computed == 1
    assert analyser.last.betas_computed == 3


def broken(candles: Candles) -> Candles:
    """Candles whose high column is one short: scoring them raises."""
    return replace(candles, high=candles.high[:-1])


def test_a_failed_symbol_is_named_like_analyse_does_and_computed_again(
    snapshot: Snapshot, settings: AnalysisSettings, caplog: pytest.LogCaptureFixture
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    candles = with_candles(snapshot, ETH, broken(snapshot.candles[ETH]["5m"]))
    bad = later(snapshot, 1, candles=candles)
    with caplog.at_level(logging.WARNING, "app.services.incremental_analysis"):
        for _ in range(2):
            result = analyser.analyse(bad)
            assert_same(result, analyse(bad, settings))
            assert "confluence/ETHUSDT" in result.errors and ETH not in result.confluence
        # never kept as a success: its 1m, then the failing 5m, are scored again
        assert analyser.last.timeframes_computed == 2
        assert analyser.last.timeframes_reused == 96
    warnings = [
        r
        for r in caplog.records
        if r.name == "app.services.incremental_analysis" and "confluence/ETHUSDT" in r.getMessage()
    ]
    assert len(warnings) == 1  # one per episode, not one per call
    assert_same(analyser.analyse(snapshot), analyse(snapshot, settings))
    assert analyser.last.timeframes_computed == 4


def test_no_btc_candles_fail_the_beta_section_as_in_analyse(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    without_btc = later(snapshot, 0, candles={**snapshot.candles, BTC: {}})
    result = analyser.analyse(without_btc)
    assert_same(result, analyse(without_btc, settings))
    assert result.beta is None
    assert result.errors["beta"] == "LookupError: no BTC candles to measure beta against"
    assert_same(analyser.analyse(snapshot), analyse(snapshot, settings))
    assert analyser.last.betas_computed == 72


def test_a_negative_cadence_is_refused(settings: AnalysisSettings) -> None:
    with pytest.raises(ValueError, match="book_cadence_seconds"):
        IncrementalAnalyser(settings, book_cadence_seconds=-1)


def test_work_due_for_every_symbol_at_once_is_spread_over_bounded_calls(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    """Every book changed once the cadence has passed (symbols that started together):
    a call bounded to 2 symbols scores 2 and keeps the others' last scores; the next
    calls take the rest in turn, and once all are taken the analysis equals
    ``analyse``'s. An unbounded call takes every symbol that is due at once."""
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    first = analyser.analyse(snapshot)
    books = {symbol: bid_heavy(book) for symbol, book in snapshot.books.items()}
    due = later(snapshot, CADENCE, books=books)
    symbols = len(first.confluence)
    rescored: list[str] = []
    for call in range(1, symbols):
        result = analyser.analyse(due, max_rescored=2)
        changed = [s for s in result.confluence if result.confluence[s] != first.confluence[s]]
        newly = [s for s in changed if s not in rescored]
        assert len(newly) == min(2, symbols - len(rescored)), call
        assert analyser.last.live_refreshes == len(newly)
        # once two were scored the rest are kept unexamined; the last call examines all
        assert analyser.last.symbols_held == (symbols - 2 if len(newly) == 2 else 0)
        held = set(result.confluence) - set(changed)
        assert all(
            result.confluence[s][tf] is first.confluence[s][tf]
            for s in held
            for tf in first.confluence[s]
        )
        assert list(result.confluence) == list(first.confluence)  # the order of the symbols
        rescored += newly
        if len(rescored) == symbols:
            break
    assert call == (symbols + 1) // 2 and sorted(rescored) == sorted(first.confluence)
    assert_same(result, analyse(due, settings))

    unbounded = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    unbounded.analyse(snapshot)
    assert_same(unbounded.analyse(due), analyse(due, settings))
    assert unbounded.last.live_refreshes == symbols and unbounded.last.symbols_held == 0


def test_a_bounded_call_still_scores_a_symbol_seen_for_the_first_time(
    snapshot: Snapshot, settings: AnalysisSettings
) -> None:
    """The bound only holds back symbols that have scores to keep: the first call
    scores every symbol whatever its bound."""
    analyser = IncrementalAnalyser(settings, book_cadence_seconds=CADENCE)
    assert_same(analyser.analyse(snapshot, max_rescored=1), analyse(snapshot, settings))
    assert analyser.last.symbols_held == 0
