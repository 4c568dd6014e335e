"""A loopback fake of Bybit's v5 public REST API for tests.

It answers in Bybit's real response format (the ``retCode`` envelope, numbers as
strings, klines newest first), so the real ccxt library can be pointed at it with
``CcxtMarketSource("bybit", base_url=fake.base_url)``.

Data is deterministic for a given seed: tickers and order books are generated once
per symbol; a kline is a pure function of (seed, symbol, interval, bucket), so any
window is reproducible. Tests compare what ccxt returned with ``fake.tickers``,
``fake.order_books``, ``fake.kline_rows(...)`` or ``fake.last_results[path]``.

Faults: ``fail_next`` (a Bybit retCode in an HTTP 200 envelope), ``http_error_next``
(an HTTP status with an HTML body, as gateways send), ``delay_next``; each for the
next ``times`` matching requests (``times=None``: until ``clear_faults``), optionally
only on one ``path``. Every request is logged in ``fake.requests``.

Usage::

    async with FakeBybit() as fake:
        source = CcxtMarketSource("bybit", base_url=fake.base_url)
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

INSTRUMENTS_PATH = "/v5/market/instruments-info"
TICKERS_PATH = "/v5/market/tickers"
KLINE_PATH = "/v5/market/kline"
ORDERBOOK_PATH = "/v5/market/orderbook"
TIME_PATH = "/v5/market/time"

DEFAULT_SYMBOLS: tuple[str, ...] = (
    "BTCUSDT",
    "ETHUSDT",
    "SOLUSDT",
    "XRPUSDT",
    "DOGEUSDT",
    "ETHBTC",
)
DEFAULT_INACTIVE: tuple[str, ...] = ("NEWUSDT",)

# Bybit's interval names → milliseconds. "M" (month) is not a fixed length; unsupported.
INTERVAL_MS: dict[str, int] = {
    "1": 60_000,
    "3": 180_000,
    "5": 300_000,
    "15": 900_000,
    "30": 1_800_000,
    "60": 3_600_000,
    "120": 7_200_000,
    "240": 14_400_000,
    "360": 21_600_000,
    "720": 43_200_000,
    "D": 86_400_000,
    "W": 604_800_000,
}

PARAMS_ERROR = 10001
NOT_SUPPORTED_SYMBOLS = "Not supported symbols"
"""Bybit's message for an unknown symbol (retCode 10001); ccxt maps it to BadSymbol."""

KLINE_DEFAULT_LIMIT, KLINE_MAX_LIMIT = 200, 1000
BOOK_DEFAULT_LIMIT, BOOK_MAX_LIMIT = 1, 200

_QUOTES = ("USDT", "USDC", "BTC", "ETH", "EUR")
_BASE_PRICES = {
    "BTC": 65_000.0,
    "ETH": 3_200.0,
    "SOL": 150.0,
    "XRP": 0.55,
    "DOGE": 0.12,
}
_GATEWAY_503 = (
    "<html><head><title>503 Service Temporarily Unavailable</title></head><body>"
    "<center><h1>503 Service Temporarily Unavailable</h1></center>"
    + "<!-- padding to mimic a large error page -->" * 100
    + "</body></html>"
)


@dataclass
class RecordedRequest:
    path: str
    query: dict[str, str]


@dataclass
class Fault:
    """What to do instead of (or before) the normal answer for matching requests."""

    path: str | None
    remaining: int | None
    status: int = 200
    ret_code: int | None = None
    ret_msg: str = ""
    body: str | None = None
    delay_s: float = 0.0

    def matches(self, path: str) -> bool:
        return self.remaining != 0 and (self.path is None or self.path == path)


@dataclass
class _Spec:
    symbol: str
    base: str
    quote: str
    price: float
    decimals: int
    status: str = "Trading"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def tick(self) -> str:
        return f"{10.0**-self.decimals:.{self.decimals}f}"


class BybitError(Exception):
    """Raised inside handlers; becomes a retCode envelope."""

    def __init__(self, ret_code: int, ret_msg: str) -> None:
        super().__init__(ret_msg)
        self.ret_code = ret_code
        self.ret_msg = ret_msg


def split_pair(symbol: str) -> tuple[str, str]:
    for quote in _QUOTES:
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return symbol[: -len(quote)], quote
    raise ValueError(f"fake bybit: unknown quote in {symbol!r}")


def _fmt(value: float, decimals: int) -> str:
    return f"{value:.{decimals}f}"


