"""Liquidations from the exchange's stream (ccxt.pro ``watch_liquidations``): the
forced closes of each perpetual over a rolling window (one hour), as
``app.market.models.derivatives.Liquidations``.

One topic per subscribe request (``watch_liquidations`` takes one symbol: Bybit's
``allLiquidation.<SYMBOL>`` on its linear stream). Liquidations come only when positions
are closed by force — rare outside violent moves — so a batch is live long after its
last delivery (``LIQUIDATION_BATCHING``); a symbol is heard at each usable liquidation,
and subscribing a quiet one again (its batch or the symbol alone) leaves its window
whole, unless the connection failed or was reset meanwhile. The window is counted from
when the symbol was last subscribed after a failure (``watching since``): a reader that
has just (re)started reports a window shorter than the hour, never zero liquidations
over an hour it did not watch.

The window is the current minute of the exchange's clock and the 59 before it (from
the start of the oldest up to now: 59 to 60 minutes, ``window_ms`` says which), and
what it holds is summed into one bucket per minute (``MinuteBuckets``: per side, the
value and the count). Memory is bounded at ``BUCKETS`` buckets per symbol whatever
the flood (100,000 liquidations in a second take one bucket), and the sums and counts
of the window are exact: every liquidation kept is in them until its minute leaves.

ccxt keeps every symbol's liquidations in one cache (``exchange.liquidations``, newest
last); each delivery takes the entries of its symbol after the last one taken. An
entry without a time or a known side, with a price or size that is missing, not above
0 or out of the plausible bounds (``app.market.sources.quality``: ``price()``,
``volume()``), whose value is not finite, or stamped more than ``FUTURE_TOLERANCE_MS``
ahead of the exchange's clock is dropped and counted (``dropped``; the implausible
ones and those from the future also in ``data_quality`` by canonical symbol, as
``implausible_value`` / ``future_timestamp``). An entry stamped before the window (or
before the symbol was watched) is not kept (``stale``). The side: on Bybit
(``POSITION_SIDE_EXCHANGES``) ``S`` is the side of the liquidated *position* (``Buy``:
a long was liquidated); elsewhere ccxt's ``side`` is the liquidation *order*'s
(``sell`` closes a long).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from app.market.models.derivatives import HOUR_MS, Liquidations
from app.market.sources.quality import (
    FUTURE_TIMESTAMP,
    IMPLAUSIBLE_VALUE,
    DataQualityCounters,
    finite,
    from_future,
    implausible,
    price,
    volume,
)
from app.market.sources.stream_batches import Batching, SymbolStream

log = logging.getLogger(__name__)

WINDOW_MS = HOUR_MS
MINUTE_MS = 60_000
WINDOW_MINUTES = WINDOW_MS // MINUTE_MS
BUCKETS = WINDOW_MINUTES + 1
"""Buckets kept per symbol at most: the window's 60 minutes and the next one (an entry
stamped up to ``FUTURE_TOLERANCE_MS`` ahead of the clock is clock skew, kept)."""
LIQUIDATION_BATCHING = Batching(topics_per_request=1, silent_after=900.0)
"""One topic per request; not live after 15 minutes without a liquidation, subscribed
again after 45 (a subscription the exchange forgot brings nothing, like a calm market)."""
POSITION_SIDE_EXCHANGES = frozenset({"bybit"})
"""Exchanges whose liquidation side names the liquidated position, not the order."""


@dataclass(slots=True)
class Bucket:
    """The liquidations of one minute: value (quote currency) and count, per side."""

    long_value: float = 0.0
    short_value: float = 0.0
    long_count: int = 0
    short_count: int = 0

    def add(self, is_long: bool, value: float) -> None:
        """Count one liquidation of a long (``is_long``) or short position."""
        if is_long:
            self.long_value += value
            self.long_count += 1
        else:
            self.short_value += value
            self.short_count += 1


class MinuteBuckets:
    """One symbol's liquidations summed per minute (epoch ms // ``MINUTE_MS`` →
    ``Bucket``), at most ``BUCKETS`` of them: adding a minute beyond that forgets the
    oldest ones. Sums are exact for what is kept (no sampling)."""

    def __init__(self) -> None:
        self.minutes: dict[int, Bucket] = {}

    def __len__(self) -> int:
        return len(self.minutes)

    def add(self, stamp_ms: int, is_long: bool, value: float) -> None:
        """Count one liquidation at ``stamp_ms`` (epoch ms)."""
        minute = stamp_ms // MINUTE_MS
        bucket = self.minutes.get(minute)
        if bucket is None:
            bucket = self.minutes[minute] = Bucket()
            while len(self.minutes) > BUCKETS:
                del self.minutes[min(self.minutes)]
        bucket.add(is_long, value)

    def forget_before(self, minute: int) -> None:
        """Drop the buckets of the minutes before ``minute``."""
        for old in [m for m in self.minutes if m < minute]:
            del self.minutes[old]

    def total(self, first: int, last: int) -> Bucket:
        """The sum of the buckets of minutes ``first`` to ``last`` (inclusive)."""
        out = Bucket()
        for minute in sorted(self.minutes):
            if first <= minute <= last:
                kept = self.minutes[minute]
                out.long_value += kept.long_value
                out.short_value += kept.short_value
                out.long_count += kept.long_count
                out.short_count += kept.short_count
        return out

    def clear(self) -> None:
        self.minutes.clear()


def window_start_ms(now_ms: int) -> int:
    """Where the window ending at ``now_ms`` starts (epoch ms): the start of the minute
    ``WINDOW_MINUTES - 1`` before the current one."""
    return (now_ms // MINUTE_MS - (WINDOW_MINUTES - 1)) * MINUTE_MS


class LiquidationStream(SymbolStream):
    """Watches the liquidations of ``symbols`` (ccxt perpetual → canonical symbol) on
    ``exchange`` (a ccxt.pro instance whose linear markets are loaded) until ``stop``;
    ``window(symbol)`` sums the last hour (whole minutes, see the module docstring).

    ``clock_ms``: the exchange's time (epoch ms; the window ends there). Counters:
    ``updates`` (liquidations kept), ``dropped`` (bad entries), ``stale`` (entries
    stamped before the window), and the inherited ones; ``data_quality``: entries out
    of bound or from the future, by canonical symbol. Memory: ``BUCKETS`` minute
    buckets per symbol at most (``MinuteBuckets``).
    """

    kind = "liquidation"

    def __init__(
        self,
        exchange: Any,
        symbols: Mapping[str, str],
        *,
        batching: Batching = LIQUIDATION_BATCHING,
        clock_ms: Callable[[], int] = lambda: int(time.time() * 1000),
    ) -> None:
        super().__init__(exchange, symbols, batching)
        self.clock_ms = clock_ms
        self.updates = 0
        self.dropped = 0
        self.stale = 0
        self.data_quality = DataQualityCounters()
        self.position_side = getattr(exchange, "id", "") in POSITION_SIDE_EXCHANGES
        self.buckets: dict[str, MinuteBuckets] = {n: MinuteBuckets() for n in self.symbols}
        self._taken: dict[str, Any] = {}  # ccxt symbol → the newest cache entry taken
        self._since: dict[str, int] = {}  # ccxt symbol → watching since (epoch ms)
        self._renewing: set[tuple[str, ...]] = set()

    # ----- reading --------------------------------------------------------------------

    def window(self, symbol: str) -> Liquidations | None:
        """Canonical ``symbol``'s liquidations over the last hour (the current minute
        and the 59 before it; or since it was last subscribed, when that is later):
        longs and shorts, value in the quote currency. None while it is not watched
        (not subscribed yet, or failing)."""
        name = self._ccxt_of.get(symbol)
        since = self._since.get(name) if name is not None else None
        if name is None or since is None:
            return None
        now = self.clock_ms()
        start = max(since, window_start_ms(now))
        buckets = self.buckets[name]
        buckets.forget_before(window_start_ms(now) // MINUTE_MS)
        total = buckets.total(window_start_ms(now) // MINUTE_MS, now // MINUTE_MS)
        return Liquidations(
            window_ms=max(0, now - start),
            until_ms=now,
            long_value=total.long_value,
            short_value=total.short_value,
            long_count=total.long_count,
            short_count=total.short_count,
        )

    # ----- BatchedStream ----------------------------------------------------------------

    async def _watch(self, batch: tuple[str, ...]) -> None:
        for name in batch:
            self._since.setdefault(name, self.clock_ms())
        await self.exchange.watch_liquidations(batch[0])

    async def _unwatch(self, batch: tuple[str, ...]) -> None:
        """ccxt's ``un_watch_liquidations`` where it has one; on Bybit (none in ccxt.pro)
        the same unsubscribe through ``un_watch_topics``, so that the next watch
        subscribes anew. Elsewhere: NotImplementedError (the reader then resets its
        connections, which subscribes anew too)."""
        name, exchange = batch[0], self.exchange
        if hasattr(exchange, "un_watch_liquidations"):
            await exchange.un_watch_liquidations(name)
            return
        if getattr(exchange, "id", "") != "bybit" or not hasattr(exchange, "un_watch_topics"):
            raise NotImplementedError(f"no liquidations unsubscribe on {exchange.id}")
        url = await exchange.get_url_by_market_type(name, False, "watchLiquidations", {})
        topic = f"allLiquidation.{exchange.market(name)['id']}"
        await exchange.un_watch_topics(
            url,
            "liquidations",
            [name],
            [f"unsubscribe:liquidations:{name}"],
            [f"liquidations::{name}"],
            [topic],
        )

    async def _resubscribe(self, batch: tuple[str, ...], *, quiet: bool) -> None:
        """A quiet symbol is subscribed again now and then (a forgotten subscription
        looks the same as a calm market); that is no hole in its window."""
        with self._renewal(batch):
            await super()._resubscribe(batch, quiet=quiet)

    async def _resubscribe_keys(self, keys: tuple[str, ...]) -> None:
        """The same for a symbol whose batch delivers but brought nothing usable of it."""
        with self._renewal(keys):
            await super()._resubscribe_keys(keys)

    @contextlib.contextmanager
    def _renewal(self, names: tuple[str, ...]) -> Iterator[None]:
        """While ``names`` are subscribed again, their failure is no hole (``_failed``)."""
        self._renewing.add(names)
        try:
            yield
        finally:
            self._renewing.discard(names)

    async def _unwatch_within(self, keys: tuple[str, ...]) -> bool:
        """A renewal whose connection failed or was reset meanwhile is a hole after all."""
        renewed = await super()._unwatch_within(keys)
        if not renewed:
            self._forget(keys)
        return renewed

    def _failed(self, batch: tuple[str, ...]) -> None:
        if batch not in self._renewing:
            self._forget(batch)

    def _forget(self, names: tuple[str, ...]) -> None:
        """The window of ``names`` has a hole from here: counted anew when watched."""
        for name in names:
            self._since.pop(name, None)
            self.buckets[name].clear()

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        for name in batch:
            fresh = self._take(name)
            if fresh:  # the topic speaks (bad entries alone leave it to go quiet)
                self._heard(name)
            self._keep(name, fresh)

    def _keep(self, name: str, fresh: list[tuple[int, bool, float]]) -> None:
        """Add ``fresh`` entries of ``name`` to its buckets, but those stamped before
        its window (counted in ``stale``)."""
        since = self._since.get(name)
        start = window_start_ms(self.clock_ms())
        buckets = self.buckets[name]
        for stamp, is_long, value in fresh:
            if stamp < start or (since is not None and stamp < since):
                self.stale += 1
                continue
            buckets.add(stamp, is_long, value)
            self.updates += 1

    def _take(self, name: str) -> list[tuple[int, bool, float]]:
        """The cache's liquidations of ``name`` after the last one taken, oldest first,
        as (time ms, a long position, value in quote)."""
        cache = getattr(self.exchange, "liquidations", None)
        if not cache:
            return []
        newer = list(
            itertools.takewhile(lambda row: row is not self._taken.get(name), reversed(cache))
        )
        mine = [row for row in newer if isinstance(row, dict) and row.get("symbol") == name]
        if mine:
            self._taken[name] = mine[0]
        now = self.clock_ms()
        parsed = [self._parse(self.symbols[name], row, now) for row in reversed(mine)]
        return [event for event in parsed if event is not None]

    def _parse(self, symbol: str, row: dict[str, Any], now: int) -> tuple[int, bool, float] | None:
        """A ccxt liquidation of canonical ``symbol`` seen at ``now`` (epoch ms) →
        (time, long?, value = price × contracts × contract size, quote currency); None
        (counted) for a bad one."""
        stamp, side = finite(row.get("timestamp")), row.get("side")
        paid, contracts = price(row.get("price")), volume(row.get("contracts"))
        size = volume(row.get("contractSize")) or 1.0
        value = paid * contracts * size if paid is not None and contracts is not None else None
        problem = _problem(row, now, value)
        if problem is not None:
            self.dropped += 1
            if self.data_quality.observe(symbol, [problem], ()):
                log.warning("liquidation stream: %s liquidation of %s dropped", problem, symbol)
            return None
        if stamp is None or not value or side not in ("buy", "sell"):
            self.dropped += 1
            return None
        is_long = (side == "buy") if self.position_side else (side == "sell")
        return int(stamp), is_long, value


def _problem(row: dict[str, Any], now: int, value: float | None) -> str | None:
    """The data-quality kind of a liquidation from the future or out of bound (a
    price or size above 0 but implausible, or a value that is not finite), else None."""
    if from_future(row.get("timestamp"), now):
        return FUTURE_TIMESTAMP
    for key, bound in (("price", price), ("contracts", volume)):
        if implausible(row.get(key), bound) and (finite(row.get(key)) or 0) > 0:
            return IMPLAUSIBLE_VALUE
    if value is not None and not math.isfinite(value):
        return IMPLAUSIBLE_VALUE
    return None
