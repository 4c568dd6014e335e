"""The streaming source's mode and per-symbol answers when one subscription is quiet or
refused: the streams stay the mode (no fallback of every symbol to REST), the other
symbols are answered by the stream, and only the quiet or refused one by REST. Real
ccxt.pro against the loopback fake Bybit."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest

from app.market.sources.exchange_feed import ExchangeStreams
from app.market.sources.streaming import StreamingSource
from tests.conftest import eventually
from tests.support.streams import STREAM_SYMBOLS, close_without_tls_linger, started_streaming_source
from tools.fake_bybit import TICKERS_PATH, FakeBybit

pytestmark = pytest.mark.integration

NAMES = STREAM_SYMBOLS[:-1]  # eleven USDT pairs: subscriptions of 10 and of XRP alone
LONE = "XRPUSDT"
TICKING = [s for s in NAMES if s != LONE]
BOUND = 30.0  # seconds: the most any wait may take on a busy machine


async def tick_forever(fake: FakeBybit) -> None:
    while True:
        await fake.streams.tick(TICKING)
        await asyncio.sleep(0.2)


def spot_ticker_calls(fake: FakeBybit) -> list[dict[str, str]]:
    return [
        r.query for r in fake.requests if r.path == TICKERS_PATH and r.query["category"] == "spot"
    ]


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=NAMES, inactive_symbols=()) as exchange:
        yield exchange


async def streaming_source(fake: FakeBybit) -> StreamingSource:
    source: StreamingSource = await started_streaming_source(
        fake,
        NAMES,
        # a quiet subscription is subscribed again after 3 s; the ticking one delivers
        # every 0.2 s, and stays live through a 3 s stall of a very busy machine
        silent_after=3.0,
        resubscribe_after=3.0,
    )
    return source


def lone_batch_stalled(source: StreamingSource, times: int) -> bool:
    feed = source.feed
    assert isinstance(feed, ExchangeStreams)
    return sum(stream.resubscribes for stream in feed.tickers) >= times


async def test_a_quiet_lone_subscription_leaves_the_others_streaming(fake: FakeBybit) -> None:
    source = await streaming_source(fake)
    ticking = asyncio.create_task(tick_forever(fake))
    try:
        await eventually(source.streaming, BOUND)
        await eventually(lambda: lone_batch_stalled(source, 2), BOUND)  # quiet, resubscribed
        assert source.streaming() and source.fallbacks == 0
        before = len(spot_ticker_calls(fake))
        tickers = await source.fetch_tickers(NAMES)
        assert set(tickers) == set(NAMES)
        calls = spot_ticker_calls(fake)[before:]
        assert len(calls) <= 1  # the quiet one alone, if it is not live now
        assert all(call.get("symbol") in (None, LONE) for call in calls)
    finally:
        ticking.cancel()
        await source.close()


async def test_a_refused_topic_leaves_the_others_streaming(fake: FakeBybit) -> None:
    fake.delist(LONE, instruments=False)  # listed, but its topics and tickers refused
    source = await streaming_source(fake)
    ticking = asyncio.create_task(tick_forever(fake))
    try:
        await eventually(source.streaming, BOUND)
        feed = source.feed
        assert isinstance(feed, ExchangeStreams)
        await eventually(lambda: set(feed.live_tickers()) == set(TICKING), BOUND)
        assert source.streaming() and source.fallbacks == 0
        reads = source.answered["feed"]
        tickers = await source.fetch_tickers(TICKING)
        assert set(tickers) == set(TICKING)
        assert source.answered["feed"] == reads + len(TICKING)  # none of them from REST
    finally:
        ticking.cancel()
        await source.close()
