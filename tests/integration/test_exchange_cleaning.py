"""Bad exchange data on REST and through the whole streaming source (issue 18): real
ccxt against the loopback fake Bybit (REST and v5 public stream).

REST: a ticker time years ahead is replaced by the time it was fetched; a last price of
1e308, 1e13, 0, null or empty is no price (not ccxt's price derived from the open and
the 24 h change); a volume out of bound is a missing field; book levels out of bound are
left out; candle rows from the future are dropped and absurd ones filled. Streams: a
ticker from the future goes quiet 60 s after it came (our clock, not its stamp), a kline
from the future is dropped, a crossed book is counted, and what was cleaned shows in
``/health`` and ``/metrics``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest

from app.main.embedded import create_app
from app.market.sources.base import data_quality_of
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.exchange_feed import QUIET_TICKER_SECONDS, ExchangeStreams
from app.market.sources.quality import clean_candle_rows
from app.market.sources.streaming import StreamingSource
from tests.conftest import eventually, exchange_settings
from tests.support.streams import (
    close_without_tls_linger,
    loopback_source,
    started_streaming_source,
)
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

pytestmark = pytest.mark.integration

NAMES = ("BTCUSDT", "ETHUSDT")
BOUND = 30.0  # seconds: the most any wait may take on a busy machine
YEARS_AHEAD_MS = 10 * 365 * 86_400_000
MINUTE_MS = 60_000


def now_ms() -> int:
    return int(time.time() * 1000)


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=NAMES, inactive_symbols=()) as exchange:
        yield exchange


@pytest.fixture
async def source(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    made = loopback_source(fake.base_url)
    await made.start()
    yield made
    await made.close()


def counted(source: CcxtMarketSource, symbol: str, kind: str) -> int:
    return source.data_quality.counts.get(symbol, {}).get(kind, 0)


# ----- REST ------------------------------------------------------------------------


async def test_a_rest_ticker_from_the_future_keeps_the_time_it_was_fetched(source, fake) -> None:
    fake.override_ticker("BTCUSDT", time=str(fake.now_ms() + YEARS_AHEAD_MS))
    before = now_ms()
    tickers = await source.fetch_tickers(NAMES)

    assert before <= tickers["BTCUSDT"].timestamp_ms <= now_ms()
    assert counted(source, "BTCUSDT", "future_timestamp") == 1
    assert counted(source, "ETHUSDT", "future_timestamp") == 0


@pytest.mark.parametrize("last", ["1e308", "1e13"])
async def test_an_absurd_rest_last_price_is_no_price(source, fake, last: str) -> None:
    fake.override_ticker("BTCUSDT", lastPrice=last)
    tickers = await source.fetch_tickers(NAMES)

    assert set(tickers) == {"ETHUSDT"}
    assert counted(source, "BTCUSDT", "implausible_value") == 1
    assert counted(source, "BTCUSDT", "ticker_unpriced") == 1


@pytest.mark.parametrize("last", ["0", None, ""])
async def test_a_rest_ticker_without_a_last_price_is_not_given_a_derived_one(
    source, fake, last
) -> None:
    fake.override_ticker("BTCUSDT", lastPrice=last)  # prevPrice24h, price24hPcnt stay
    tickers = await source.fetch_tickers(NAMES)

    assert "BTCUSDT" not in tickers
    assert counted(source, "BTCUSDT", "ticker_unpriced") == 1


async def test_an_absurd_rest_volume_is_a_missing_field(source, fake) -> None:
    fake.override_ticker("ETHUSDT", volume24h="1e19", turnover24h="1e308", price24hPcnt="1e308")
    ticker = (await source.fetch_tickers(NAMES))["ETHUSDT"]

    assert "volume_24h" in ticker.missing
    assert ticker.base_volume_24h == 0.0 and ticker.quote_volume_24h < 1e18
    assert abs(ticker.change_24h_pct) < 100  # from the 24 h open, not the absurd one
    assert counted(source, "ETHUSDT", "implausible_value") == 1


async def test_rest_book_levels_out_of_bound_are_left_out(source, fake) -> None:
    book = fake.order_books["BTCUSDT"]
    bid, ask = book["b"][0][0], book["a"][0][0]
    book["b"][0], book["a"][0] = [bid, "1e308"], [ask, "1e19"]
    served = await source.fetch_order_book("BTCUSDT", 10)

    assert float(bid) not in served.bids[:, 0] and float(ask) not in served.asks[:, 0]
    assert len(served.bids) == len(served.asks) == 9  # of the 10 asked for
    assert counted(source, "BTCUSDT", "implausible_value") == 1


async def test_candle_rows_from_the_future_or_out_of_bound_are_cleaned(source) -> None:
    rows = await source.exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    newest = rows[-1][0]
    rows[2] = [rows[2][0], rows[2][1], 1e308, rows[2][3], rows[2][4], rows[2][5]]
    rows[3] = [*rows[3][:5], 1e19]
    rows.append([newest + YEARS_AHEAD_MS, 1.0, 1.0, 1.0, 1.0, 1.0])

    clean, quality = clean_candle_rows(rows, MINUTE_MS)

    assert [row[0] for row in clean] == [row[0] for row in rows[:5]]
    assert clean[2][1:] == [clean[1][4]] * 4 + [0.0]  # filled from the previous close
    assert clean[3][5] == 0.0
    assert (quality.dropped, quality.filled) == (1, 2)


# ----- the streaming source ------------------------------------------------------


@pytest.fixture
async def streaming(fake: FakeBybit) -> AsyncIterator[tuple[StreamingSource, list[float]]]:
    """The streaming source on the fake, its feed's clock (epoch s) in the list."""
    clock = [time.time()]
    made = await started_streaming_source(fake, NAMES, silent_after=60.0, clock=lambda: clock[0])
    await eventually(lambda: set(feed_of(made).live_tickers()) == set(NAMES), BOUND)
    yield made, clock
    await made.close()


