"""Market data from a real exchange through ``ccxt.async_support``.

One ccxt instance per source: ccxt keeps the loaded markets, the HTTP session and
the rate limiter on the instance, so sharing it is what makes ``enableRateLimit``
effective.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar
from urllib.parse import urlsplit

import ccxt.async_support as ccxt_async
from ccxt.base.errors import (
    BadSymbol,
    BaseError,
    DDoSProtection,
    ExchangeError,
    NetworkError,
    RateLimitExceeded,
)

from app.market.errors import (
    ExchangeRateLimited,
    ExchangeRejected,
    ExchangeUnavailable,
    MarketDataError,
    SymbolNotListed,
)
from app.market.models.candles import CandleQuality, Candles
from app.market.models.derivatives import DerivativesRead
from app.market.models.order_book import OrderBook
from app.market.models.symbols import canonical_symbol
from app.market.models.ticker import Ticker
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.sources.ccxt_derivatives import DerivativesReader
from app.market.sources.quality import (
    DataQualityCounters,
    clean_candle_rows,
    clean_levels,
    exchange_time,
    finite,
    from_future,
    price,
    ticker_anomalies,
    volume,
)
from app.market.sources.quality import change_pct as plausible_change_pct

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_DETAIL_CHARS = 200
"""ccxt puts whole response bodies (sometimes HTML pages) into its messages."""


_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")
_UNKNOWN_SYMBOL = re.compile(
    r"symbol[^a-z]{0,3}(is )?(invalid|not (supported|exist|found))|invalid symbol"
    r"|not supported symbol|unknown symbol",
    re.IGNORECASE,
)
"""How exchanges word a refused symbol when ccxt does not map it to BadSymbol: Bybit's
retCode 10001 "params error: symbol invalid" is a plain BadRequest in ccxt."""


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value: delta-seconds (``"3"``; a decimal
    such as ``"1.5"`` is accepted too) or an HTTP date (``"Wed, 21 Oct 2015 07:28:00 GMT"``,
    measured from ``now``, epoch seconds, default the wall clock; a date in the past
    gives 0). None when absent or unparsable."""
    if value is None:
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        seconds = float(text)
        return seconds if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": UTC by RFC 5322
        when = when.replace(tzinfo=UTC)
    reference = time.time() if now is None else now
    return max(0.0, when.timestamp() - reference)


def retry_after_from_headers(headers: Mapping[str, str] | None) -> float | None:
    """``parse_retry_after`` of the ``Retry-After`` header in ``headers`` (any case)."""
    for name, value in (headers or {}).items():
        if isinstance(name, str) and name.lower() == "retry-after":
            return parse_retry_after(str(value))
    return None


def map_ccxt_error(
    exc: BaseError, exchange_id: str, operation: str, retry_after: float | None = None
) -> MarketDataError:
    """Translate a ccxt exception into the source-independent error hierarchy.

    A rate limit or ban (``RateLimitExceeded``, ``DDoSProtection``) becomes
    :class:`ExchangeRateLimited` carrying ``retry_after`` (seconds, the exchange's
    Retry-After) when known.
    """
    detail = " ".join(str(exc).split())
    if len(detail) > MAX_DETAIL_CHARS:
        detail = detail[: MAX_DETAIL_CHARS - 3] + "..."
    message = f"{exchange_id} {operation} failed ({type(exc).__name__}): {detail}"
    if isinstance(exc, (RateLimitExceeded, DDoSProtection)):
        if retry_after is not None:
            message += f" [Retry-After {retry_after:g} s]"
        return ExchangeRateLimited(message, retry_after)
    if isinstance(exc, BadSymbol) or (
        isinstance(exc, ExchangeError) and _UNKNOWN_SYMBOL.search(detail)
    ):
        return SymbolNotListed(message)
    if isinstance(exc, NetworkError):
        return ExchangeUnavailable(message)
    return ExchangeRejected(message)


def rebase_url(url: str, base_url: str) -> str:
    """Point ``url`` at ``base_url`` while keeping its path.

    Exchanges such as binance put a path in their API roots (``.../api/v3``,
    ``.../sapi/v1``); keeping it lets one proxy or fake serve all of them. For
    bybit the roots have no path, so the result is exactly ``base_url``.
    """
    path = urlsplit(url).path.rstrip("/")
    return base_url.rstrip("/") + path


