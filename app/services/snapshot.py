"""One fetch of tickers + candles + order books → one immutable market Snapshot.

Tickers are fetched in one batch call every refresh. Candles of a timeframe are
re-fetched only when due (every ``max(refresh, timeframe / 10)``); between
fetches the forming candle is patched from the ticker's last price, so the
newest candle is always current without one call per symbol and timeframe.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from app.market.errors import MarketDataError, SymbolNotListed
from app.market.listing import (
    NOT_LISTED,
    ListingIssue,
    ListingTracker,
    RefreshEvidence,
)
from app.market.models.candles import Candles
from app.market.models.derivatives import DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.models.trades import PublicTrade
from app.market.sources.base import (
    MarketSource,
    market_assets,
    market_tick_sizes,
    recent_trades,
    reload_markets,
)
from app.services.derivatives_collection import DEFAULT_EVERY_SECONDS, DerivativesCollector

log = logging.getLogger(__name__)

CONCURRENT_FETCHES = 8
MARKETS_RECHECK_SECONDS = 60.0
"""While a pair is delisted or unserved, the exchange's markets are loaded again this
often (to notice it listed again)."""
MARKETS_MAX_AGE_SECONDS = 1800.0
"""The markets are loaded again at least this often (pairs delisted without any other
sign, configured pairs listed since start-up)."""
NO_PRICE = "the exchange sent no ticker with a usable last price (empty, 0 or none)"


@dataclass(frozen=True, slots=True)
class Snapshot:
    version: int
    fetched_at_ms: int
    source: str
    exchange: str
    tickers: dict[str, Ticker]
    candles: dict[str, dict[str, Candles]]  # symbol → timeframe → candles
    books: dict[str, OrderBook]
    missing: dict[str, str] = field(default_factory=dict)  # "SYMBOL/part" → reason
    unpriced: dict[str, str] = field(default_factory=dict)  # symbol → why it has no ticker
    assets: dict[str, tuple[str, str]] = field(default_factory=dict)  # symbol → (base, quote)
    tick_sizes: dict[str, float] = field(default_factory=dict)  # symbol → price step
    # configured symbol → why the exchange does not list or serve it now
    listing: dict[str, ListingIssue] = field(default_factory=dict)
    # perpetual swaps' funding, open interest, long/short (read on their own cadence)
    derivatives: DerivativesRead = field(default_factory=DerivativesRead)
    # symbol → its streamed public trades (taker side, oldest first) while live
    trades: dict[str, tuple[PublicTrade, ...]] = field(default_factory=dict)

    def listing_of(self, symbol: str) -> dict | None:
        """The symbol's listing issue as the payloads show it, None when it is served."""
        issue = self.listing.get(symbol)
        return None if issue is None else issue.to_dict()

    @property
    def symbols(self) -> list[str]:
        """Every collected symbol: those with a ticker, then those without a price (which
        stay in the views with what is known: candles, book, confluence)."""
        return [*self.tickers, *self.unpriced]


@dataclass(slots=True)
class _CachedCandles:
    candles: Candles
    fetched_at: float


@dataclass(frozen=True, slots=True)
class CandlesRead:
    """One symbol's candles for a chart: ``fetched_at`` (epoch seconds) of the last
    successful fetch, and ``error`` when the latest attempt failed (the candles are
    then the older ones kept)."""

    candles: Candles
    fetched_at: float
    error: str | None = None


