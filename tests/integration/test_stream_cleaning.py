"""Bad exchange data on the streams, kind by kind (issue 18): real ccxt.pro on the
loopback fake Bybit's v5 public stream, each bad message sent as Bybit would frame it.

A ticker stamped years ahead keeps the time we received it; a last price of 1e308 or
1e13, or one that is 0, null or empty, replaces nothing (the last real ticker stays and
ages; ccxt's derived price is never shown); a trade from the future or out of bound is
dropped; a crossed order book is never served and is subscribed again until it equals
the exchange's; book levels out of bound are left out. Every one is counted."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.market.models.order_book import OrderBook
from app.market.models.ticker import Ticker
from app.market.sources.book_stream import BookStream
from app.market.sources.quality import FUTURE_TOLERANCE_MS
from app.market.sources.stream_batches import Batching
from app.market.sources.ticker_stream import TickerStream
from app.market.sources.trade_stream import TradeStream
from tests.conftest import eventually
from tests.support.streams import ccxt_symbol, loaded_pro_exchange
from tools.fake_bybit import FakeBybit

NAMES = ("BTCUSDT", "ETHUSDT")
SYMBOLS = {ccxt_symbol(s): s for s in NAMES}
DEPTH = 20
BOUND = 20.0  # seconds: the most any wait may take on a busy machine
YEARS_AHEAD_MS = 10 * 365 * 86_400_000


def now_ms() -> int:
    return int(time.time() * 1000)


def counted(stream: Any, symbol: str, kind: str) -> int:
    return stream.data_quality.counts.get(symbol, {}).get(kind, 0)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=NAMES, inactive_symbols=()) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


@pytest.fixture
async def tickers(exchange: Any) -> AsyncIterator[tuple[TickerStream, list[Ticker]]]:
    heard: list[Ticker] = []
    stream = TickerStream(
        exchange, SYMBOLS, on_ticker=heard.append, batching=Batching(silent_after=60.0)
    )
    stream.start()
    await eventually(lambda: len(stream.latest) == len(NAMES), BOUND)
    yield stream, heard
    await stream.stop()


async def test_a_ticker_from_the_future_keeps_the_time_it_was_received(tickers, fake) -> None:
    stream, _ = tickers
    before = now_ms()
    await fake.streams.send_ticker("BTCUSDT", ts=fake.now_ms() + YEARS_AHEAD_MS, lastPrice="70000")
    await eventually(lambda: stream.latest["BTCUSDT"].last == 70_000.0, BOUND)

    stamp = stream.latest["BTCUSDT"].timestamp_ms
    assert before <= stamp <= now_ms()  # when it came, so it goes quiet like any other
    assert counted(stream, "BTCUSDT", "future_timestamp") == 1
    await fake.streams.send_ticker("BTCUSDT", ts=fake.now_ms(), lastPrice="70001")
    await eventually(lambda: stream.latest["BTCUSDT"].last == 70_001.0, BOUND)
    assert counted(stream, "BTCUSDT", "future_timestamp") == 1  # the clean one is not


@pytest.mark.parametrize("last", ["1e308", "1e13", "-5"])
async def test_an_absurd_last_price_replaces_nothing(tickers, fake, last: str) -> None:
    stream, heard = tickers
    shown = stream.latest["BTCUSDT"]
    await fake.streams.send_ticker("BTCUSDT", lastPrice=last)
    await eventually(lambda: counted(stream, "BTCUSDT", "ticker_unpriced") == 1, BOUND)

    assert stream.latest["BTCUSDT"] == shown
    assert counted(stream, "BTCUSDT", "implausible_value") == 1
    assert all(t.last < 1e12 for t in heard)


@pytest.mark.parametrize("last", ["0", None, ""])
async def test_a_missing_last_price_is_no_price_not_a_derived_one(tickers, fake, last) -> None:
    """ccxt would derive one from prevPrice24h × (1 + price24hPcnt)."""
    stream, heard = tickers
    shown, told = stream.latest["BTCUSDT"], len(heard)
    await fake.streams.send_ticker("BTCUSDT", lastPrice=last)
    await eventually(lambda: counted(stream, "BTCUSDT", "ticker_unpriced") == 1, BOUND)

    assert stream.latest["BTCUSDT"] == shown  # the last real one, ageing
    assert [t for t in heard[told:] if t.symbol == "BTCUSDT"] == []
    await fake.streams.set_price("BTCUSDT", 65_432.5)  # a real price is taken again
    await eventually(lambda: stream.latest["BTCUSDT"].last == 65_432.5, BOUND)


async def test_implausible_volumes_are_missing_fields(tickers, fake) -> None:
    stream, _ = tickers
    await fake.streams.send_ticker(
        "ETHUSDT", lastPrice="3333", volume24h="1e19", turnover24h="1e308", highPrice24h="1e13"
    )
    await eventually(lambda: stream.latest["ETHUSDT"].last == 3333.0, BOUND)

    ticker = stream.latest["ETHUSDT"]
    assert {"volume_24h", "high_24h"} <= set(ticker.missing)
    assert ticker.base_volume_24h == 0.0 and ticker.high_24h < 1e12
    assert counted(stream, "ETHUSDT", "implausible_value") == 1


# ----- trades ----------------------------------------------------------------------


@pytest.fixture
async def trades(exchange: Any, fake: FakeBybit) -> AsyncIterator[TradeStream]:
    stream = TradeStream(exchange, SYMBOLS, batching=Batching(silent_after=60.0))
    stream.start()
    topics = {f"publicTrade.{s}" for s in NAMES}
    await eventually(lambda: fake.streams.subscribed("spot") == topics, BOUND)
    yield stream
    await stream.stop()


@pytest.mark.parametrize(
    ("price", "size", "ahead_ms", "kind"),
    [
        ("1e308", "0.5", 0, "implausible_value"),
        ("1e13", "0.5", 0, "implausible_value"),
        ("64000", "1e19", 0, "implausible_value"),
        ("64000", "0.5", YEARS_AHEAD_MS, "future_timestamp"),
        ("64000", "0.5", FUTURE_TOLERANCE_MS + 60_000, "future_timestamp"),
    ],
)
async def test_a_bad_trade_is_dropped_and_counted(
    trades, fake, price: str, size: str, ahead_ms: int, kind: str
) -> None:
    await fake.streams.send_trade("BTCUSDT", price=price, size=size, at_ms=now_ms() + ahead_ms)
    await fake.streams.send_trade("BTCUSDT", price="64001", size="0.25")
    await eventually(lambda: len(trades.recent("BTCUSDT") or []) == 1, BOUND)

    assert [(t.price, t.amount) for t in trades.recent("BTCUSDT") or []] == [(64001.0, 0.25)]
    assert trades.dropped == 1
    assert counted(trades, "BTCUSDT", kind) == 1


# ----- order books -----------------------------------------------------------------


@pytest.fixture
async def books(exchange: Any, fake: FakeBybit) -> AsyncIterator[BookStream]:
    batching = Batching(silent_after=60.0, retry=(0.2, 1.0))
    stream = BookStream(exchange, SYMBOLS, DEPTH, batching=batching)
    stream.start()
    await eventually(lambda: matches_fake(stream, fake, "BTCUSDT"), BOUND)
    yield stream
    await stream.stop()


def fake_top(fake: FakeBybit, symbol: str) -> tuple[list[list[float]], list[list[float]]]:
    book = fake.order_books[symbol]
    return (
        [[float(p), float(s)] for p, s in book["b"][:DEPTH]],
        [[float(p), float(s)] for p, s in book["a"][:DEPTH]],
    )


def matches_fake(stream: BookStream, fake: FakeBybit, symbol: str) -> bool:
    book = stream.book(symbol)
    return book is not None and (book.bids.tolist(), book.asks.tolist()) == fake_top(fake, symbol)


async def watch_served(stream: BookStream, served: list[OrderBook]) -> None:
    """Read the served BTC book as often as the loop lets us (every message in between)."""
    while True:
        book = stream.book("BTCUSDT")
        if book is not None:
            served.append(book)
        await asyncio.sleep(0)


@pytest.mark.parametrize("locked", [False, True])
async def test_a_crossed_book_is_withheld_and_snapshotted_again(books, fake, locked) -> None:
    served: list[OrderBook] = []
    watcher = asyncio.create_task(watch_served(books, served))
    best_ask = float(fake.order_books["BTCUSDT"]["a"][0][0])
    crossing = str(best_ask if locked else best_ask * 1.01)
    try:
        await fake.streams.send_book_delta("BTCUSDT", bids=[[crossing, "5"]])
        await eventually(lambda: books.crossed == 1, BOUND)
        await eventually(lambda: books.resnapshots >= 1, BOUND)
        await eventually(lambda: matches_fake(books, fake, "BTCUSDT"), BOUND)
    finally:
        watcher.cancel()

    assert served and all(b.bids[0][0] < b.asks[0][0] for b in served)  # never crossed
    assert counted(books, "BTCUSDT", "book_crossed") == 1
    assert books.gaps == 0  # its update id was right: corrupt, not lost


async def test_book_levels_out_of_bound_are_left_out(books, fake) -> None:
    (bid, _), (ask, _) = fake.order_books["BTCUSDT"]["b"][0], fake.order_books["BTCUSDT"]["a"][0]
    await fake.streams.send_book_delta("BTCUSDT", bids=[[bid, "1e19"]], asks=[[ask, "1e308"]])
    await eventually(lambda: counted(books, "BTCUSDT", "implausible_value") == 1, BOUND)

    book = books.book("BTCUSDT")
    assert book is not None
    assert float(bid) not in book.bids[:, 0] and float(ask) not in book.asks[:, 0]
    assert book.bids[:, 1].max() < 1e18 and book.asks[:, 1].max() < 1e18
    assert len(book.bids) == len(book.asks) == DEPTH  # the next levels move up


async def test_a_book_from_the_future_keeps_the_time_it_was_received(books, fake) -> None:
    bid, size = fake.order_books["BTCUSDT"]["b"][0]
    before = now_ms()
    ahead = fake.now_ms() + YEARS_AHEAD_MS
    await fake.streams.send_book_delta("BTCUSDT", bids=[[bid, size]], ts=ahead)
    await eventually(lambda: counted(books, "BTCUSDT", "future_timestamp") == 1, BOUND)

    book = books.book("BTCUSDT")
    assert book is not None and before <= book.timestamp_ms <= now_ms()