def override_api_urls(urls: Any, base_url: str) -> Any:
    """Return ``urls`` (a string or a nested dict/list of them) rebased onto ``base_url``."""
    if isinstance(urls, str):
        return rebase_url(urls, base_url)
    if isinstance(urls, Mapping):
        return {key: override_api_urls(value, base_url) for key, value in urls.items()}
    if isinstance(urls, list):
        return [override_api_urls(value, base_url) for value in urls]
    return urls


def _restrict_to_spot(exchange: ccxt_async.Exchange) -> None:
    """Load spot markets and the linear derivatives (the perpetuals' funding and open
    interest: ``ccxt_derivatives``), nothing else; spot stays the default type.

    Many exchanges (bybit, binance, okx, kucoin) also load inverse and option markets
    unless ``options.fetchMarkets.types`` says otherwise; each type costs requests at
    start. Canonical symbols still map to spot markets only (``_index_markets``).
    """
    exchange.options["defaultType"] = "spot"
    fetch_markets = exchange.options.get("fetchMarkets")
    types = (fetch_markets.get("types") or ()) if isinstance(fetch_markets, Mapping) else ()
    if isinstance(fetch_markets, Mapping) and "spot" in types:
        wanted = ["spot", "linear"] if "linear" in types else ["spot"]
        exchange.options["fetchMarkets"] = {**fetch_markets, "types": wanted}


def _build_exchange(
    exchange_id: str,
    base_url: str | None,
    timeout_ms: int,
    rate_limit_ms: float | None,
    ws_url: str | None = None,
    streaming: bool = False,
) -> ccxt_async.Exchange:
    """The ccxt instance: ccxt.pro's class (REST and streams on one instance: one market
    load, one rate limiter) when ``streaming`` and ccxt.pro has the exchange."""
    if exchange_id not in ccxt_async.exchanges:
        raise ValueError(f"unknown ccxt exchange id {exchange_id!r}")
    module: Any = ccxt_async
    if streaming:
        import ccxt.pro as ccxt_pro

        module = ccxt_pro if exchange_id in ccxt_pro.exchanges else ccxt_async
    config: dict[str, Any] = {"enableRateLimit": True, "timeout": timeout_ms}
    if rate_limit_ms is not None:
        config["rateLimit"] = rate_limit_ms
    exchange = getattr(module, exchange_id)(config)
    _restrict_to_spot(exchange)
    if base_url:
        exchange.urls["api"] = override_api_urls(exchange.urls["api"], base_url)
    streams = ws_url or (base_url and _ws_scheme(base_url))
    if streams and isinstance(exchange.urls["api"], dict) and "ws" in exchange.urls["api"]:
        # After the REST override (which rewrote these too, to http): the streams' own
        # base, the exchange's paths kept (/v5/public/spot).
        exchange.urls["api"]["ws"] = override_api_urls(exchange.urls["api"]["ws"], streams)
    return exchange


def _ws_scheme(url: str) -> str:
    """``http(s)://host`` → ``ws(s)://host``: a REST override without a stream override
    points the streams at the same host (never at the real exchange)."""
    return "ws" + url.removeprefix("http")


def _now_ms() -> int:
    return int(time.time() * 1000)


UNPARSABLE = "unparsable"
TICKER_PROBLEMS = (
    "ticker_missing",
    "ticker_unparsable",
    "ticker_unpriced",
    "ticker_fields_missing",
)  # key of a stand-in ticker ccxt could not parse: the error


def tolerate_bad_tickers(exchange: Any) -> None:
    """ccxt parses a batch of tickers in one go, and one field it cannot read
    (``"NaN"``, ``"abc"`` in a price or a percentage) raises a plain ValueError that
    fails the whole batch — every symbol's refresh for one symbol's data. The instance's
    ``parse_ticker`` is wrapped so that such a ticker becomes a stand-in holding only
    its symbol and the error: that symbol has no usable ticker (counted, noted), the
    others are served.

    ccxt also invents a last price the exchange did not send: when ``last``/``close``
    is empty, null or 0, ``safe_ticker`` derives it from the open and the percentage
    (Bybit's ``prevPrice24h`` × (1 + ``price24hPcnt``)) or the average. The instance's
    ``safe_ticker`` is wrapped to take that back: no price sent, no price.

    Idempotent (REST and stream readers share instances)."""
    if getattr(exchange.parse_ticker, "tolerant", False):
        return
    _no_invented_last(exchange)
    parse = exchange.parse_ticker

    def tolerant(ticker: dict, market: Any = None) -> dict:
        try:
            return parse(ticker, market)
        except Exception as error:  # any parse failure of one entry is that entry's
            known = exchange.safe_market(ticker.get("symbol"), market, None, "spot")
            return {"symbol": known["symbol"], "info": ticker, UNPARSABLE: str(error)[:200]}

    tolerant.tolerant = True  # type: ignore[attr-defined]
    exchange.parse_ticker = tolerant


