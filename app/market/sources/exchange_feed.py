"""The MarketFeed of a real exchange: its public WebSocket streams through ccxt.pro.

Each kind of data has its reader (``ticker_stream``, ``candle_stream``, ``book_stream``,
``trade_stream``, and ``liquidation_stream`` for the symbols' linear perpetuals where
the exchange has them); this module starts them for the listed symbols and answers the
feed's questions from what they hold, only while they are live.

Connections: ccxt keeps one connection per stream URL and instance, and an exchange
bounds the topics one connection may carry (the fake Bybit: 200; 25 symbols × 6 candle
timeframes alone are 150). So each reader gets connections of its own: the REST
instance carries the tickers, and sibling instances (same class, URLs and loaded
markets, no market load of their own) carry the rest, at most ``topics_per_connection``
topics each. Subscribe requests are split further by each reader (10 topics on Bybit).
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from app.market.models.candles import Candles
from app.market.models.derivatives import Liquidations
from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.models.trades import PublicTrade
from app.market.sources.base import MarketSource
from app.market.sources.book_stream import BookStream
from app.market.sources.candle_stream import CandleStream
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.feed import OnTicker
from app.market.sources.liquidation_stream import LiquidationStream
from app.market.sources.stream_batches import Batching
from app.market.sources.ticker_stream import TickerStream
from app.market.sources.trade_stream import TradeStream

log = logging.getLogger(__name__)

NEEDED_METHODS = (
    "watchTickers",
    "watchOHLCVForSymbols",
    "watchOrderBookForSymbols",
    "watchTradesForSymbols",
)
"""The ccxt.pro methods the feed uses; an exchange without them is polled (REST)."""

TOPICS_PER_CONNECTION = 200
"""Topics one connection carries at most (Bybit bounds it; the fake refuses beyond 200)."""

QUIET_TICKER_SECONDS = 60.0
"""A streamed ticker whose exchange time is older than this is not handed out even while
its batch is live: a pair that stopped trading (or was delisted) is asked of REST."""


def supports_streams(market: CcxtMarketSource) -> bool:
    """Whether the exchange's ccxt class streams everything the feed reads."""
    has = getattr(market.exchange, "has", {}) or {}
    return all(has.get(method) is True for method in NEEDED_METHODS)


