"""Tickers from the exchange's stream: real ccxt.pro on the loopback fake Bybit's v5
public stream. A price set on the fake reaches ``on_ticker``; more symbols than one
subscribe request may carry are split (none refused); a dropped connection is watched
again; a silent stream stops being live, and is live again when it speaks."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.market.models.ticker import Ticker
from app.market.sources.ticker_stream import TickerStream
from tests.conftest import eventually
from tests.support.streams import STREAM_SYMBOLS, ccxt_symbol, loaded_pro_exchange
from tools.fake_bybit import FakeBybit

SYMBOLS = (*STREAM_SYMBOLS[:-1], "NEARUSDT")  # twelve USDT pairs
BOUND = 20.0  # seconds: the most any wait may take on a busy machine


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS, inactive_symbols=()) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


@pytest.fixture
async def stream(exchange: Any) -> AsyncIterator[tuple[TickerStream, list[Ticker]]]:
    heard: list[Ticker] = []
    symbols = {ccxt_symbol(name): name for name in SYMBOLS}
    watching = TickerStream(exchange, symbols, on_ticker=heard.append, silent_after=1.0)
    watching.start()
    yield watching, heard
    await watching.stop()


async def test_a_price_set_on_the_exchange_reaches_the_listener(stream, fake) -> None:
    watching, heard = stream
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    await fake.streams.set_price("ETHUSDT", 3456.5)

    def seen() -> bool:
        return any(t.symbol == "ETHUSDT" and t.last == 3456.5 for t in heard)

    await eventually(seen, BOUND)
    assert watching.latest["ETHUSDT"].last == 3456.5
    assert watching.is_live()


async def test_more_symbols_than_one_request_takes_are_split(stream, fake) -> None:
    watching, _ = stream
    assert [len(batch) for batch in watching.batches] == [10, 2]
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    assert watching.errors == 0  # no "args size >10" refusal


async def test_a_dropped_stream_is_watched_again(stream, fake) -> None:
    watching, _ = stream
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    await fake.streams.drop_all(abrupt=True)
    for _ in range(int(BOUND / 0.1)):  # set again until the resubscribed stream has it
        await fake.streams.set_price("BTCUSDT", 70_123.0)
        if watching.latest["BTCUSDT"].last == 70_123.0:
            break
        await asyncio.sleep(0.1)
    assert watching.latest["BTCUSDT"].last == 70_123.0
    assert fake.streams.connections_opened >= 2


async def test_a_silent_stream_is_not_live_and_comes_back(stream, fake) -> None:
    watching, _ = stream
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    await fake.streams.start_ticking(10)
    await eventually(watching.is_live, BOUND)
    fake.streams.silence(pongs=True)  # the socket stays open and answers pings
    await eventually(lambda: not watching.is_live(), BOUND)
    await eventually(lambda: set(watching.silent_symbols()) == set(SYMBOLS), BOUND)
    fake.streams.resume()
    await eventually(watching.is_live, BOUND)
    await fake.streams.stop_ticking()