def _no_invented_last(exchange: Any) -> None:
    """Wrap ``exchange.safe_ticker`` so a ticker sent without a last price (``close``
    and ``last`` empty, null or 0) keeps none (see ``tolerate_bad_tickers``)."""
    safe = exchange.safe_ticker

    def sent_only(ticker: dict, market: Any = None) -> dict:
        unified = safe(ticker, market)
        if not any(finite(ticker.get(key)) for key in ("close", "last")):
            unified["last"] = unified["close"] = None
        return unified

    exchange.safe_ticker = sent_only


def ticker_from_ccxt(symbol: str, raw: Mapping[str, Any], now_ms: int) -> Ticker | None:
    """Convert a ccxt unified ticker received at ``now_ms`` (epoch ms); None when it
    carries no usable last price (empty, null, NaN or 0: a suspended pair; or out of
    the plausible bound, ``app.market.sources.quality.MAX_PRICE``).

    Missing fields are named in ``Ticker.missing`` (the views show them as null); a
    field out of its plausible bound counts as missing: bid/ask fall back to the last
    price, high/low to the range of last and open, the 24h change is computed from the
    open when the exchange gives no percentage and is NaN when neither is given (so no
    change rule can fire on it), volumes are 0. An exchange time more than
    ``FUTURE_TOLERANCE_MS`` ahead of ``now_ms`` is replaced by ``now_ms``.
    """
    last = price(raw.get("last")) or price(raw.get("close"))
    if last is None:
        return None
    missing: list[str] = []
    open_24h = price(raw.get("open"))
    change_pct = plausible_change_pct(raw.get("percentage"))
    if change_pct is None:
        change_pct = (last - open_24h) / open_24h * 100 if open_24h else math.nan
    if open_24h is None:
        open_24h = last / (1 + change_pct / 100) if change_pct > -100 else last
    if math.isnan(change_pct):
        open_24h = last
        missing.append("change_24h")
    base_volume = volume(raw.get("baseVolume"))
    quote_volume = volume(raw.get("quoteVolume"))
    if base_volume is None and quote_volume is None:
        missing.append("volume_24h")
    base_volume = base_volume or 0.0
    extremes = {name: price(raw.get(key)) for name, key in _TICKER_PRICES.items()}
    missing += [name for name, value in extremes.items() if value is None]
    return Ticker(
        symbol=symbol,
        last=last,
        bid=extremes["bid"] or last,
        ask=extremes["ask"] or last,
        open_24h=open_24h,
        high_24h=extremes["high_24h"] or max(last, open_24h),
        low_24h=extremes["low_24h"] or min(last, open_24h),
        change_24h_pct=change_pct,
        base_volume_24h=base_volume,
        quote_volume_24h=base_volume * last if quote_volume is None else quote_volume,
        timestamp_ms=exchange_time(raw.get("timestamp"), now_ms),
        missing=tuple(missing),
    )


_TICKER_PRICES = {"bid": "bid", "ask": "ask", "high_24h": "high", "low_24h": "low"}
"""Ticker fields → ccxt's unified keys, for the prices that have a fallback."""


def _require_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise ExchangeRejected(f"{name} must be a positive integer, got {value!r}")