class ExchangeStreams:
    """The streams of ``market``'s exchange for ``symbols`` (canonical, listed).

    ``backfill``: REST candles ``(symbol, timeframe, limit)`` (the guarded source's
    ``fetch_candles``) for the history at start and after every reconnect;
    ``candle_limits``: candles kept per timeframe; ``book_depth``: levels per side;
    ``silent_after``: seconds without a message after which tickers and books are not
    live (candles, pushed every 1–60 s, and trades, only when someone trades, get at
    least 90 s and 60 s); ``resubscribe_after``: seconds a ticker or book watch may bring
    nothing before its batch is subscribed again (≥ ``silent_after``; None: three times
    ``silent_after``, see ``Batching``)."""

    def __init__(
        self,
        market: CcxtMarketSource,
        symbols: Sequence[str],
        *,
        backfill: Callable[[str, str, int], Any],
        candle_limits: Mapping[str, int],
        book_depth: int,
        silent_after: float,
        resubscribe_after: float | None = None,
        topics_per_connection: int = TOPICS_PER_CONNECTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = market.name
        self.market = market
        self.symbols = tuple(symbols)
        self.backfill = backfill
        self.candle_limits = dict(candle_limits)
        self.book_depth = book_depth
        self.silent_after = silent_after
        self.resubscribe_after = resubscribe_after
        self.topics_per_connection = topics_per_connection
        self.clock = clock
        self.tickers: list[TickerStream] = []
        self.candle_streams: list[CandleStream] = []
        self.books: list[BookStream] = []
        self.trades: list[TradeStream] = []
        self.liquidation_streams: list[LiquidationStream] = []
        self._siblings: list[Any] = []
        self.unreadable = 0  # stream messages ccxt could not handle (dropped)
        self._unreadable_logged = False

    def start(self, on_ticker: OnTicker) -> None:
        """Starts every stream (once)."""
        if self.tickers:
            return
        names = self.market.ccxt_symbols(self.symbols)  # ccxt symbol → canonical
        self._guard(self.market.exchange)
        quick = Batching(silent_after=self.silent_after, resubscribe_after=self.resubscribe_after)
        for part in self._chunks(sorted(names)):
            exchange = self.market.exchange if not self.tickers else self._sibling()
            symbols = {n: names[n] for n in part}
            self.tickers.append(
                TickerStream(exchange, symbols, on_ticker=on_ticker, batching=quick)
            )
        for part in self._chunks(sorted(names)):
            symbols = {n: names[n] for n in part}
            book = BookStream(self._sibling(), symbols, self.book_depth, batching=quick)
            self.books.append(book)
        slow = Batching(silent_after=max(60.0, self.silent_after))
        for part in self._chunks(sorted(names)):
            symbols = {n: names[n] for n in part}
            self.trades.append(TradeStream(self._sibling(), symbols, batching=slow))
        pairs = [(n, tf) for n in sorted(names) for tf in sorted(self.candle_limits)]
        candles = Batching(silent_after=max(90.0, self.silent_after))
        for part in self._chunks(pairs):
            self.candle_streams.append(
                CandleStream(
                    self._sibling(),
                    {pair: names[pair[0]] for pair in part},
                    self.backfill,
                    self.candle_limits,
                    batching=candles,
                )
            )
        self._start_liquidations()
        for stream in self._all():
            stream.start()

    def _start_liquidations(self) -> None:
        """Liquidation readers for the symbols with a linear perpetual, where the
        exchange streams them (windows end at ``clock``: the exchange's time)."""
        perpetuals = self.market.perpetuals(self.symbols)  # ccxt perpetual → canonical
        if not perpetuals or self.market.exchange.has.get("watchLiquidations") is not True:
            return
        for part in self._chunks(sorted(perpetuals)):
            self.liquidation_streams.append(
                LiquidationStream(
                    self._sibling(),
                    {name: perpetuals[name] for name in part},
                    clock_ms=lambda: int(self.clock() * 1000),
                )
            )

    async def stop(self) -> None:
        """Stops every stream and closes the sibling connections (the REST instance is
        closed with the source)."""
        for stream in self._all():
            await stream.stop()
        for sibling in self._siblings:
            with contextlib.suppress(Exception):  # closing what may already be gone
                await sibling.close()

    def is_live(self) -> bool:
        """Whether the streams work: a ticker subscription delivered within
        ``silent_after`` (the mode). Every read is judged per symbol anyway — a symbol
        whose topic is quiet, refused or forgotten is answered by REST alone — so one
        quiet or refused subscription does not send every symbol to REST."""
        return any(batch_live for stream in self.tickers for batch_live in _batches_live(stream))

    def live_tickers(self) -> dict[str, Ticker]:
        """The newest ticker of each symbol whose batch is live and that is not quiet."""
        since = int((self.clock() - QUIET_TICKER_SECONDS) * 1000)
        live: dict[str, Ticker] = {}
        for stream in self.tickers:
            silent = set(stream.silent_symbols())
            live |= {
                s: t
                for s, t in stream.latest.items()
                if s not in silent and t.timestamp_ms >= since
            }
        return live

    def candles(self, symbol: str, timeframe: str) -> Candles | None:
        """The backfilled, live series of the symbol at ``timeframe``; else None."""
        for stream in self.candle_streams:
            series = stream.series(symbol, timeframe)
            if series is not None:
                return series
        return None

    def book(self, symbol: str) -> OrderBook | None:
        """The live, in-sequence book of the symbol; else None."""
        for stream in self.books:
            book = stream.book(symbol)
            if book is not None:
                return book
        return None

    def recent_trades(self, symbol: str) -> list[PublicTrade] | None:
        """The symbol's recent public trades while its stream is live; else None."""
        for stream in self.trades:
            trades = stream.recent(symbol)
            if trades is not None:
                return trades
        return None

    def liquidations(self, symbol: str) -> Liquidations | None:
        """The symbol's perpetual's liquidations over the last hour (or since watched);
        None without a perpetual, a liquidation stream, or while it is not watched."""
        for stream in self.liquidation_streams:
            window = stream.window(symbol)
            if window is not None:
                return window
        return None

    def status(self) -> dict[str, Any]:
        """Per kind of stream: live, counters, silent symbols (JSON-ready)."""
        return {
            "tickers": _kind_status(self.tickers, updates="updates"),
            "candles": _kind_status(
                self.candle_streams, updates="updates", backfills="backfills", gaps="gaps"
            ),
            "books": _kind_status(
                self.books,
                updates="updates",
                gaps="gaps",
                crossed="crossed",
                resnapshots="resnapshots",
            ),
            "trades": _kind_status(self.trades, updates="updates", dropped="dropped"),
            "liquidations": _kind_status(
                self.liquidation_streams, updates="updates", dropped="dropped"
            ),
            "connections": 1 + len(self._siblings),
            "unreadable": self.unreadable,
        }

    def _all(self) -> list[Any]:
        return [
            *self.tickers,
            *self.books,
            *self.trades,
            *self.candle_streams,
            *self.liquidation_streams,
        ]

    def _chunks(self, keys: Sequence[Any]) -> list[Sequence[Any]]:
        size = self.topics_per_connection
        return [keys[i : i + size] for i in range(0, len(keys), size)]

    def _sibling(self) -> Any:
        """A new ccxt instance of the exchange for one more connection: the REST
        instance's class, options and URLs, its markets set (not loaded again)."""
        main = self.market.exchange
        sibling = type(main)({"timeout": main.timeout, "options": copy.deepcopy(main.options)})
        sibling.urls = copy.deepcopy(main.urls)
        sibling.set_markets(main.markets, main.currencies)
        self._guard(sibling)
        self._siblings.append(sibling)
        return sibling

    def _guard(self, exchange: Any) -> None:
        """Drops (and counts) a stream message ccxt fails to handle: raised from its
        message callback, or from decoding the frame (a binary frame that is not UTF-8),
        the exception ends that connection's reading while the socket stays open — one
        malformed trade (``"v": "NaN"``) would silence every topic of the connection
        until ccxt's keepalive gave up on it (~50 s). The callback is guarded on the
        exchange (bound when a connection is made: set first), the decoding on each
        connection ccxt makes."""
        exchange.handle_message = self._dropping(exchange.handle_message)
        make_client = exchange.client

        def client(url: str) -> Any:
            made = make_client(url)
            if not getattr(made, "virtuoso_guarded", False):
                made.handle_text_or_binary_message = self._dropping(
                    made.handle_text_or_binary_message
                )
                made.virtuoso_guarded = True
            return made

        exchange.client = client

    def _dropping(self, handle: Callable[..., Any]) -> Callable[..., Any]:
        """``handle`` that counts, logs once and drops what it cannot read."""

        def guarded(*args: Any) -> Any:
            try:
                return handle(*args)
            except Exception as error:
                self.unreadable += 1
                if not self._unreadable_logged:  # once: the counter tells the rest
                    self._unreadable_logged = True
                    log.warning(
                        "%s stream message dropped, ccxt cannot read it: %s",
                        self.name,
                        " ".join(str(error).split())[:200],
                    )
                return None

        return guarded


def _batches_live(stream: Any) -> list[bool]:
    return [stream.batch_live(batch) for batch in stream.batches]


def _kind_status(streams: Sequence[Any], **counters: str) -> dict[str, Any]:
    """Live, summed counters and silent symbols of the readers of one kind."""
    return {
        "live": bool(streams) and all(s.is_live() for s in streams),
        "errors": sum(s.errors for s in streams),
        "reconnects": sum(s.reconnects for s in streams),
        "resubscribes": sum(s.resubscribes for s in streams),
        "resets": sum(s.resets for s in streams),
        "splits": sum(s.splits for s in streams),
        **{name: sum(getattr(s, attr) for s in streams) for name, attr in counters.items()},
        "silent": sorted({sym for s in streams for sym in s.silent_symbols()}),
    }


def exchange_feed_factory(
    market: CcxtMarketSource,
    *,
    candle_limits: Mapping[str, int],
    book_depth: int,
    silent_after: float,
) -> Callable[[MarketSource, Sequence[str]], ExchangeStreams]:
    """The StreamingSource's feed factory: the streams of ``market`` for the listed
    symbols, backfilled through the (guarded) REST source it is handed."""

    def build(source: MarketSource, symbols: Sequence[str]) -> ExchangeStreams:
        return ExchangeStreams(
            market,
            symbols,
            backfill=source.fetch_candles,
            candle_limits=candle_limits,
            book_depth=book_depth,
            silent_after=silent_after,
        )

    return build
