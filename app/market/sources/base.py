"""The one interface every market data source implements, and the optional extras
(asset names, tick sizes, data-quality counts, a markets reload) read through wrappers
such as the guarded source."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol, cast

from app.market.models.candles import Candles
from app.market.models.derivatives import DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.models.trades import PublicTrade


class MarketSource(Protocol):
    """A source of tickers, candles and order books for canonical symbols (``BTCUSDT``).

    ``start`` loads what the source needs once (markets); ``close`` releases
    connections. Fetch methods raise ``app.market.errors.MarketDataError`` subclasses.
    """

    name: str
    """``simulated`` or the ccxt exchange id."""

    async def start(self) -> None:
        """Loads what the source needs once (the exchange's markets); raises a
        ``MarketDataError`` when the exchange cannot answer."""
        ...

    async def close(self) -> None:
        """Releases the source's connections."""
        ...

    def listed_symbols(self) -> frozenset[str]:
        """Every canonical symbol this source can serve (valid after ``start``)."""
        ...

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """The 24-hour tickers of ``symbols`` by canonical symbol, in one call; a symbol
        without a usable ticker (delisted, no last price) is left out."""
        ...

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        """The newest ``limit`` candles of ``symbol`` at ``timeframe`` (``1m``, ``1h``…),
        oldest first. ``SymbolNotListed`` for a symbol the source does not trade."""
        ...

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        """The top ``depth`` levels of each side of ``symbol``'s order book."""
        ...


def _through_wrappers(source: object, attribute: str) -> Any:
    """``attribute`` of the first source in the chain that has it, looking through
    wrappers (``GuardedSource.source``, at most 8 deep); None when none has it."""
    seen = 0
    while source is not None and seen < 8:
        found = getattr(source, attribute, None)
        if found is not None:
            return found
        source, seen = getattr(source, "source", None), seen + 1
    return None


def market_assets(source: object) -> dict[str, tuple[str, str]]:
    """(base, quote) by canonical symbol from the source's market definitions; empty
    when no source in the chain knows them. Sources that can, implement
    ``market_assets()`` (optional: not part of the MarketSource protocol)."""
    method = _through_wrappers(source, "market_assets")
    return dict(method()) if callable(method) else {}


def market_tick_sizes(source: object) -> dict[str, float]:
    """The price step (tick size, quote currency) by canonical symbol from the source's
    market definitions (``market_tick_sizes()``, optional); empty when none knows."""
    method = _through_wrappers(source, "market_tick_sizes")
    return dict(method()) if callable(method) else {}


def data_quality_of(source: object) -> dict[str, dict[str, int]]:
    """The per-symbol bad-data counts of the source (``{symbol: {kind: count}}``, see
    ``app.market.sources.quality.DataQualityCounters``), looking through wrappers such as
    ``GuardedSource.source``; empty for sources that keep none (the simulated market)."""
    counters = _through_wrappers(source, "data_quality")
    snapshot = getattr(counters, "snapshot", None)
    return snapshot() if callable(snapshot) else {}


def recent_trades(source: object, symbols: Sequence[str]) -> dict[str, tuple[PublicTrade, ...]]:
    """The streamed public trades (taker side, oldest first) of those ``symbols`` whose
    trade stream is live, from the first source in the chain that implements
    ``recent_trades(symbol) -> list[PublicTrade] | None`` (the streaming source); empty
    when none does or no stream is live."""
    method = _through_wrappers(source, "recent_trades")
    if not callable(method):
        return {}
    found = {symbol: method(symbol) for symbol in symbols}
    return {symbol: tuple(trades) for symbol, trades in found.items() if trades is not None}


NO_DERIVATIVES = "the market source has no derivatives data"


async def fetch_derivatives(source: object, symbols: Sequence[str]) -> DerivativesRead:
    """The derivatives positioning (``app.market.models.derivatives``) of canonical
    ``symbols`` from the first source in the chain that implements
    ``fetch_derivatives(symbols) -> DerivativesRead`` (optional: the ccxt source for
    exchanges with linear perpetuals, the simulated market, and the wrappers that guard
    them); every symbol unavailable with ``NO_DERIVATIVES`` when none does. Raises
    ``MarketDataError`` when the exchange cannot answer at all (a symbol that fails
    alone is named in ``unavailable``)."""
    method = _through_wrappers(source, "fetch_derivatives")
    if not callable(method):
        return DerivativesRead(unavailable=dict.fromkeys(symbols, NO_DERIVATIVES))
    return cast(DerivativesRead, await method(symbols))


async def reload_markets(source: object) -> bool:
    """Asks the source to load its market definitions again (``reload_markets()``,
    optional: a ccxt source implements it; the simulated market's listing is always
    current). False when no source in the chain can; raises MarketDataError when the
    exchange cannot answer."""
    method = _through_wrappers(source, "reload_markets")
    if not callable(method):
        return False
    await method()
    return True