class CcxtMarketSource:
    """A MarketSource backed by one ccxt exchange: spot markets, and the positioning of
    their linear perpetuals (``fetch_derivatives``)."""

    def __init__(
        self,
        exchange_id: str,
        base_url: str | None = None,
        timeout_ms: int = 10_000,
        symbols_hint: Iterable[str] | None = None,
        rate_limit_ms: float | None = None,
        ws_url: str | None = None,
        streaming: bool = False,
    ) -> None:
        """``base_url`` replaces the host of every API root (proxy, testnet, local fake);
        ``ws_url`` the streams' (default: ``base_url`` as ws://). ``streaming``: a
        ccxt.pro instance, whose streams ``exchange_feed.ExchangeStreams`` reads.

        ``rate_limit_ms``: ccxt's ``rateLimit``, the client-side spacing in ms per unit
        of an endpoint's cost (Bybit's market endpoints cost 5); None keeps ccxt's value
        for the exchange (20 ms for Bybit: one market call per 100 ms).

        ``symbols_hint``: canonical symbols the caller intends to use; ``start`` logs
        a warning naming those the exchange does not list, so a misconfigured universe
        shows up at start rather than as per-request SymbolNotListed errors.
        """
        self.name = exchange_id
        self._exchange = _build_exchange(
            exchange_id, base_url, timeout_ms, rate_limit_ms, ws_url, streaming
        )
        # Waits in ccxt's rate limiter are timed apart from the requests (metrics, spans).
        from app.market.sources.ccxt_timing import instrument_throttle

        instrument_throttle(self._exchange)
        tolerate_bad_tickers(self._exchange)
        self._symbols_hint = frozenset(symbols_hint or ())
        self._to_ccxt: dict[str, str] = {}
        self._assets: dict[str, tuple[str, str]] = {}
        self._ticks: dict[str, float] = {}
        self._listed: frozenset[str] = frozenset()
        self._loaded = False
        self._closed = False
        self._load_lock = asyncio.Lock()
        self.data_quality = DataQualityCounters()
        """Per-symbol counts of bad exchange data (``app.market.sources.quality``)."""
        self.derivatives = DerivativesReader(
            exchange_id, self._exchange, self._call, self.data_quality
        )
        """The linear perpetuals' positioning (``fetch_derivatives``), histories cached."""

    @property
    def exchange(self) -> ccxt_async.Exchange:
        """The underlying ccxt instance (diagnostics and tests)."""
        return self._exchange

    async def start(self) -> None:
        """Load markets once; later calls return at once."""
        self._check_open()
        async with self._load_lock:
            if self._loaded:
                return
            markets = await self._call("load_markets", self._exchange.load_markets())
            self._index_markets(markets)
            self._loaded = True
        missing = sorted(self._symbols_hint - self._listed)
        if missing:
            log.warning("%s does not list hinted symbols: %s", self.name, ", ".join(missing))

    async def reload_markets(self) -> frozenset[str]:
        """Loads the exchange's markets again (ccxt keeps the first load forever
        otherwise) and returns the symbols listed now; logs the pairs that left or
        came back. Raises MarketDataError when the exchange cannot answer (the markets
        known before are kept)."""
        await self._ensure_started()
        async with self._load_lock:
            before = self._listed
            markets = await self._call("load_markets", self._exchange.load_markets(reload=True))
            self._index_markets(markets)
        for symbol in sorted(before - self._listed):
            log.warning("%s no longer lists %s", self.name, symbol)
        for symbol in sorted(self._listed - before):
            log.info("%s lists %s", self.name, symbol)
        return self._listed

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._exchange.close()

    def listed_symbols(self) -> frozenset[str]:
        return self._listed

    async def fetch_tickers(self, symbols: Sequence[str]) -> dict[str, Ticker]:
        """Tickers of ``symbols`` in one request.

        A symbol the exchange returned no usable ticker for is absent from the result;
        one its markets do not list raises SymbolNotListed before any request (callers
        ask for ``listed_symbols()`` only, which ``reload_markets`` keeps current).
        """
        await self._ensure_started()
        wanted = {self._ccxt_symbol(symbol): canonical_symbol(symbol) for symbol in symbols}
        if not wanted:
            return {}
        raw = await self._call("fetch_tickers", self._exchange.fetch_tickers(list(wanted)))
        now_ms = _now_ms()
        tickers: dict[str, Ticker] = {}
        for ccxt_symbol, canonical in wanted.items():
            entry = raw.get(ccxt_symbol)
            ticker = ticker_from_ccxt(canonical, entry, now_ms) if entry else None
            self._note_ticker(canonical, entry, ticker)
            for kind in ticker_anomalies(entry, now_ms) if entry else ():
                self._note_anomaly(canonical, kind, "ticker")
            if ticker is not None:
                tickers[canonical] = ticker
        return tickers

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        """Funding, open interest and long/short ratio of the linear perpetual of each of
        canonical ``symbols`` (``app.market.sources.ccxt_derivatives``); a symbol without
        one is unavailable with that reason. Raises MarketDataError when the exchange
        cannot answer the batch call."""
        await self._ensure_started()
        return await self.derivatives.read(symbols)

    def perpetuals(self, symbols: Iterable[str]) -> dict[str, str]:
        """ccxt linear perpetual → canonical symbol, for those of ``symbols`` that have
        one (valid after ``start``)."""
        known = self.derivatives.perpetuals
        return {known[s]: s for s in symbols if s in known}

    def _note_ticker(self, symbol: str, entry: Any, ticker: Ticker | None) -> None:
        """Count a missing ticker (``ticker_missing``), one without a usable price
        (``ticker_unpriced``) or one lacking fields (``ticker_fields_missing``); log one
        line when such an episode starts and one when it ends."""
        if not entry:
            problem = "ticker_missing"
        elif entry.get(UNPARSABLE):
            problem = "ticker_unparsable"
        elif ticker is None:
            problem = "ticker_unpriced"
        elif ticker.missing:
            problem = "ticker_fields_missing"
        else:
            problem = None
        for kind in TICKER_PROBLEMS:
            if kind != problem and self.data_quality.end_episode(symbol, kind):
                log.info("%s %s ticker is complete again", self.name, symbol)
        if problem is None:
            return
        self.data_quality.add(symbol, problem)
        if self.data_quality.start_episode(symbol, problem):
            if problem == "ticker_unparsable":
                detail = f"ccxt could not parse it ({entry[UNPARSABLE]})"
            elif ticker is not None:
                detail = ", ".join(ticker.missing)
            else:
                detail = "no usable last price"
            log.warning("%s %s for %s: %s", self.name, problem.replace("_", " "), symbol, detail)

    def _note_anomaly(self, symbol: str, kind: str, what: str) -> None:
        """Count one ``future_timestamp`` or ``implausible_value`` in ``what`` (a ticker,
        a book) of ``symbol``; one log line per symbol and kind (the counter tells the rest)."""
        self.data_quality.add(symbol, kind)
        if self.data_quality.start_episode(symbol, kind):
            log.warning("%s sent %s a %s %s, cleaned", self.name, symbol, what, kind)

    async def fetch_candles(self, symbol: str, timeframe: str, limit: int) -> Candles:
        """The newest ``limit`` candles, oldest first."""
        if timeframe not in TIMEFRAME_SECONDS:
            valid = ", ".join(TIMEFRAME_SECONDS)
            raise ExchangeRejected(f"unsupported timeframe {timeframe!r}; valid: {valid}")
        _require_positive("limit", limit)
        await self._ensure_started()
        ccxt_symbol = self._ccxt_symbol(symbol)
        rows = await self._call(
            "fetch_candles", self._exchange.fetch_ohlcv(ccxt_symbol, timeframe, limit=limit)
        )
        canonical = canonical_symbol(symbol)
        clean, quality = clean_candle_rows(rows or [], TIMEFRAME_SECONDS[timeframe] * 1000)
        if not clean:  # nothing usable came back: said, not silently an empty series
            quality = replace(quality, empty=1)
        self._note_candles(canonical, timeframe, quality)
        return Candles.from_rows(canonical, timeframe, clean[-limit:], quality)

    def _note_candles(self, symbol: str, timeframe: str, quality: CandleQuality) -> None:
        """Count what cleaning did; one log line when a symbol's candles turn bad and one
        when they are clean again (not one per fetch)."""
        self.data_quality.add_candles(symbol, quality)
        detail = f"candles/{timeframe}"
        if not quality.clean and self.data_quality.start_episode(symbol, detail):
            log.warning(
                "%s sent irregular %s %s candles, cleaned: %s",
                self.name,
                symbol,
                timeframe,
                ", ".join(f"{k}={v}" for k, v in quality.to_dict().items() if v),
            )
        elif quality.clean and self.data_quality.end_episode(symbol, detail):
            log.info("%s %s %s candles are regular again", self.name, symbol, timeframe)

    async def fetch_order_book(self, symbol: str, depth: int) -> OrderBook:
        _require_positive("depth", depth)
        await self._ensure_started()
        ccxt_symbol = self._ccxt_symbol(symbol)
        book = await self._call(
            "fetch_order_book", self._exchange.fetch_order_book(ccxt_symbol, limit=depth)
        )
        canonical, now = canonical_symbol(symbol), _now_ms()
        bids, bad_bids = clean_levels(book.get("bids"), depth)
        asks, bad_asks = clean_levels(book.get("asks"), depth)
        if bad_bids or bad_asks:
            self._note_anomaly(canonical, "implausible_value", "book")
        if from_future(book.get("timestamp"), now):
            self._note_anomaly(canonical, "future_timestamp", "book")
        return OrderBook(
            symbol=canonical,
            bids=bids,
            asks=asks,
            timestamp_ms=exchange_time(book.get("timestamp"), now),
        )

    async def _call(self, operation: str, request: Awaitable[T]) -> T:
        """Await a ccxt call, translating its errors (the one place that does)."""
        try:
            return await request
        except BaseError as exc:
            retry_after = None
            if isinstance(exc, (RateLimitExceeded, DDoSProtection)):
                # Set by ccxt from the response that raised, before it raised: no other
                # task can have run in between.
                retry_after = retry_after_from_headers(self._exchange.last_response_headers)
            raise map_ccxt_error(exc, self.name, operation, retry_after) from exc

    async def _ensure_started(self) -> None:
        """Load markets on first use, so a source whose ``start`` failed recovers later."""
        self._check_open()
        if not self._loaded:
            await self.start()

    def _check_open(self) -> None:
        if self._closed:
            raise ExchangeRejected(f"{self.name} market source is closed")

    def _index_markets(self, markets: Mapping[str, Mapping[str, Any]]) -> None:
        """Map canonical symbols to ccxt symbols for active spot markets.

        ``active`` None means the exchange does not say; such markets are kept.
        """
        to_ccxt: dict[str, str] = {}
        assets: dict[str, tuple[str, str]] = {}
        ticks: dict[str, float] = {}
        for market in markets.values():
            if not market.get("spot") or market.get("active") is False:
                continue
            try:
                base, quote = str(market["base"]).upper(), str(market["quote"]).upper()
                canonical = canonical_symbol(f"{base}{quote}")
            except (KeyError, TypeError, ValueError):
                continue
            if canonical not in to_ccxt:
                to_ccxt[canonical] = market["symbol"]
                assets[canonical] = (base, quote)
                tick = self._tick_size(market)
                if tick is not None:
                    ticks[canonical] = tick
        self._to_ccxt = to_ccxt
        self._assets = assets
        self._ticks = ticks
        self._listed = frozenset(to_ccxt)
        self.derivatives.index(markets)

    def _tick_size(self, market: Mapping[str, Any]) -> float | None:
        """The market's price step in quote currency: ccxt's ``precision.price`` is the
        step itself under TICK_SIZE precision (Bybit's ``priceFilter.tickSize``) and a
        number of decimals under DECIMAL_PLACES; None when unknown or not positive."""
        value = finite((market.get("precision") or {}).get("price"))
        if value is None or value <= 0:
            return None
        mode = getattr(self._exchange, "precisionMode", ccxt_async.TICK_SIZE)
        if mode == ccxt_async.TICK_SIZE:
            return value
        if mode == ccxt_async.DECIMAL_PLACES and value == int(value):
            return 10.0 ** -int(value)
        return None

    def market_tick_sizes(self) -> dict[str, float]:
        """The price step of every listed symbol with a known one; valid after ``start``."""
        return dict(self._ticks)

    def market_assets(self) -> dict[str, tuple[str, str]]:
        """(base, quote) of every listed symbol, from the exchange's market definitions
        (ccxt's ``markets``: any quote asset, DAI, TRY, FDUSD...); valid after ``start``."""
        return dict(self._assets)

    def ccxt_symbols(self, symbols: Iterable[str]) -> dict[str, str]:
        """ccxt symbol → canonical symbol of those of ``symbols`` the exchange lists."""
        return {self._to_ccxt[s]: s for s in symbols if s in self._to_ccxt}

    def _ccxt_symbol(self, symbol: str) -> str:
        try:
            ccxt_symbol = self._to_ccxt.get(canonical_symbol(symbol))
        except ValueError:
            ccxt_symbol = None
        if ccxt_symbol is None:
            raise SymbolNotListed(f"{self.name} does not list spot symbol {symbol!r}")
        return ccxt_symbol
