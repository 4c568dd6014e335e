"""CcxtMarketSource with the real ccxt library against the loopback FakeBybit."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable
from email.utils import formatdate
from typing import Any, TypeVar

import ccxt.async_support as ccxt_async
import numpy as np
import pytest
from ccxt.base import errors as ccxt_errors

from app.main.sources import make_source
from app.market.errors import (
    ExchangeRateLimited,
    ExchangeRejected,
    ExchangeUnavailable,
    SymbolNotListed,
)
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.sources.ccxt import (
    CcxtMarketSource,
    map_ccxt_error,
    parse_retry_after,
    retry_after_from_headers,
    ticker_from_ccxt,
)
from tests.conftest import exchange_settings
from tests.support.streams import close_without_tls_linger, loopback_source
from tools.fake_bybit import (
    INSTRUMENTS_PATH,
    KLINE_PATH,
    ORDERBOOK_PATH,
    TICKERS_PATH,
    FakeBybit,
)

T = TypeVar("T")

FROZEN_NOW_MS = 1_700_000_123_456
BOUND_S = 10.0
BYBIT_INTERVALS = {"1m": "1", "5m": "5", "30m": "30", "1h": "60", "4h": "240", "1d": "D"}


async def within(awaitable: Awaitable[T], seconds: float = BOUND_S) -> T:
    """Every await on the network is bounded, so a hang fails instead of stalling."""
    return await asyncio.wait_for(awaitable, seconds)


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(now_ms=FROZEN_NOW_MS) as server:
        yield server


@pytest.fixture
async def source(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    src = loopback_source(fake.base_url)
    await within(src.start())
    yield src
    await within(src.close())


def _all_strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for item in value.values() for s in _all_strings(item)]
    if isinstance(value, list):
        return [s for item in value for s in _all_strings(item)]
    return []


# ----- markets ------------------------------------------------------------------------


async def test_start_lists_exactly_the_trading_spot_symbols(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    assert source.name == "bybit"
    assert source.listed_symbols() == frozenset(fake.symbols)
    assert "NEWUSDT" in fake.inactive_symbols
    assert "NEWUSDT" not in source.listed_symbols()
    # spot, and the linear perpetuals (trading and pre-launch, as ccxt asks): no inverse
    # nor option markets
    categories = [r.query.get("category") for r in fake.requests if r.path == INSTRUMENTS_PATH]
    assert sorted(categories) == ["linear", "linear", "spot"]
    await within(source.start())
    assert fake.count(INSTRUMENTS_PATH) == 3
    # canonical symbols still name the spot markets
    assert source.ccxt_symbols(["BTCUSDT", "ETHBTC"]) == {
        "BTC/USDT": "BTCUSDT",
        "ETH/BTC": "ETHBTC",
    }
    assert source.market_assets()["BTCUSDT"] == ("BTC", "USDT")
    assert source.perpetuals(["BTCUSDT", "ETHBTC", "NEWUSDT"]) == {"BTC/USDT:USDT": "BTCUSDT"}


async def test_start_failure_recovers_on_first_fetch(fake: FakeBybit) -> None:
    fake.http_error_next(503, path=INSTRUMENTS_PATH)
    src = loopback_source(fake.base_url)
    try:
        with pytest.raises(ExchangeUnavailable):
            await within(src.start())
        assert src.listed_symbols() == frozenset()
        tickers = await within(src.fetch_tickers(["BTCUSDT"]))
        assert set(tickers) == {"BTCUSDT"}
        assert fake.count(INSTRUMENTS_PATH) == 6  # spot + 2 linear, twice
    finally:
        await within(src.close())


# ----- tickers ------------------------------------------------------------------------


async def test_fetch_tickers_is_one_request_with_served_values(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    wanted = ["BTCUSDT", "ETHUSDT", "ETHBTC", "DOGEUSDT"]
    before_ms = int(time.time() * 1000)
    tickers = await within(source.fetch_tickers(wanted))
    after_ms = int(time.time() * 1000)

    calls = [r for r in fake.requests if r.path == TICKERS_PATH]
    assert len(calls) == 1
    assert calls[0].query == {"category": "spot"}
    assert set(tickers) == set(wanted)
    for symbol in wanted:
        served = fake.tickers[symbol]
        ticker = tickers[symbol]
        assert ticker.symbol == symbol
        assert ticker.last == float(served["lastPrice"])
        assert ticker.bid == float(served["bid1Price"])
        assert ticker.ask == float(served["ask1Price"])
        assert ticker.open_24h == float(served["prevPrice24h"])
        assert ticker.high_24h == float(served["highPrice24h"])
        assert ticker.low_24h == float(served["lowPrice24h"])
        assert ticker.base_volume_24h == float(served["volume24h"])
        assert ticker.quote_volume_24h == float(served["turnover24h"])
        assert ticker.change_24h_pct == pytest.approx(float(served["price24hPcnt"]) * 100)
        # Bybit spot tickers carry no timestamp, so the source stamps them itself
        assert before_ms <= ticker.timestamp_ms <= after_ms


async def test_fetch_tickers_accepts_other_notations_and_dedups(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    tickers = await within(source.fetch_tickers(["btc/usdt", "BTC-USDT", "BTCUSDT"]))
    assert list(tickers) == ["BTCUSDT"]
    assert fake.count(TICKERS_PATH) == 1


async def test_fetch_tickers_empty_makes_no_request(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    assert await within(source.fetch_tickers([])) == {}
    assert fake.count(TICKERS_PATH) == 0


@pytest.mark.parametrize("unknown", ["FOOUSDT", "NEWUSDT", "not a symbol"])
async def test_fetch_tickers_unlisted_symbol_fails_before_any_request(
    fake: FakeBybit, source: CcxtMarketSource, unknown: str
) -> None:
    with pytest.raises(SymbolNotListed, match="bybit"):
        await within(source.fetch_tickers(["BTCUSDT", unknown]))
    assert fake.count(TICKERS_PATH) == 0


# ----- candles ------------------------------------------------------------------------


async def test_fetch_candles_oldest_first_with_exact_values(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    candles = await within(source.fetch_candles("BTCUSDT", "1h", 50))

    call = next(r for r in fake.requests if r.path == KLINE_PATH)
    assert call.query["symbol"] == "BTCUSDT"
    assert call.query["interval"] == "60"
    assert call.query["limit"] == "50"
    served = fake.last_results[KLINE_PATH]["list"]
    assert served == fake.kline_rows("BTCUSDT", "60", limit=50)
    assert int(served[0][0]) > int(served[-1][0])  # the fake serves newest first

    oldest_first = list(reversed(served))
    assert candles.symbol == "BTCUSDT"
    assert candles.timeframe == "1h"
    assert len(candles) == 50
    assert candles.timestamp_ms.dtype == np.int64
    assert candles.timestamp_ms.tolist() == [int(row[0]) for row in oldest_first]
    assert np.all(np.diff(candles.timestamp_ms) == 3_600_000)
    for column, index in (("open", 1), ("high", 2), ("low", 3), ("close", 4), ("volume", 5)):
        expected = [float(row[index]) for row in oldest_first]
        assert getattr(candles, column).tolist() == expected, column
    # the newest candle is the one still forming at the fake's clock
    assert candles.timestamp_ms[-1] == FROZEN_NOW_MS // 3_600_000 * 3_600_000


@pytest.mark.parametrize("timeframe", list(TIMEFRAME_SECONDS))
async def test_fetch_candles_every_timeframe_maps_to_bybit_interval(
    fake: FakeBybit, source: CcxtMarketSource, timeframe: str
) -> None:
    candles = await within(source.fetch_candles("ETHUSDT", timeframe, 5))
    call = next(r for r in fake.requests if r.path == KLINE_PATH)
    assert call.query["interval"] == BYBIT_INTERVALS[timeframe]
    assert len(candles) == 5
    assert np.all(np.diff(candles.timestamp_ms) == TIMEFRAME_SECONDS[timeframe] * 1000)


@pytest.mark.parametrize("timeframe", ["2h", "1w", "", "60"])
async def test_fetch_candles_rejects_other_timeframes(
    fake: FakeBybit, source: CcxtMarketSource, timeframe: str
) -> None:
    with pytest.raises(ExchangeRejected) as caught:
        await within(source.fetch_candles("BTCUSDT", timeframe, 10))
    assert not isinstance(caught.value, SymbolNotListed)
    assert "1m, 5m, 30m, 1h, 4h, 1d" in str(caught.value)
    assert fake.count(KLINE_PATH) == 0


async def test_fetch_candles_rejects_non_positive_limit(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    with pytest.raises(ExchangeRejected, match="limit"):
        await within(source.fetch_candles("BTCUSDT", "1h", 0))
    assert fake.count(KLINE_PATH) == 0


# ----- order book ----------------------------------------------------------------------


async def test_fetch_order_book_sides_order_and_depth(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    book = await within(source.fetch_order_book("SOLUSDT", 10))

    call = next(r for r in fake.requests if r.path == ORDERBOOK_PATH)
    assert call.query == {"symbol": "SOLUSDT", "category": "spot", "limit": "10"}
    served = fake.order_books["SOLUSDT"]
    assert book.symbol == "SOLUSDT"
    for side, key in ((book.bids, "b"), (book.asks, "a")):
        assert side.dtype == np.float64
        assert side.shape == (10, 2)
        assert side.tolist() == [[float(p), float(q)] for p, q in served[key][:10]]
    assert np.all(np.diff(book.bids[:, 0]) < 0)  # best (highest) bid first
    assert np.all(np.diff(book.asks[:, 0]) > 0)  # best (lowest) ask first
    assert book.bids[0, 0] < book.asks[0, 0]
    assert book.timestamp_ms == FROZEN_NOW_MS


# ----- errors --------------------------------------------------------------------------


async def test_exchange_error_code_maps_to_rejected(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.fail_next(10001, "params error: limit invalid", path=KLINE_PATH)
    with pytest.raises(ExchangeRejected) as caught:
        await within(source.fetch_candles("BTCUSDT", "1h", 10))
    error = caught.value
    assert type(error) is ExchangeRejected
    assert isinstance(error.__cause__, ccxt_errors.BadRequest)
    message = str(error)
    assert message.startswith("bybit fetch_candles failed (BadRequest)")
    assert "10001" in message and "limit invalid" in message
    # the fault was for one request only
    assert len(await within(source.fetch_candles("BTCUSDT", "1h", 10))) == 10


async def test_rate_limit_error_code_maps_to_unavailable(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.fail_next(10006, "Too many visits!", path=TICKERS_PATH)
    with pytest.raises(ExchangeUnavailable, match="fetch_tickers"):
        await within(source.fetch_tickers(["BTCUSDT"]))


async def test_symbol_delisted_on_the_exchange_maps_to_symbol_not_listed(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.delist("XRPUSDT")  # still in the markets loaded at start
    with pytest.raises(SymbolNotListed) as caught:
        await within(source.fetch_candles("XRPUSDT", "5m", 10))
    assert isinstance(caught.value.__cause__, ccxt_errors.BadSymbol)
    assert "Not supported symbols" in str(caught.value)
    assert fake.count(KLINE_PATH) == 1  # the exchange said so, not the local check
    with pytest.raises(SymbolNotListed):
        await within(source.fetch_order_book("XRPUSDT", 5))


async def test_unknown_symbol_fails_locally(fake: FakeBybit, source: CcxtMarketSource) -> None:
    with pytest.raises(SymbolNotListed, match="FOOUSDT"):
        await within(source.fetch_candles("FOOUSDT", "1h", 10))
    with pytest.raises(SymbolNotListed, match="FOOUSDT"):
        await within(source.fetch_order_book("FOOUSDT", 10))
    assert fake.count(KLINE_PATH) == fake.count(ORDERBOOK_PATH) == 0


@pytest.mark.parametrize(("status", "ccxt_class"), [(503, "ExchangeNotAvailable"), (429, None)])
async def test_http_error_maps_to_unavailable_with_short_message(
    fake: FakeBybit, source: CcxtMarketSource, status: int, ccxt_class: str | None
) -> None:
    fake.http_error_next(status, path=ORDERBOOK_PATH)
    with pytest.raises(ExchangeUnavailable) as caught:
        await within(source.fetch_order_book("BTCUSDT", 5))
    message = str(caught.value)
    assert message.startswith("bybit fetch_order_book failed")
    assert str(status) in message
    assert len(message) < 300  # the ~5 kB HTML page is cut
    assert isinstance(caught.value.__cause__, ccxt_errors.NetworkError)
    if ccxt_class:
        assert type(caught.value.__cause__).__name__ == ccxt_class


async def test_slow_exchange_times_out_as_unavailable(fake: FakeBybit) -> None:
    src = loopback_source(fake.base_url, timeout_ms=300)
    try:
        await within(src.start())
        fake.hang(path=TICKERS_PATH)  # the answer never comes: only the timeout can end it
        started = time.monotonic()
        with pytest.raises(ExchangeUnavailable, match="RequestTimeout"):
            await within(src.fetch_tickers(["BTCUSDT"]))
        assert time.monotonic() - started >= 0.3
        assert fake.count(TICKERS_PATH) == 1 and fake.hanging == 1  # still held, unanswered
    finally:
        await within(src.close())


async def test_short_delay_within_timeout_succeeds(fake: FakeBybit) -> None:
    src = loopback_source(fake.base_url, timeout_ms=5_000)
    try:
        fake.delay_next(0.2, path=INSTRUMENTS_PATH)
        await within(src.start())
        assert src.listed_symbols() == frozenset(fake.symbols)
    finally:
        await within(src.close())


async def test_unreachable_exchange_is_unavailable() -> None:
    async with FakeBybit() as server:
        base_url = server.base_url  # the port is free again after stop
    src = loopback_source(base_url, timeout_ms=1_000)
    try:
        with pytest.raises(ExchangeUnavailable, match="bybit load_markets failed"):
            await within(src.start())
    finally:
        await within(src.close())


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ccxt_errors.BadSymbol("x"), SymbolNotListed),
        (ccxt_errors.RequestTimeout("x"), ExchangeUnavailable),
        (ccxt_errors.ExchangeNotAvailable("x"), ExchangeUnavailable),
        (ccxt_errors.DDoSProtection("x"), ExchangeRateLimited),
        (ccxt_errors.RateLimitExceeded("x"), ExchangeRateLimited),
        (ccxt_errors.NetworkError("x"), ExchangeUnavailable),
        (ccxt_errors.BadRequest("x"), ExchangeRejected),
        (ccxt_errors.AuthenticationError("x"), ExchangeRejected),
        (ccxt_errors.ExchangeError("x"), ExchangeRejected),
        (ccxt_errors.BaseError("x"), ExchangeRejected),
    ],
)
def test_map_ccxt_error_classes(exc: ccxt_errors.BaseError, expected: type) -> None:
    mapped = map_ccxt_error(exc, "bybit", "fetch_tickers")
    assert type(mapped) is expected
    assert str(mapped) == f"bybit fetch_tickers failed ({type(exc).__name__}): x"


# ----- rate limits and Retry-After ------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "ccxt_class"),
    [
        (429, "bybit", ccxt_errors.RateLimitExceeded),  # Bybit envelope, retCode 10006
        (429, "cloudfront", ccxt_errors.RateLimitExceeded),  # HTML: by the HTTP status
        (418, "cloudfront", ccxt_errors.DDoSProtection),
        (403, "cloudfront", ccxt_errors.RateLimitExceeded),  # bybit's IP limit status
    ],
)
async def test_rate_limit_carries_retry_after_seconds(
    fake: FakeBybit, source: CcxtMarketSource, status: int, body: str, ccxt_class: type
) -> None:
    fake.rate_limit_next(retry_after=3, status=status, body=body, path=TICKERS_PATH)
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(source.fetch_tickers(["BTCUSDT"]))
    error = caught.value
    assert error.retry_after_seconds == 3.0
    assert type(error.__cause__) is ccxt_class
    assert str(error).startswith(f"bybit fetch_tickers failed ({ccxt_class.__name__}): ")
    assert str(error).endswith("[Retry-After 3 s]")
    assert len(str(error)) < 300
    assert "BTCUSDT" in await within(source.fetch_tickers(["BTCUSDT"]))


async def test_rate_limit_retry_after_as_http_date(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    fake.rate_limit_next(retry_after=formatdate(time.time() + 30, usegmt=True), path=KLINE_PATH)
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(source.fetch_candles("BTCUSDT", "1h", 5))
    assert caught.value.retry_after_seconds is not None
    assert 25.0 < caught.value.retry_after_seconds <= 31.0


async def test_rate_limit_without_retry_after(fake: FakeBybit, source: CcxtMarketSource) -> None:
    fake.rate_limit_next(retry_after=None, status=418, body="cloudfront", path=ORDERBOOK_PATH)
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(source.fetch_order_book("BTCUSDT", 5))
    assert caught.value.retry_after_seconds is None
    fake.rate_limit_next(retry_after=3, path=ORDERBOOK_PATH)
    with pytest.raises(ExchangeRateLimited):
        await within(source.fetch_order_book("BTCUSDT", 5))
    # The Retry-After of the previous response is not mistaken for this one's.
    fake.fail_next(10006, "Too many visits!", path=ORDERBOOK_PATH)  # HTTP 200, no header
    with pytest.raises(ExchangeRateLimited) as caught:
        await within(source.fetch_order_book("BTCUSDT", 5))
    assert caught.value.retry_after_seconds is None


async def test_other_errors_are_not_rate_limits(fake: FakeBybit, source: CcxtMarketSource) -> None:
    fake.http_error_next(503, path=TICKERS_PATH)
    with pytest.raises(ExchangeUnavailable) as caught:
        await within(source.fetch_tickers(["BTCUSDT"]))
    assert type(caught.value) is ExchangeUnavailable


NOW = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("3", 3.0),
        (" 120 ", 120.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2015 07:28:30 GMT", 30.0),
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0),  # in the past: go ahead
        ("Wed, 21 Oct 2015 07:29:00 -0000", 60.0),
        ("Wed, 21 Oct 2015 09:29:00 +0200", 60.0),
        ("-1", None),
        ("soon", None),
        ("", None),
        ("inf", None),
        (None, None),
    ],
)
def test_parse_retry_after(value: str | None, expected: float | None) -> None:
    result = parse_retry_after(value, now=NOW)
    assert result == (None if expected is None else pytest.approx(expected))


def test_retry_after_header_name_is_case_insensitive() -> None:
    assert retry_after_from_headers({"Retry-After": "4"}) == 4.0
    assert retry_after_from_headers({"retry-after": "5", "Content-Type": "text/html"}) == 5.0
    assert retry_after_from_headers({"RETRY-AFTER": "6"}) == 6.0
    assert retry_after_from_headers({"Content-Type": "text/html"}) is None
    assert retry_after_from_headers(None) is None


def test_map_ccxt_error_truncates_and_flattens_bodies() -> None:
    body = "<html>\n<body>" + "x" * 10_000 + "</body>\n</html>"
    mapped = map_ccxt_error(ccxt_errors.ExchangeNotAvailable(body), "okx", "load_markets")
    message = str(mapped)
    assert message.startswith("okx load_markets failed (ExchangeNotAvailable): <html> <body>x")
    assert message.endswith("...")
    assert "\n" not in message
    assert len(message) < 280


# ----- conversion fallbacks ----------------------------------------------------------------


def test_ticker_fallbacks_when_fields_are_missing() -> None:
    raw = {"last": 110.0, "open": 100.0, "percentage": None, "baseVolume": 3.0}
    ticker = ticker_from_ccxt("ABCUSDT", raw, now_ms=42)
    assert ticker is not None
    assert ticker.change_24h_pct == pytest.approx(10.0)
    assert ticker.quote_volume_24h == pytest.approx(330.0)
    assert ticker.bid == ticker.ask == 110.0
    assert ticker.timestamp_ms == 42
    assert (ticker.high_24h, ticker.low_24h) == (110.0, 100.0)


def test_ticker_open_derived_from_percentage_and_missing_last_skipped() -> None:
    raw = {"last": 99.0, "percentage": -1.0, "quoteVolume": 7.5, "timestamp": 5}
    ticker = ticker_from_ccxt("ABCUSDT", raw, now_ms=42)
    assert ticker is not None
    assert ticker.open_24h == pytest.approx(100.0)
    assert ticker.quote_volume_24h == 7.5
    assert ticker.timestamp_ms == 5
    assert ticker_from_ccxt("ABCUSDT", {"last": None, "bid": 1.0}, now_ms=42) is None


# ----- lifecycle and configuration -----------------------------------------------------


async def test_close_is_idempotent_and_later_calls_fail_cleanly(
    fake: FakeBybit, source: CcxtMarketSource
) -> None:
    await within(source.fetch_tickers(["BTCUSDT"]))
    assert source.exchange.session is not None
    await within(source.close())
    await within(source.close())
    assert source.exchange.session is None
    requests_before = len(fake.requests)
    with pytest.raises(ExchangeRejected, match="closed"):
        await within(source.fetch_tickers(["BTCUSDT"]))
    assert len(fake.requests) == requests_before


async def test_base_url_override_reaches_every_bybit_api_url() -> None:
    src = CcxtMarketSource("bybit", base_url="http://127.0.0.1:9/")
    try:
        urls = _all_strings(src.exchange.urls["api"])
        assert len(urls) >= 5
        assert set(urls) == {"http://127.0.0.1:9"}
        options = src.exchange.options
        assert options["defaultType"] == "spot"
        assert options["fetchMarkets"]["types"] == ["spot", "linear"]
        assert src.exchange.enableRateLimit is True
        assert src.exchange.timeout == 10_000
    finally:
        await within(src.close())


async def test_the_rate_limit_is_ccxts_unless_set(fake: FakeBybit) -> None:
    """VIRTUOSO_EXCHANGE_RATE_LIMIT_MS reaches ccxt's limiter: at 50 ms per unit of cost
    four market calls (cost 5 each) are spaced 250 ms apart by ccxt, not 100 ms."""
    default = CcxtMarketSource("bybit", base_url=fake.base_url)
    gentle = make_source(
        exchange_settings(fake.base_url, "BTCUSDT", VIRTUOSO_EXCHANGE_RATE_LIMIT_MS="50")
    )
    try:
        assert default.exchange.rateLimit == ccxt_async.bybit().rateLimit == 20
        exchange = gentle.source.exchange
        assert exchange.rateLimit == 50 and exchange.enableRateLimit is True
        await gentle.start()
        started = time.monotonic()
        for _ in range(4):
            await gentle.fetch_order_book("BTCUSDT", 25)
        assert time.monotonic() - started >= 3 * 0.25 - 0.05  # the first goes at once
    finally:
        await within(default.close())
        await within(gentle.close())


async def test_base_url_override_keeps_api_paths_of_other_exchanges() -> None:
    default_public = ccxt_async.binance().urls["api"]["public"]
    src = CcxtMarketSource("binance", base_url="http://127.0.0.1:9/proxy/")
    try:
        urls = _all_strings(src.exchange.urls["api"])
        assert urls and all(url.startswith("http://127.0.0.1:9/proxy/") for url in urls)
        assert default_public.endswith("/api/v3")
        assert src.exchange.urls["api"]["public"] == "http://127.0.0.1:9/proxy/api/v3"
        assert src.exchange.options["fetchMarkets"]["types"] == ["spot", "linear"]
    finally:
        await within(src.close())


async def test_without_base_url_the_real_hosts_stay() -> None:
    default_urls = ccxt_async.bybit().urls["api"]
    src = CcxtMarketSource("bybit")
    try:
        assert src.exchange.urls["api"] == default_urls
        assert all(url.startswith("https://api.") for url in _all_strings(default_urls))
    finally:
        await within(src.close())


def test_unknown_exchange_id_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="nosuchexchange"):
        CcxtMarketSource("nosuchexchange")


async def test_symbols_hint_warns_about_unlisted_symbols(
    fake: FakeBybit, caplog: pytest.LogCaptureFixture
) -> None:
    src = loopback_source(fake.base_url, symbols_hint=["BTCUSDT", "FOOUSDT", "NEWUSDT"])
    try:
        with caplog.at_level("WARNING", logger="app.market.sources.ccxt"):
            await within(src.start())
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert warnings == ["bybit does not list hinted symbols: FOOUSDT, NEWUSDT"]
    finally:
        await within(src.close())
