"""Candles from the exchange's kline stream (ccxt.pro ``watch_ohlcv_for_symbols``),
kept as gap-free series of the newest ``limit`` candles per (symbol, timeframe).

History comes from REST (the ``backfill`` callable): on a pair's first delivery, after
every failure or silence of its batch (what the stream sent meanwhile may be lost), and
whenever a streamed candle opens more than one timeframe step after the newest candle
kept (a gap). A series is therefore never holed: if a backfill still leaves the gap
(REST behind the stream), the series is withheld until a later backfill closes it.

Merging, from ccxt's cache (``exchange.ohlcvs[symbol][timeframe]``; with ``newUpdates`` a
watch returns only what resolved it): a candle with the open time of one of the two
newest kept candles replaces it (the forming candle, or the final values of the one
that just closed), a newer one is appended, the oldest dropped beyond ``limit``. Stream
rows are cleaned like REST rows (``clean_candle_rows``; counted in ``data_quality``).

ccxt drops Bybit's ``confirm`` flag, so a candle counts as closed once a later one
appears: ``last_closed_ms`` is the open time of the newest closed candle of a series,
and ``on_close(symbol, timeframe)`` is called whenever it changes (the analysis
recomputes then, not on every tick of the forming candle).
"""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from app.market.models.candles import CLEAN, CandleQuality, Candles
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.sources.quality import DataQualityCounters, clean_candle_rows
from app.market.sources.stream_batches import BatchedStream, Batching

log = logging.getLogger(__name__)

Pair = tuple[str, str]
"""(ccxt symbol, timeframe), e.g. ``("BTC/USDT", "1m")``."""
Backfill = Callable[[str, str, int], Awaitable[Candles]]
"""REST history: (canonical symbol, timeframe, limit) → the newest ``limit`` candles."""
OnClose = Callable[[str, str], None]
"""Called with (canonical symbol, timeframe) when a series' newest closed candle changes."""

CACHE_ROWS_READ = 64
"""How many of the newest rows of ccxt's cache one merge looks at (more than this
many new candles between two deliveries is a gap, and a gap backfills)."""


@dataclass
class _Series:
    """One (symbol, timeframe) series as kept: clean rows ``[open ms, o, h, l, c, v]``,
    oldest first, consecutive open times."""

    symbol: str
    timeframe: str
    step_ms: int
    limit: int
    rows: list[list[float]] = field(default_factory=list)
    backfilled: bool = False
    quality: CandleQuality = CLEAN
    last_closed_ms: int | None = None
    seen: dict[int, tuple[Any, ...]] = field(default_factory=dict)
    """Cache rows already taken (open time → values), so an unchanged cached candle
    never overwrites a newer REST one."""
    built: Candles | None = None
    retry_delay: float = 0.0
    """Seconds between backfill tries while they fail (0: not failing)."""
    retry_at: float = 0.0
    """Clock time before which no backfill is tried (after a failed one)."""


CANDLE_BATCHING = Batching(silent_after=90.0)