class FakeBybit:
    """Bybit v5 public market endpoints (spot) served on 127.0.0.1."""

    def __init__(
        self,
        symbols: Sequence[str] = DEFAULT_SYMBOLS,
        *,
        inactive_symbols: Sequence[str] = DEFAULT_INACTIVE,
        seed: int = 7,
        now_ms: int | None = None,
    ) -> None:
        """``inactive_symbols`` are listed with status ``PreLaunch`` and serve no data.

        ``now_ms`` freezes the clock (kline windows, ``time`` fields); None = real time.
        """
        self.seed = seed
        self.symbols: tuple[str, ...] = tuple(symbols)
        self.inactive_symbols: tuple[str, ...] = tuple(inactive_symbols)
        self._frozen_now_ms = now_ms
        self._specs = {s: self._make_spec(s, "Trading") for s in self.symbols}
        self._specs.update({s: self._make_spec(s, "PreLaunch") for s in self.inactive_symbols})
        self._delisted: set[str] = set()
        self.tickers: dict[str, dict[str, str]] = {s: self._make_ticker(s) for s in self.symbols}
        self.order_books: dict[str, dict[str, list[list[str]]]] = {
            s: self._make_book(s) for s in self.symbols
        }
        self.requests: list[RecordedRequest] = []
        self.last_results: dict[str, dict[str, Any]] = {}
        self._faults: list[Fault] = []
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    # ----- lifecycle -------------------------------------------------------------

    async def start(self) -> str:
        """Bind 127.0.0.1 on a free port; returns the base URL."""
        app = web.Application()
        app.router.add_get(INSTRUMENTS_PATH, self._instruments)
        app.router.add_get(TICKERS_PATH, self._tickers)
        app.router.add_get(KLINE_PATH, self._kline)
        app.router.add_get(ORDERBOOK_PATH, self._orderbook)
        app.router.add_get(TIME_PATH, self._time)
        app.middlewares.append(self._middleware)
        self._closing.clear()
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        host, port = self._runner.addresses[0][:2]
        self.base_url = f"http://{host}:{port}"
        return self.base_url

    async def stop(self) -> None:
        """Stop serving; delayed requests are released at once. Idempotent."""
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    # ----- knobs for tests -------------------------------------------------------

    def fail_next(
        self,
        ret_code: int = PARAMS_ERROR,
        ret_msg: str = "params error",
        *,
        times: int | None = 1,
        path: str | None = None,
    ) -> None:
        """Answer HTTP 200 with a Bybit error envelope ``retCode``/``retMsg``."""
        self._faults.append(Fault(path, times, ret_code=ret_code, ret_msg=ret_msg))

    def http_error_next(
        self,
        status: int = 503,
        body: str | None = None,
        *,
        times: int | None = 1,
        path: str | None = None,
    ) -> None:
        """Answer with an HTTP error status and a non-JSON body (default: an HTML page)."""
        page = _GATEWAY_503 if body is None else body
        self._faults.append(Fault(path, times, status=status, body=page))

    def delay_next(self, seconds: float, *, times: int | None = 1, path: str | None = None) -> None:
        """Answer normally, but only after ``seconds`` (cut short by ``stop``)."""
        self._faults.append(Fault(path, times, delay_s=seconds))

    def clear_faults(self) -> None:
        self._faults.clear()

    def delist(self, symbol: str) -> None:
        """Stop serving ``symbol`` everywhere (as if delisted after clients loaded markets)."""
        self._delisted.add(symbol)

    def count(self, path: str) -> int:
        """How many requests reached ``path`` (faulted ones included)."""
        return sum(1 for request in self.requests if request.path == path)

    def now_ms(self) -> int:
        if self._frozen_now_ms is not None:
            return self._frozen_now_ms
        return int(time.time() * 1000)

    def kline_rows(
        self,
        symbol: str,
        interval: str,
        *,
        limit: int = KLINE_DEFAULT_LIMIT,
        start: int | None = None,
        end: int | None = None,
    ) -> list[list[str]]:
        """Exactly the rows ``/v5/market/kline`` serves for these parameters, newest first.

        No ``start``: the newest ``limit`` candles opening at or before ``end`` (default
        now; the newest one is still forming). ``start`` without ``end``: up to ``limit``
        candles from the one containing ``start`` onwards.
        """
        step = INTERVAL_MS[interval]
        newest = min(end if end is not None else self.now_ms(), self.now_ms()) // step
        if start is None:
            first = newest - limit + 1
        else:
            first = start // step
            if end is None:
                newest = min(newest, first + limit - 1)
            first = max(first, newest - limit + 1)
        return [self._candle(symbol, interval, k) for k in range(newest, first - 1, -1)]

    # ----- HTTP plumbing ---------------------------------------------------------

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.requests.append(RecordedRequest(request.path, dict(request.query)))
        fault = next((f for f in self._faults if f.matches(request.path)), None)
        if fault is not None:
            if fault.remaining is not None:
                fault.remaining -= 1
            if fault.delay_s > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), fault.delay_s)
            if fault.body is not None:
                return web.Response(status=fault.status, text=fault.body, content_type="text/html")
            if fault.ret_code is not None:
                return self._envelope(fault.ret_code, fault.ret_msg, {})
        try:
            result = await handler(request)
        except BybitError as exc:
            return self._envelope(exc.ret_code, exc.ret_msg, {})
        self.last_results[request.path] = result
        return self._envelope(0, "OK", result)

    def _envelope(self, ret_code: int, ret_msg: str, result: dict[str, Any]) -> web.Response:
        body = {
            "retCode": ret_code,
            "retMsg": ret_msg,
            "result": result,
            "retExtInfo": {},
            "time": self.now_ms(),
        }
        return web.json_response(body)

    @staticmethod
    def _require_spot(request: web.Request) -> None:
        if request.query.get("category") != "spot":
            raise BybitError(PARAMS_ERROR, "Illegal category")

    def _served_symbol(self, request: web.Request, required: bool = True) -> str | None:
        symbol = request.query.get("symbol")
        if symbol is None:
            if required:
                raise BybitError(PARAMS_ERROR, "params error: symbol invalid")
            return None
        if symbol not in self.tickers or symbol in self._delisted:
            raise BybitError(PARAMS_ERROR, NOT_SUPPORTED_SYMBOLS)
        return symbol

    @staticmethod
    def _int_param(request: web.Request, name: str, default: int | None) -> int | None:
        raw = request.query.get(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise BybitError(PARAMS_ERROR, f"params error: {name} invalid") from None

    # ----- endpoints ---------------------------------------------------------------

    async def _instruments(self, request: web.Request) -> dict[str, Any]:
        self._require_spot(request)
        listed = [s for s in self._specs.values() if s.symbol not in self._delisted]
        return {"category": "spot", "list": [self._instrument(spec) for spec in listed]}

    async def _tickers(self, request: web.Request) -> dict[str, Any]:
        self._require_spot(request)
        symbol = self._served_symbol(request, required=False)
        chosen = [symbol] if symbol else [s for s in self.symbols if s not in self._delisted]
        return {"category": "spot", "list": [self.tickers[s] for s in chosen]}

    async def _kline(self, request: web.Request) -> dict[str, Any]:
        self._require_spot(request)
        symbol = self._served_symbol(request)
        interval = request.query.get("interval", "")
        if interval not in INTERVAL_MS:
            raise BybitError(PARAMS_ERROR, "params error: interval invalid")
        limit = self._int_param(request, "limit", KLINE_DEFAULT_LIMIT) or KLINE_DEFAULT_LIMIT
        rows = self.kline_rows(
            symbol,
            interval,
            limit=max(1, min(limit, KLINE_MAX_LIMIT)),
            start=self._int_param(request, "start", None),
            end=self._int_param(request, "end", None),
        )
        return {"category": "spot", "symbol": symbol, "list": rows}

    async def _orderbook(self, request: web.Request) -> dict[str, Any]:
        self._require_spot(request)
        symbol = self._served_symbol(request)
        limit = self._int_param(request, "limit", BOOK_DEFAULT_LIMIT) or BOOK_DEFAULT_LIMIT
        limit = max(1, min(limit, BOOK_MAX_LIMIT))
        book = self.order_books[symbol]
        now = self.now_ms()
        return {
            "s": symbol,
            "b": book["b"][:limit],
            "a": book["a"][:limit],
            "ts": now,
            "u": 1_000_000 + now % 1_000_000,
            "seq": 50_000_000_000 + now % 1_000_000,
            "cts": now - 3,
        }

    async def _time(self, request: web.Request) -> dict[str, Any]:
        now = self.now_ms()
        return {"timeSecond": str(now // 1000), "timeNano": str(now * 1_000_000)}

    # ----- deterministic data --------------------------------------------------------

    def _rng(self, *parts: object) -> random.Random:
        return random.Random(":".join(str(p) for p in (self.seed, *parts)))

    def _make_spec(self, symbol: str, status: str) -> _Spec:
        base, quote = split_pair(symbol)
        rng = self._rng("spec", symbol)
        price = _BASE_PRICES.get(base) or math.exp(rng.uniform(-3.0, 5.0))
        if quote in ("BTC", "ETH"):
            price = price / _BASE_PRICES[quote]
        decimals = min(8, max(2, 4 - math.floor(math.log10(price))))
        return _Spec(symbol, base, quote, price, decimals, status)

    def _instrument(self, spec: _Spec) -> dict[str, Any]:
        min_qty = 1.0 / spec.price
        return {
            "symbol": spec.symbol,
            "baseCoin": spec.base,
            "quoteCoin": spec.quote,
            "innovation": "0",
            "status": spec.status,
            "marginTrading": "utaOnly",
            "stTag": "0",
            "lotSizeFilter": {
                "basePrecision": "0.000001",
                "quotePrecision": "0.00000001",
                "minOrderQty": _fmt(min_qty, 6),
                "maxOrderQty": _fmt(min_qty * 100_000, 6),
                "minOrderAmt": "1",
                "maxOrderAmt": "2000000",
            },
            "priceFilter": {"tickSize": spec.tick},
            "riskParameters": {"priceLimitRatioX": "0.01", "priceLimitRatioY": "0.02"},
            "symbolType": "",
        }

    def _make_ticker(self, symbol: str) -> dict[str, str]:
        spec = self._specs[symbol]
        rng = self._rng("ticker", symbol)
        d = spec.decimals
        tick = 10.0**-d
        last = round(spec.price * rng.uniform(0.97, 1.03), d)
        pcnt = round(rng.uniform(-0.08, 0.08), 4)
        prev = round(last / (1 + pcnt), d)
        volume = round(rng.uniform(1_000, 50_000) * 50 / math.sqrt(spec.price), 6)
        return {
            "symbol": symbol,
            "bid1Price": _fmt(last - tick, d),
            "bid1Size": _fmt(rng.uniform(0.01, 5.0), 6),
            "ask1Price": _fmt(last + tick, d),
            "ask1Size": _fmt(rng.uniform(0.01, 5.0), 6),
            "lastPrice": _fmt(last, d),
            "prevPrice24h": _fmt(prev, d),
            "price24hPcnt": _fmt(pcnt, 4),
            "highPrice24h": _fmt(max(last, prev) * 1.02, d),
            "lowPrice24h": _fmt(min(last, prev) * 0.98, d),
            "turnover24h": _fmt(volume * (last + prev) / 2, 8),
            "volume24h": _fmt(volume, 6),
            "usdIndexPrice": _fmt(last, d) if spec.quote == "USDT" else "",
        }

    def _make_book(self, symbol: str) -> dict[str, list[list[str]]]:
        spec = self._specs[symbol]
        ticker = self.tickers[symbol]
        rng = self._rng("book", symbol)
        d = spec.decimals
        tick = 10.0**-d
        best_bid, best_ask = float(ticker["bid1Price"]), float(ticker["ask1Price"])
        bids, asks = [], []
        bid_price, ask_price = best_bid, best_ask
        for level in range(BOOK_MAX_LIMIT):
            if level:
                bid_price -= tick * rng.randint(1, 3)
                ask_price += tick * rng.randint(1, 3)
            bids.append([_fmt(bid_price, d), _fmt(rng.uniform(0.001, 3.0), 6)])
            asks.append([_fmt(ask_price, d), _fmt(rng.uniform(0.001, 3.0), 6)])
        bids[0][1], asks[0][1] = ticker["bid1Size"], ticker["ask1Size"]
        return {"b": bids, "a": asks}

    def _level(self, symbol: str, interval: str, bucket: int) -> float:
        wave = 0.04 * math.sin(bucket / 37) + 0.015 * math.sin(bucket / 11)
        noise = self._rng("level", symbol, interval, bucket).uniform(-0.004, 0.004)
        return self._specs[symbol].price * (1 + wave + noise)

    def _candle(self, symbol: str, interval: str, bucket: int) -> list[str]:
        d = self._specs[symbol].decimals
        rng = self._rng("candle", symbol, interval, bucket)
        open_ = round(self._level(symbol, interval, bucket - 1), d)
        close = round(self._level(symbol, interval, bucket), d)
        high = round(max(open_, close) * (1 + rng.uniform(0, 0.003)), d)
        low = round(min(open_, close) * (1 - rng.uniform(0, 0.003)), d)
        volume = rng.uniform(1, 500) * 1_000 / self._specs[symbol].price
        return [
            str(bucket * INTERVAL_MS[interval]),
            _fmt(open_, d),
            _fmt(high, d),
            _fmt(low, d),
            _fmt(close, d),
            _fmt(volume, 6),
            _fmt(volume * close, 8),
        ]
