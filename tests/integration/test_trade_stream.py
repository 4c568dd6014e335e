"""Public trades from the exchange's stream: real ccxt.pro on the loopback fake Bybit.
Trades arrive with the taker's side and the exchange's time; the window per symbol is
bounded; bad rows are dropped and counted; a dropped connection recovers (and says from
when the window is complete again); a silent stream hands out no window."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.market.models.trades import PublicTrade
from app.market.sources.stream_batches import Batching
from app.market.sources.trade_stream import TradeStream
from tests.conftest import eventually
from tests.support.streams import STREAM_SYMBOLS, ccxt_symbol, loaded_pro_exchange
from tools.fake_bybit import FakeBybit

NOW = 1_737_100_800_000 + 30_000  # frozen clock, in the past (ahead of ours is "the future")
BOUND = 20.0  # seconds: the most any wait may take on a busy machine


SYMBOLS = {ccxt_symbol(s): s for s in STREAM_SYMBOLS}


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=STREAM_SYMBOLS, inactive_symbols=(), now_ms=NOW) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


@pytest.fixture
async def make_stream(exchange: Any, fake: FakeBybit) -> AsyncIterator[Callable[..., Any]]:
    made: list[TradeStream] = []

    async def make(keep: int = 1_000, **timing: Any) -> TradeStream:
        batching = Batching(**{"silent_after": 60.0, "retry": (0.2, 1.0), **timing})
        stream = TradeStream(exchange, SYMBOLS, keep=keep, batching=batching)
        stream.start()
        made.append(stream)
        topics = {f"publicTrade.{s}" for s in STREAM_SYMBOLS}
        await eventually(lambda: fake.streams.subscribed("spot") == topics, BOUND)
        return stream

    yield make
    for stream in made:
        await stream.stop()


def sent_trades(fake: FakeBybit, symbol: str) -> list[PublicTrade]:
    """The trades the fake sent for ``symbol``, oldest first, as the stream keeps them."""
    return [
        PublicTrade(int(t["T"]), float(t["p"]), float(t["v"]), t["S"].lower())
        for m in fake.streams.sent
        if m.get("topic") == f"publicTrade.{symbol}"
        for t in m["data"]
    ]


async def flush_until(fake: FakeBybit, done: Callable[[], bool]) -> None:
    """Trade BTC (same batch as ETH) until ``done()``: a trade ccxt cached while the
    stream was busy is taken on the batch's next delivery. Bounded."""
    for _ in range(int(BOUND / 0.1)):
        if done():
            return
        await fake.streams.tick(["BTCUSDT"])
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met")


async def test_trades_arrive_with_the_taker_side(make_stream, fake: FakeBybit) -> None:
    stream = await make_stream()
    for price in (3_001.0, 3_002.0, 2_999.5):
        await fake.streams.set_price("ETHUSDT", price)

    await flush_until(fake, lambda: stream.recent("ETHUSDT") == sent_trades(fake, "ETHUSDT"))
    trades = stream.recent("ETHUSDT")
    assert [t.price for t in trades] == [3_001.0, 3_002.0, 2_999.5]
    assert {t.side for t in trades} <= {"buy", "sell"}
    assert all(t.timestamp_ms == NOW and t.amount > 0 for t in trades)
    assert stream.last_trade_ms("ETHUSDT") == NOW
    # a symbol is live on its own trades: none yet is no evidence the topic works
    assert stream.recent("ADAUSDT") is None  # same batch as ETH, no trade of its own
    assert stream.last_trade_ms("ADAUSDT") is None
    assert stream.recent("SOLUSDT") is None  # the other batch has not delivered yet
    requests = [r.message["args"] for r in fake.streams.received if r.message["op"] == "subscribe"]
    assert [len(args) for args in requests] == [10, 2]
    assert stream.errors == 0 and stream.dropped == 0


async def test_the_window_is_bounded(make_stream, fake: FakeBybit) -> None:
    stream = await make_stream(keep=5)
    for step in range(8):
        await fake.streams.set_price("ETHUSDT", 3_000.0 + step)

    await flush_until(fake, lambda: stream.recent("ETHUSDT") == sent_trades(fake, "ETHUSDT")[-5:])
    assert [t.price for t in stream.recent("ETHUSDT")] == [3_003.0 + i for i in range(5)]
    assert stream.updates >= 8


async def test_bad_rows_are_dropped_and_counted(make_stream, fake: FakeBybit) -> None:
    stream = await make_stream()
    await fake.streams.send_trade("ETHUSDT", price="0", size="1.5")
    await fake.streams.send_trade("ETHUSDT", price="3000.5", size="-1")
    await fake.streams.send_trade("ETHUSDT", price="3000.5", size="0.25", side="Sell")

    await flush_until(fake, lambda: stream.dropped == 2 and bool(stream.recent("ETHUSDT")))
    assert stream.recent("ETHUSDT") == [PublicTrade(NOW, 3000.5, 0.25, "sell")]


async def test_a_dropped_stream_recovers(make_stream, fake: FakeBybit) -> None:
    stream = await make_stream()
    await flush_until(fake, lambda: stream.complete_since_ms("BTCUSDT") is not None)
    since = stream.complete_since_ms("BTCUSDT")

    await fake.streams.drop_all(abrupt=True)
    fake.set_now(NOW + 5_000)
    await flush_until(fake, lambda: stream.last_trade_ms("BTCUSDT") == NOW + 5_000)

    await eventually(lambda: stream.reconnects >= 1, BOUND)
    assert stream.errors >= 1
    assert stream.complete_since_ms("BTCUSDT") not in (None, since)  # a hole before it
    assert fake.streams.connections_opened >= 2


async def test_a_silent_stream_hands_out_no_trades(make_stream, fake: FakeBybit) -> None:
    stream = await make_stream(silent_after=1.0)
    await fake.streams.start_ticking(10)
    try:
        await eventually(stream.is_live, BOUND)
        assert stream.recent("BTCUSDT")
        fake.streams.silence(pongs=True)
        await eventually(lambda: stream.recent("BTCUSDT") is None, BOUND)
        assert "BTCUSDT" in stream.silent_symbols()
        assert stream.last_trade_ms("BTCUSDT") is not None  # what it kept, not current
        fake.streams.resume()
        await eventually(lambda: stream.recent("BTCUSDT") is not None, BOUND)
    finally:
        await fake.streams.stop_ticking()