class CandleStream(BatchedStream[Pair]):
    """Watches ``pairs`` ((ccxt symbol, timeframe) → canonical symbol) on ``exchange`` (a
    ccxt.pro instance whose markets are loaded) until ``stop``.

    ``backfill``: REST history, ``limits``: how many candles to keep per timeframe
    (every timeframe of ``pairs`` needs one). ``on_close``: see the module docstring.
    ``batching``: as ``BatchedStream`` (Bybit pushes a candle every 1–60 s, so the
    default waits 90 s before a batch is not live; ``retry`` also paces backfills of a
    pair while they fail).
    Counters: ``backfills`` (REST calls that answered), ``backfill_errors`` (that
    failed), ``gaps`` (streamed candles that left a hole), ``updates`` (candles
    merged from the stream), and the
    inherited ``errors``, ``reconnects``, ``deliveries``; ``data_quality``: what
    cleaning did to streamed rows, per canonical symbol.
    """

    kind = "candle"

    def __init__(
        self,
        exchange: Any,
        pairs: Mapping[Pair, str],
        backfill: Backfill,
        limits: Mapping[str, int],
        *,
        on_close: OnClose | None = None,
        batching: Batching = CANDLE_BATCHING,
    ) -> None:
        missing = {tf for _, tf in pairs if tf not in limits or limits[tf] < 1}
        if missing:
            raise ValueError(f"no positive limit for timeframes {sorted(missing)}")
        unknown = {tf for _, tf in pairs if tf not in TIMEFRAME_SECONDS}
        if unknown:
            raise ValueError(f"unsupported timeframes {sorted(unknown)}")
        super().__init__(exchange, sorted(pairs), batching)
        self.pairs = dict(pairs)
        self.backfill = backfill
        self.on_close = on_close
        self.backfills = 0
        self.gaps = 0
        self.updates = 0
        self.backfill_errors = 0
        self.data_quality = DataQualityCounters()
        self._series: dict[Pair, _Series] = {
            pair: _Series(
                canonical, pair[1], TIMEFRAME_SECONDS[pair[1]] * 1000, int(limits[pair[1]])
            )
            for pair, canonical in self.pairs.items()
        }
        self._original: Any = None  # the exchange's handle_ohlcv while we listen
        self._unsure: set[Pair] = set()  # failed or stalled: check for a hole when they speak
        self._pair_of: dict[tuple[str, str], Pair] = {
            (canonical, pair[1]): pair for pair, canonical in self.pairs.items()
        }

    # ----- reading ------------------------------------------------------------------

    def series(self, symbol: str, timeframe: str) -> Candles | None:
        """The kept candles of canonical ``symbol`` at ``timeframe``, oldest first (the
        newest may be forming); None unless backfilled and its batch is live (a frozen
        series is never handed out as current), or for a pair not watched."""
        pair = self._pair_of.get((symbol, timeframe))
        if pair is None:
            return None
        kept = self._series[pair]
        if not kept.backfilled or not kept.rows or not self.key_live(pair):
            return None
        if kept.built is None:
            kept.built = Candles.from_rows(kept.symbol, kept.timeframe, kept.rows, kept.quality)
        return kept.built

    def last_closed_ms(self, symbol: str, timeframe: str) -> int | None:
        """Open time (epoch ms) of the newest closed candle of the series (one that a
        later candle follows); None before the first backfill or for a pair not
        watched. Not gated on liveness: it says what the kept series holds."""
        pair = self._pair_of.get((symbol, timeframe))
        return None if pair is None else self._series[pair].last_closed_ms

    # ----- BatchedStream ------------------------------------------------------------------

    def _label(self, key: Pair) -> str:
        return self.pairs[key]

    async def _watch(self, batch: tuple[Pair, ...]) -> None:
        await self.exchange.watch_ohlcv_for_symbols([list(pair) for pair in batch])

    def start(self) -> None:
        """Hear each candle message on the exchange (see ``_listen``), then watch."""
        if self._original is None:
            self._listen()
        super().start()

    async def stop(self) -> None:
        """Stop watching and stop hearing the exchange's candle messages."""
        await super().stop()
        if self._original is not None:
            self.exchange.handle_ohlcv = self._original
            self._original = None

    def _listen(self) -> None:
        """Each kline message marks its pair heard: ccxt updates its cache rows in place
        and a watch returns only the message that resolved it, so neither tells which
        pairs spoke while the reader was busy (Bybit topic ``kline.<interval>.<id>``)."""
        original = self._original = self.exchange.handle_ohlcv
        intervals = self.exchange.timeframes
        by_topic = {
            f"kline.{intervals[tf]}.{self.exchange.market(name)['id']}": (name, tf)
            for name, tf in self.pairs
        }

        def heard(client: Any, message: Any) -> Any:
            topic = message.get("topic") if isinstance(message, dict) else None
            pair = by_topic.get(topic) if isinstance(topic, str) else None
            if pair is not None:
                self._heard(pair)
            return original(client, message)

        self.exchange.handle_ohlcv = heard

    async def _unwatch(self, batch: tuple[Pair, ...]) -> None:
        await self.exchange.un_watch_ohlcv_for_symbols([list(pair) for pair in batch])

    def _failed(self, batch: tuple[Pair, ...]) -> None:
        self._unsure.update(batch)  # what the stream sends next may follow a hole

    async def _deliver(self, batch: tuple[Pair, ...], recovered: bool) -> None:
        for pair in batch:
            unsure = recovered or pair in self._unsure
            await self._refresh(pair, backfill=unsure and self._may_have_missed(pair))
            if unsure and self._newest_cached(pair) is not None:
                self._unsure.discard(pair)

    def _newest_cached(self, pair: Pair) -> Any:
        cache = self.exchange.ohlcvs.get(pair[0], {}).get(pair[1])
        return cache[-1] if cache else None

    def _may_have_missed(self, pair: Pair) -> bool:
        """Whether a candle may have closed unseen (so REST history is needed): unless
        the stream's newest candle is the one the series was forming, a reconnect within
        the same candle (a storm of them) costs no REST call."""
        kept = self._series[pair]
        newest = self._newest_cached(pair)
        if not (kept.backfilled and kept.rows and newest) or not isinstance(newest[0], int):
            return True
        return newest[0] != int(kept.rows[-1][0])

    # ----- merging ------------------------------------------------------------------------

    async def _refresh(self, pair: Pair, *, backfill: bool) -> None:
        """Bring ``pair``'s series up to date: backfill when asked (or not yet done),
        then merge the stream's new candles; a gap backfills once more."""
        kept = self._series[pair]
        if backfill:
            kept.backfilled = False
        if not kept.backfilled and not await self._try_backfill(pair):
            return
        if not self._merge(pair):
            self.gaps += 1
            log.info("%s %s candles: the stream left a gap; backfilling", *pair)
            if await self._try_backfill(pair) and not self._merge(pair):
                kept.backfilled = False  # REST behind the stream: not current until closed
        self._note_closed(kept)

    async def _try_backfill(self, pair: Pair) -> bool:
        """Backfill ``pair`` unless a failed backfill's back-off is still running; True
        when the series is backfilled. A failure is counted (``backfill_errors``) and
        delays this pair's next try (the batch's other pairs carry on)."""
        kept = self._series[pair]
        if self.clock() < kept.retry_at:
            return False
        try:
            await self._backfill(pair)
        except Exception as error:  # the REST source's errors, whatever they are
            self.backfill_errors += 1
            kept.backfilled = False
            if not kept.retry_delay:  # one line per episode
                log.warning("%s %s candles: backfill failed (%s); retrying", *pair, error)
            kept.retry_delay = min(self.retry[1], kept.retry_delay * 2 or self.retry[0])
            kept.retry_at = self.clock() + kept.retry_delay * random.uniform(0.5, 1.0)
            return False
        kept.retry_delay, kept.retry_at = 0.0, 0.0
        return kept.backfilled

    async def _backfill(self, pair: Pair) -> None:
        kept = self._series[pair]
        candles = await self.backfill(kept.symbol, kept.timeframe, kept.limit)
        self.backfills += 1
        kept.rows = _rows(candles)[-kept.limit :]
        kept.quality = candles.quality
        kept.backfilled = bool(kept.rows)
        kept.built = None
        kept.seen = {}
        if kept.rows:  # cached candles REST already covers are not news
            first, last = _floor(kept.rows), kept.rows[-1][0]
            for row in self._cached(pair):
                if isinstance(row[0], int) and first <= row[0] <= last:
                    kept.seen[row[0]] = tuple(row)

    def _cached(self, pair: Pair) -> list[list[Any]]:
        """The newest rows of ccxt's cache for ``pair`` (in its order), or none."""
        cache = self.exchange.ohlcvs.get(pair[0], {}).get(pair[1])
        if not cache:
            return []
        newest = list(itertools.islice(reversed(cache), CACHE_ROWS_READ))
        return newest[::-1]

    def _merge(self, pair: Pair) -> bool:
        """Merge cached candles newer than what was taken; False at a gap (the rows
        after it are left for the backfill)."""
        kept = self._series[pair]
        if not kept.rows:
            return True
        floor = _floor(kept.rows)
        fresh = [
            row
            for row in self._cached(pair)
            if isinstance(row[0], int) and row[0] >= floor and kept.seen.get(row[0]) != tuple(row)
        ]
        if not fresh:
            return True
        clean, quality = clean_candle_rows(fresh, kept.step_ms)
        self._count(kept, quality)
        for raw in fresh:
            kept.seen[raw[0]] = tuple(raw)
        for row in clean:
            if not self._place(kept, row):
                return False
        kept.seen = {t: v for t, v in kept.seen.items() if t >= _floor(kept.rows)}
        return True

    def _place(self, kept: _Series, row: list[float]) -> bool:
        """Put one clean candle into the series; False if it would leave a gap."""
        when = int(row[0])
        last = int(kept.rows[-1][0])
        if when > last + kept.step_ms:
            return False
        if when > last:
            kept.rows.append(row)
            del kept.rows[: max(0, len(kept.rows) - kept.limit)]
        else:
            index = next(
                (i for i in (-1, -2) if -i <= len(kept.rows) and kept.rows[i][0] == when), None
            )
            if index is None or kept.rows[index] == row:
                return True
            kept.rows[index] = row
        kept.built = None
        self.updates += 1
        return True

    def _count(self, kept: _Series, quality: CandleQuality) -> None:
        """What cleaning did to streamed rows (holes are the stream's gaps, counted apart)."""
        quality = replace(quality, gaps=0, missing=0)
        if not quality.clean:
            self.data_quality.add_candles(kept.symbol, quality)

    def _note_closed(self, kept: _Series) -> None:
        closed = int(kept.rows[-2][0]) if kept.backfilled and len(kept.rows) >= 2 else None
        if closed is None or closed == kept.last_closed_ms:
            return
        kept.last_closed_ms = closed
        if self.on_close is not None:
            self.on_close(kept.symbol, kept.timeframe)


def _floor(rows: Sequence[list[float]]) -> int:
    """Open time of the oldest candle the stream may still revise (the two newest)."""
    return int(rows[-2][0] if len(rows) >= 2 else rows[-1][0])


def _rows(candles: Candles) -> list[list[float]]:
    """``Candles`` → rows ``[open ms, o, h, l, c, v]`` (open time as int)."""
    return [
        [int(t), float(o), float(h), float(lo), float(c), float(v)]
        for t, o, h, lo, c, v in zip(
            candles.timestamp_ms.tolist(),
            candles.open.tolist(),
            candles.high.tolist(),
            candles.low.tolist(),
            candles.close.tolist(),
            candles.volume.tolist(),
            strict=True,
        )
    ]