def feed_of(source: StreamingSource) -> ExchangeStreams:
    assert isinstance(source.feed, ExchangeStreams)
    return source.feed


async def test_a_streamed_ticker_from_the_future_goes_quiet_like_any_other(streaming, fake) -> None:
    source, clock = streaming
    feed = feed_of(source)
    await fake.streams.send_ticker("BTCUSDT", ts=fake.now_ms() + YEARS_AHEAD_MS, lastPrice="70000")
    await eventually(lambda: feed.tickers[0].latest["BTCUSDT"].last == 70_000.0, BOUND)
    clock[0] = time.time()
    assert feed.live_tickers()["BTCUSDT"].last == 70_000.0

    clock[0] = time.time() + QUIET_TICKER_SECONDS + 1  # a minute without a word
    assert "BTCUSDT" not in feed.live_tickers()  # REST is asked again
    assert data_quality_of(source)["BTCUSDT"]["future_timestamp"] == 1
    assert source.status()["data_quality"]["future_timestamp"] == 1


async def test_a_kline_from_the_future_is_dropped(streaming, fake) -> None:
    source, _ = streaming
    feed = feed_of(source)
    await eventually(lambda: all(feed.candles(s, "1m") is not None for s in NAMES), BOUND)
    start = fake.now_ms() // MINUTE_MS * MINUTE_MS + YEARS_AHEAD_MS
    kline = {"start": start, "end": start + MINUTE_MS - 1, "interval": "1", "confirm": False}
    kline |= dict.fromkeys(("open", "close", "high", "low", "volume", "turnover"), "1")
    await fake.streams.send_raw("kline.1.BTCUSDT", [kline | {"timestamp": start}])

    def dropped() -> int:
        return data_quality_of(source).get("BTCUSDT", {}).get("candles_dropped", 0)

    for _ in range(int(BOUND / 0.2)):  # the market moves on (a delivery takes the cache)
        if dropped():
            break
        await fake.streams.tick(["BTCUSDT"])
        await asyncio.sleep(0.2)
    assert dropped() == 1
    series = feed.candles("BTCUSDT", "1m")
    assert series is not None and int(series.timestamp_ms[-1]) <= now_ms()


async def test_what_was_cleaned_shows_in_health_and_metrics(fake: FakeBybit) -> None:
    host_port = fake.base_url.removeprefix("http://")
    settings = exchange_settings(
        fake.base_url,
        ",".join(NAMES),
        VIRTUOSO_STREAMS="on",
        VIRTUOSO_EXCHANGE_WS_URL=f"ws://{host_port}",
        VIRTUOSO_REFRESH_SECONDS="1",
    )
    app = create_app(settings)
    source = app.extensions["virtuoso"].pipeline.source
    async with serve_app(app) as base:
        http = base.replace("ws://", "http://")
        await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
        await eventually(source.streaming, BOUND)
        await eventually(lambda: source.status()["feed"]["books"]["live"], BOUND)  # subscribed
        await fake.streams.send_ticker("BTCUSDT", ts=fake.now_ms() + YEARS_AHEAD_MS)
        best_ask = fake.order_books["BTCUSDT"]["a"][0][0]
        await fake.streams.send_book_delta("BTCUSDT", bids=[[best_ask, "1"]])
        await eventually(lambda: source.status()["feed"]["books"]["crossed"] == 1, BOUND)
        await eventually(lambda: "future_timestamp" in source.status()["data_quality"], BOUND)
        streams: dict = {}

        async def health_tells() -> bool:  # the collector's status of its next refresh
            nonlocal streams
            async with aiohttp.ClientSession() as session, session.get(f"{http}/health") as reply:
                streams = (await reply.json())["pipeline"]["streams"]
            return streams["feed"]["books"]["crossed"] == 1

        await eventually(health_tells, BOUND)
        async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as reply:
            metrics = await reply.text()
    assert streams["data_quality"]["future_timestamp"] == 1
    assert streams["data_quality"]["book_crossed"] == 1
    sample = 'virtuoso_exchange_data_quality_total{kind="future_timestamp",symbol="BTCUSDT"} 1.0'
    assert sample in metrics.splitlines()
    assert 'virtuoso_stream_events_total{event="crossed",kind="books"} 1.0' in metrics


@pytest.mark.parametrize(
    "corrupt",
    [
        lambda o, h, lo, c: [o, 100.0, 99_999_999.0, c],  # high below low
        lambda o, h, lo, c: [o, o * 0.5, lo, c],  # high below the open
        lambda o, h, lo, c: [o, h, c * 1.5, c],  # low above the close
    ],
    ids=["high-below-low", "high-below-open", "low-above-close"],
)
async def test_a_candle_whose_high_and_low_do_not_bound_it_is_filled(source, corrupt) -> None:
    """A corrupt candle (its range not holding its open and close) is a minute nothing
    of which can be trusted: carried at the previous close with no volume, counted."""
    rows = await source.exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
    rows[2] = [rows[2][0], *corrupt(*rows[2][1:5]), rows[2][5]]

    clean, quality = clean_candle_rows(rows, MINUTE_MS)

    assert [row[0] for row in clean] == [row[0] for row in rows]
    assert clean[2][1:] == [clean[1][4]] * 4 + [0.0]
    assert quality.filled == 1
    assert all(row[3] <= min(row[1], row[4]) and row[2] >= max(row[1], row[4]) for row in clean)
