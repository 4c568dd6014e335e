"""Order books from the exchange's stream: real ccxt.pro on the loopback fake Bybit. A
snapshot and deltas give the fake's book; a lost update (the fake's ``skip_update``) is
noticed by our sequence check, the book is withheld until a fresh snapshot that the
stream gets by subscribing the topic again, and then equals the fake's book; a dropped
connection recovers; a silent stream serves no book."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.market.sources.book_stream import BookStream, stream_depth
from app.market.sources.stream_batches import Batching
from tests.conftest import eventually
from tests.support.streams import STREAM_SYMBOLS, ccxt_symbol, loaded_pro_exchange
from tools.fake_bybit import FakeBybit

DEPTH = 20  # served; the stream subscribes at 50
BOUND = 20.0  # seconds: the most any wait may take on a busy machine


SYMBOLS = {ccxt_symbol(s): s for s in STREAM_SYMBOLS}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=STREAM_SYMBOLS, inactive_symbols=()) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


@pytest.fixture
async def make_stream(exchange: Any) -> AsyncIterator[Callable[..., BookStream]]:
    made: list[BookStream] = []

    def make(**timing: Any) -> BookStream:
        batching = Batching(**{"silent_after": 60.0, "retry": (0.2, 1.0), **timing})
        stream = BookStream(exchange, SYMBOLS, DEPTH, batching=batching)
        stream.start()
        made.append(stream)
        return stream

    yield make
    for stream in made:
        await stream.stop()


def fake_top(fake: FakeBybit, symbol: str) -> tuple[list[list[float]], list[list[float]]]:
    book = fake.order_books[symbol]
    return (
        [[float(p), float(s)] for p, s in book["b"][:DEPTH]],
        [[float(p), float(s)] for p, s in book["a"][:DEPTH]],
    )


def matches_fake(stream: BookStream, fake: FakeBybit, symbol: str) -> bool:
    book = stream.book(symbol)
    if book is None:
        return False
    return (book.bids.tolist(), book.asks.tolist()) == fake_top(fake, symbol)


async def push_until(fake: FakeBybit, symbol: str, price: float, done: Callable[[], bool]) -> None:
    """Set ``price`` on the fake until ``done()``, bounded."""
    for _ in range(int(BOUND / 0.1)):
        await fake.streams.set_price(symbol, price)
        if done():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the stream never showed the pushed price")


def best_bid(stream: BookStream, symbol: str) -> float | None:
    book = stream.book(symbol)
    return None if book is None else float(book.bids[0, 0])


def subscribe_args(fake: FakeBybit) -> list[list[str]]:
    return [r.message["args"] for r in fake.streams.received if r.message["op"] == "subscribe"]


def test_the_stream_depth_is_the_smallest_served_that_suffices() -> None:
    assert stream_depth(1, (1, 50, 200)) == 1
    assert stream_depth(20, (1, 50, 200)) == 50
    assert stream_depth(50, (1, 50, 200)) == 50
    assert stream_depth(500, (1, 50, 200)) == 200  # the most there is, cut to what it has


async def test_snapshot_and_deltas_give_the_exchange_book(make_stream, fake: FakeBybit) -> None:
    stream = make_stream()
    await eventually(lambda: all(stream.book(s) is not None for s in SYMBOLS.values()), BOUND)
    book = stream.book("ETHUSDT")
    assert book is not None and book.bids.shape == (DEPTH, 2) and book.asks.shape == (DEPTH, 2)
    assert matches_fake(stream, fake, "ETHUSDT")

    for price in (3_001.5, 3_002.25, 2_999.0):
        await push_until(
            fake, "ETHUSDT", price, lambda p=price: best_bid(stream, "ETHUSDT") == p - 0.01
        )
    await eventually(lambda: matches_fake(stream, fake, "ETHUSDT"), BOUND)
    assert stream.gaps == 0 and stream.resnapshots == 0 and stream.errors == 0
    assert [len(args) for args in subscribe_args(fake)] == [10, 2]
    assert {t.split(".")[1] for args in subscribe_args(fake) for t in args} == {"50"}
    deltas = [m for m in fake.streams.sent if m.get("topic") == "orderbook.50.ETHUSDT"]
    assert "delta" in {m["type"] for m in deltas}


async def test_a_lost_update_is_a_gap_and_the_book_is_resnapshotted(
    make_stream, exchange: Any, fake: FakeBybit
) -> None:
    stream = make_stream()
    await eventually(lambda: all(stream.book(s) is not None for s in SYMBOLS.values()), BOUND)
    served: list[tuple[str, int, bool]] = []  # (type, u, book served after it), BTC only
    inner = exchange.handle_order_book  # the stream's check

    def observe(client: Any, message: dict[str, Any]) -> Any:
        result = inner(client, message)
        if message.get("topic") == "orderbook.50.BTCUSDT":
            served.append(
                (message["type"], message["data"]["u"], stream.book("BTCUSDT") is not None)
            )
        return result

    exchange.handle_order_book = observe
    fake.streams.skip_update("BTCUSDT")
    await fake.streams.set_price("BTCUSDT", 64_100.0)  # this update is lost
    await fake.streams.set_price("BTCUSDT", 64_200.0)  # its delta jumps u by 2

    await eventually(lambda: stream.resnapshots == 1, BOUND)
    await eventually(lambda: matches_fake(stream, fake, "BTCUSDT"), BOUND)
    assert stream.gaps == 1
    assert served[0][0] == "delta" and served[0][2] is False  # the gap: withheld at once
    snapshot = next(i for i, entry in enumerate(served) if entry[0] == "snapshot")
    assert not any(entry[2] for entry in served[:snapshot])  # nothing served before it
    assert served[snapshot][2] is True
    unsubscribes = [r.message for r in fake.streams.received if r.message["op"] == "unsubscribe"]
    assert [m["args"] for m in unsubscribes] == [["orderbook.50.BTCUSDT"]]
    assert subscribe_args(fake)[-1] == ["orderbook.50.BTCUSDT"]  # only the gapped topic
    assert "orderbook.50.BTCUSDT" in fake.streams.subscribed("spot")
    assert stream.book("ETHUSDT") is not None  # the rest of the batch carried on

    await push_until(fake, "BTCUSDT", 64_300.0, lambda: best_bid(stream, "BTCUSDT") == 64_299.99)
    await eventually(lambda: matches_fake(stream, fake, "BTCUSDT"), BOUND)
    assert stream.gaps == 1  # deltas after the re-snapshot follow on


async def test_a_dropped_stream_recovers(make_stream, fake: FakeBybit) -> None:
    stream = make_stream()
    await eventually(lambda: all(stream.book(s) is not None for s in SYMBOLS.values()), BOUND)

    await fake.streams.drop_all(abrupt=True)
    await push_until(fake, "SOLUSDT", 155.5, lambda: matches_fake(stream, fake, "SOLUSDT"))

    await eventually(lambda: stream.reconnects >= 1, BOUND)
    assert stream.errors >= 1 and stream.gaps == 0
    assert fake.streams.connections_opened >= 2
    assert max(len(args) for args in subscribe_args(fake)) <= 10


async def test_a_silent_stream_serves_no_book(make_stream, fake: FakeBybit) -> None:
    stream = make_stream(silent_after=1.0, resubscribe_after=60.0)  # silent, not stalled
    await fake.streams.start_ticking(10)
    try:
        await eventually(lambda: all(stream.book(s) is not None for s in SYMBOLS.values()), BOUND)
        fake.streams.silence(pongs=True)
        await eventually(lambda: stream.book("BTCUSDT") is None, BOUND)
        await eventually(lambda: not stream.is_live(), BOUND)  # every symbol silent
        assert stream.in_sync("BTCUSDT")  # in sync, but stale
        fake.streams.resume()
        await eventually(lambda: stream.book("BTCUSDT") is not None, BOUND)
    finally:
        await fake.streams.stop_ticking()


async def test_a_forgotten_subscription_is_subscribed_again_from_a_snapshot(
    make_stream, fake: FakeBybit
) -> None:
    stream = make_stream(silent_after=1.0)  # stalls after 3 s without a message
    await eventually(lambda: all(stream.book(s) is not None for s in SYMBOLS.values()), BOUND)
    fake.streams.forget()  # the exchange lost every subscription and says nothing

    await eventually(lambda: stream.resubscribes >= len(stream.batches), BOUND)
    for symbol in ("BTCUSDT", "ETHBTC"):  # one of each batch
        moved = float(fake.tickers[symbol]["lastPrice"]) * 1.01
        await push_until(fake, symbol, moved, lambda s=symbol: matches_fake(stream, fake, s))
    assert stream.gaps == 0 and stream.resets == 0
    assert fake.streams.connections_opened == 1  # subscribed again on the same connection
    assert fake.streams.subscribed() == {f"orderbook.50.{s}" for s in SYMBOLS.values()}


async def test_a_connection_lost_under_a_failing_delivery_is_one_failure(
    make_stream, fake: FakeBybit
) -> None:
    """A gap makes its batch's delivery unsubscribe the topic; the connection drops while
    that unsubscribe waits, so the delivery fails. That failure is the loss: the batch's
    next turn does not count it again (one drop, one failure per batch)."""
    stream = make_stream(unwatch_timeout=10.0)
    await eventually(lambda: all(stream.in_sync(s) for s in SYMBOLS.values()), BOUND)
    fake.streams.answer_requests = False  # the unsubscribe waits
    fake.streams.skip_update("BTCUSDT")
    price = float(fake.tickers["BTCUSDT"]["lastPrice"])
    await fake.streams.set_price("BTCUSDT", price + 1)  # lost
    await fake.streams.set_price("BTCUSDT", price + 2)  # a gap
    await eventually(lambda: stream.gaps == 1 and unsubscribing(fake), BOUND)
    fake.streams.answer_requests = True
    assert stream.errors == 0

    assert await fake.streams.drop_all(abrupt=True) == 1
    await eventually(lambda: stream.reconnects == len(stream.batches), BOUND)
    assert stream.errors == len(stream.batches)


def unsubscribing(fake: FakeBybit) -> bool:
    """Whether the fake received an unsubscribe request."""
    return any(r.message["op"] == "unsubscribe" for r in fake.streams.received)