class SnapshotCollector:
    """Builds Snapshots from a MarketSource, reusing candles that are not yet due."""

    def __init__(
        self,
        source: MarketSource,
        symbols: Sequence[str],
        candle_limits: dict[str, int],
        refresh_seconds: float,
        book_depth: int,
        clock: Callable[[], float] = time.time,
        configured: Sequence[str] | None = None,
        derivatives_seconds: float = DEFAULT_EVERY_SECONDS,
    ) -> None:
        """``symbols``: those the source lists at start-up (served); ``configured``: every
        symbol asked for (default ``symbols``) — one listed later joins ``symbols``, and
        one not listed is named in ``Snapshot.listing``; ``derivatives_seconds``: how
        often the derivatives are read (``DerivativesCollector``)."""
        self.source = source
        self.symbols = list(symbols)
        self.listing = ListingTracker(source.name, configured or symbols)
        self._markets_loaded_at = clock()
        self.candle_limits = candle_limits
        self.refresh_seconds = refresh_seconds
        self.book_depth = book_depth
        self.clock = clock
        self._candles: dict[tuple[str, str], _CachedCandles] = {}
        self._version = 0
        self._gate = asyncio.Semaphore(CONCURRENT_FETCHES)
        self._market_assets: dict[str, tuple[str, str]] | None = None
        self._market_ticks: dict[str, float] | None = None
        self._failing: dict[str, str] = {}  # "SYMBOL/part" → the reason, while it fails
        self._attempted: dict[tuple[str, str], float] = {}  # last failed candle fetch
        self.derivatives = DerivativesCollector(source, derivatives_seconds)

    async def collect(self) -> Snapshot:
        """Raises MarketDataError when the tickers cannot be fetched; a symbol's
        candles or book that fail are reported in ``missing`` (older candles are kept),
        and so is a symbol without a priced ticker (also listed in ``unpriced``). A
        symbol the exchange no longer lists or serves is named in ``listing``."""
        if self._markets_due():
            await self._reload_markets()
        listed = self._listed_now()
        served = [s for s in self.symbols if s in listed]
        tickers = await self.source.fetch_tickers(served)
        missing: dict[str, str] = {}
        refused: set[str] = set()
        candles, books, derivatives = await asyncio.gather(
            self._all_candles(tickers, missing, served, refused),
            self._all_books(missing, served, refused),
            self.derivatives.read(served, self.clock(), missing),
        )
        listing = await self._judge_listing(tickers, listed, refused)
        unpriced = {
            s: listing[s].reason if s in listing else NO_PRICE
            for s in self.symbols
            if s not in tickers
        }
        missing |= {f"{s}/ticker": reason for s, reason in unpriced.items()}
        self._version += 1
        return Snapshot(
            version=self._version,
            fetched_at_ms=int(self.clock() * 1000),
            source="simulated" if self.source.name == "simulated" else "ccxt",
            exchange=self.source.name,
            tickers=tickers,
            candles=candles,
            books=books,
            missing=missing,
            unpriced=unpriced,
            assets=self._assets(),
            tick_sizes=self._tick_sizes(),
            listing=listing,
            derivatives=derivatives,
            trades=recent_trades(self.source, served),
        )

    def _listed_now(self) -> frozenset[str]:
        """The symbols the source lists now; a configured one listed since start-up
        joins the collected symbols."""
        listed = self.source.listed_symbols()
        for symbol in self.listing.configured:
            if symbol in listed and symbol not in self.symbols:
                self.symbols.append(symbol)
        return listed

    async def _judge_listing(
        self, tickers: dict[str, Ticker], listed: frozenset[str], refused: set[str]
    ) -> dict[str, ListingIssue]:
        """The listing issues after this refresh. New trouble (a served pair without a
        ticker, or refused as unknown) makes the markets load again first, at most once
        per refresh interval, so a delisting is named as such in the same refresh."""
        trouble = {s for s in self.symbols if s in listed and s not in tickers} | refused
        new_trouble = trouble - self.listing.absent()
        if (
            new_trouble
            and self._since_markets() >= self.refresh_seconds
            and (await self._reload_markets())
        ):
            listed = self._listed_now()
        priced = {s: (t.last, t.timestamp_ms) for s, t in tickers.items()}
        evidence = RefreshEvidence(listed, priced, frozenset(refused))
        return self.listing.observe(evidence, int(self.clock() * 1000))

    def _since_markets(self) -> float:
        return self.clock() - self._markets_loaded_at

    def _markets_due(self) -> bool:
        """Whether to load the markets again before this refresh: while a served pair is
        delisted or unserved every ``MARKETS_RECHECK_SECONDS``, else every
        ``MARKETS_MAX_AGE_SECONDS``."""
        troubled = any(i.status != NOT_LISTED for i in self.listing.issues.values())
        limit = MARKETS_RECHECK_SECONDS if troubled else MARKETS_MAX_AGE_SECONDS
        return self._since_markets() >= limit

    async def _reload_markets(self) -> bool:
        """Loads the source's markets again; False when it cannot (logged, the markets
        known before are kept) or has none to load."""
        self._markets_loaded_at = self.clock()
        try:
            reloaded = await reload_markets(self.source)
        except MarketDataError as error:
            if "markets" not in self._failing:
                log.warning("markets could not be loaded again: %s", error)
            self._failing["markets"] = str(error)
            return False
        self._part_works("markets")
        if reloaded:
            # read again; a delisted pair keeps what its market said (tick size, assets)
            self._market_assets = (self._market_assets or {}) | market_assets(self.source)
            self._market_ticks = (self._market_ticks or {}) | market_tick_sizes(self.source)
        return reloaded

    def _tick_sizes(self) -> dict[str, float]:
        """The price step of the collected symbols, from the exchange's market definitions."""
        if self._market_ticks is None:
            self._market_ticks = market_tick_sizes(self.source)
        return {s: self._market_ticks[s] for s in self.symbols if s in self._market_ticks}

    def _assets(self) -> dict[str, tuple[str, str]]:
        """(base, quote) of the collected symbols from the exchange's market definitions."""
        if self._market_assets is None:
            self._market_assets = market_assets(self.source)
        return {s: self._market_assets[s] for s in self.symbols if s in self._market_assets}

    async def candles(self, symbol: str, timeframe: str) -> CandlesRead:
        """One symbol's candles, fetched only when due (raises MarketDataError when
        none were ever fetched); a failed fetch keeps the older ones, with its error."""
        if symbol not in self.symbols or timeframe not in self.candle_limits:
            raise ValueError(f"{symbol}/{timeframe} is not collected")
        if self._due(symbol, timeframe):
            missing: dict[str, str] = {}
            await self._fetch_candles(symbol, timeframe, missing)
            if missing and (symbol, timeframe) not in self._candles:
                raise MarketDataError(next(iter(missing.values())))
        cached = self._candles[(symbol, timeframe)]
        error = self._failing.get(f"{symbol}/candles/{timeframe}")
        return CandlesRead(cached.candles, cached.fetched_at, error)

    def _due(self, symbol: str, timeframe: str) -> bool:
        """Due when never fetched, or when the last fetch — or the last failed attempt,
        so a failing symbol is not asked again on every chart request — is older than
        ``max(refresh, timeframe / 10)``."""
        cached = self._candles.get((symbol, timeframe))
        if cached is None:
            return True
        interval = max(self.refresh_seconds, TIMEFRAME_SECONDS[timeframe] / 10)
        last = max(cached.fetched_at, self._attempted.get((symbol, timeframe), 0.0))
        return self.clock() - last >= interval

    async def _all_candles(
        self,
        tickers: dict[str, Ticker],
        missing: dict[str, str],
        served: list[str],
        refused: set[str],
    ) -> dict[str, dict[str, Candles]]:
        """Due candles of the ``served`` symbols fetched (a symbol refused as unknown is
        added to ``refused``); every symbol's candles held, the forming one patched."""
        due = [(s, tf) for s in served for tf in self.candle_limits if self._due(s, tf)]
        await asyncio.gather(*(self._fetch_candles(s, tf, missing, refused) for s, tf in due))
        result: dict[str, dict[str, Candles]] = {}
        for (symbol, timeframe), cached in self._candles.items():
            ticker = tickers.get(symbol)
            patched = _patch_forming(cached.candles, ticker) if ticker else cached.candles
            result.setdefault(symbol, {})[timeframe] = patched
        return result

    async def _fetch_candles(
        self,
        symbol: str,
        timeframe: str,
        missing: dict[str, str],
        refused: set[str] | None = None,
    ) -> None:
        async with self._gate:
            try:
                candles = await self.source.fetch_candles(
                    symbol, timeframe, self.candle_limits[timeframe]
                )
            except MarketDataError as error:
                if isinstance(error, SymbolNotListed) and refused is not None:
                    refused.add(symbol)
                self._attempted[(symbol, timeframe)] = self.clock()
                self._part_failed(f"{symbol}/candles/{timeframe}", str(error), missing)
                return
        self._part_works(f"{symbol}/candles/{timeframe}")
        self._candles[(symbol, timeframe)] = _CachedCandles(candles, self.clock())

    def _part_failed(self, part: str, reason: str, missing: dict[str, str]) -> None:
        """A symbol's part (candles of a timeframe, its book) failed: named in
        ``missing`` and logged once when the episode starts."""
        missing[part] = reason
        if part not in self._failing:
            log.warning("%s unavailable: %s", part, reason)
        self._failing[part] = reason

    def _part_works(self, part: str) -> None:
        if self._failing.pop(part, None) is not None:
            log.info("%s available again", part)

    async def _all_books(
        self, missing: dict[str, str], served: list[str], refused: set[str]
    ) -> dict[str, OrderBook]:
        books = await asyncio.gather(*(self._fetch_book(s, missing, refused) for s in served))
        return {book.symbol: book for book in books if book is not None}

    async def _fetch_book(
        self, symbol: str, missing: dict[str, str], refused: set[str]
    ) -> OrderBook | None:
        async with self._gate:
            try:
                book = await self.source.fetch_order_book(symbol, self.book_depth)
            except MarketDataError as error:
                if isinstance(error, SymbolNotListed):
                    refused.add(symbol)
                self._part_failed(f"{symbol}/orderbook", str(error), missing)
                return None
        self._part_works(f"{symbol}/orderbook")
        return book


def _patch_forming(candles: Candles, ticker: Ticker) -> Candles:
    """Move the newest candle's close to the ticker's last price when the ticker is
    newer and still inside that candle's period; otherwise return the candles as they are."""
    if len(candles) == 0:
        return candles
    period_ms = TIMEFRAME_SECONDS[candles.timeframe] * 1000
    opened = int(candles.timestamp_ms[-1])
    if not opened <= ticker.timestamp_ms < opened + period_ms:
        return candles
    close = candles.close.copy()
    high = candles.high.copy()
    low = candles.low.copy()
    close[-1] = ticker.last
    high[-1] = max(high[-1], ticker.last)
    low[-1] = min(low[-1], ticker.last)
    return replace(candles, close=close, high=high, low=low)
