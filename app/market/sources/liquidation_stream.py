"""Liquidations from the exchange's stream (ccxt.pro ``watch_liquidations``): the
forced closes of each perpetual over a rolling window (one hour), as
``app.market.models.derivatives.Liquidations``.

One topic per subscribe request (``watch_liquidations`` takes one symbol: Bybit's
``allLiquidation.<SYMBOL>`` on its linear stream). Liquidations come only when positions
are closed by force — rare outside violent moves — so a batch is live long after its
last delivery (``LIQUIDATION_BATCHING``), and the window is counted from when the
symbol was last subscribed (``watching since``): a reader that has just (re)started
reports a window shorter than the hour, never zero liquidations over an hour it did
not watch.

ccxt keeps every symbol's liquidations in one cache (``exchange.liquidations``, newest
last); each delivery takes the entries of its symbol after the last one taken. An
entry without a time, a known side, or a finite positive price and size is dropped and
counted (``dropped``). The side: on Bybit (``POSITION_SIDE_EXCHANGES``) ``S`` is the
side of the liquidated *position* (``Buy``: a long was liquidated); elsewhere ccxt's
``side`` is the liquidation *order*'s (``sell`` closes a long).
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from app.market.models.derivatives import HOUR_MS, Liquidations
from app.market.sources.quality import finite
from app.market.sources.stream_batches import Batching, SymbolStream

WINDOW_MS = HOUR_MS
LIQUIDATION_BATCHING = Batching(topics_per_request=1, silent_after=900.0)
"""One topic per request; not live after 15 minutes without a liquidation, subscribed
again after 45 (a subscription the exchange forgot brings nothing, like a calm market)."""
POSITION_SIDE_EXCHANGES = frozenset({"bybit"})
"""Exchanges whose liquidation side names the liquidated position, not the order."""


class LiquidationStream(SymbolStream):
    """Watches the liquidations of ``symbols`` (ccxt perpetual → canonical symbol) on
    ``exchange`` (a ccxt.pro instance whose linear markets are loaded) until ``stop``;
    ``window(symbol)`` sums the last ``WINDOW_MS``.

    ``clock_ms``: the exchange's time (epoch ms; the window ends there). Counters:
    ``updates`` (liquidations kept), ``dropped`` (bad entries), and the inherited ones.
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
        self.position_side = getattr(exchange, "id", "") in POSITION_SIDE_EXCHANGES
        self._events: dict[str, deque[tuple[int, bool, float]]] = {n: deque() for n in self.symbols}
        self._taken: dict[str, Any] = {}  # ccxt symbol → the newest cache entry taken
        self._since: dict[str, int] = {}  # ccxt symbol → watching since (epoch ms)
        self._renewing: set[tuple[str, ...]] = set()

    # ----- reading --------------------------------------------------------------------

    def window(self, symbol: str) -> Liquidations | None:
        """Canonical ``symbol``'s liquidations over the last hour (or since it was last
        subscribed, when that is later): longs and shorts, value in the quote currency.
        None while it is not watched (not subscribed yet, or failing)."""
        name = self._ccxt_of.get(symbol)
        since = self._since.get(name) if name is not None else None
        if name is None or since is None:
            return None
        now = self.clock_ms()
        start = max(since, now - WINDOW_MS)
        events = self._events[name]
        while events and events[0][0] < now - WINDOW_MS:
            events.popleft()
        kept = [e for e in events if start <= e[0] <= now]
        longs = [value for _, is_long, value in kept if is_long]
        shorts = [value for _, is_long, value in kept if not is_long]
        return Liquidations(
            window_ms=max(0, now - start),
            until_ms=now,
            long_value=sum(longs),
            short_value=sum(shorts),
            long_count=len(longs),
            short_count=len(shorts),
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
        self._renewing.add(batch)
        try:
            await super()._resubscribe(batch, quiet=quiet)
        finally:
            self._renewing.discard(batch)

    def _failed(self, batch: tuple[str, ...]) -> None:
        if batch in self._renewing:
            return
        for name in batch:  # the window has a hole from here: counted anew when watched
            self._since.pop(name, None)
            self._events[name].clear()

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        for name in batch:
            fresh = self._take(name)
            self._events[name].extend(fresh)
            self.updates += len(fresh)

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
        parsed = [self._parse(row) for row in reversed(mine)]
        return [event for event in parsed if event is not None]

    def _parse(self, row: dict[str, Any]) -> tuple[int, bool, float] | None:
        """A ccxt liquidation → (time, long?, value = price × contracts × contract
        size); None (counted) for a bad one."""
        stamp = finite(row.get("timestamp"))
        price = finite(row.get("price"))
        contracts = finite(row.get("contracts"))
        size = finite(row.get("contractSize")) or 1.0
        side = row.get("side")
        if stamp is None or price is None or contracts is None or price <= 0 or contracts <= 0:
            self.dropped += 1
            return None
        if side not in ("buy", "sell"):
            self.dropped += 1
            return None
        is_long = (side == "buy") if self.position_side else (side == "sell")
        return int(stamp), is_long, price * contracts * size
