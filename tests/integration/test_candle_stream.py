"""Candles from the exchange's kline stream: real ccxt.pro on the loopback fake Bybit,
REST backfill through the real ``CcxtMarketSource``. The backfilled series equals
REST's; the forming candle is revised in place; a candle counts as closed when the next
one opens; a stream gap or a dropped connection backfills so open times stay
consecutive; a silent stream hands out no series; no subscribe request carries more
than 10 topics. The fake's clock is frozen and moved by the tests."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import numpy as np
import pytest

from app.market.models.candles import Candles
from app.market.sources.candle_stream import CandleStream
from app.market.sources.ccxt import CcxtMarketSource
from app.market.sources.stream_batches import Batching
from tests.conftest import eventually
from tests.support.streams import (
    STREAM_SYMBOLS,
    ccxt_symbol,
    close_without_tls_linger,
    loaded_pro_exchange,
    loopback_source,
)
from tools.fake_bybit import FakeBybit

NOW = 1_737_100_800_000 + 30_000  # frozen, in the past: half-way through a 1 m candle
MINUTE = 60_000
BUCKET = NOW // MINUTE * MINUTE  # the forming 1 m candle's open time
LIMITS = {"1m": 30, "5m": 12}
BOUND = 20.0  # seconds: the most any wait may take on a busy machine


# Twelve symbols at 1 m and BTC at 5 m: thirteen topics, two subscribe requests.
PAIRS = {(ccxt_symbol(s), "1m"): s for s in STREAM_SYMBOLS} | {("BTC/USDT", "5m"): "BTCUSDT"}


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=STREAM_SYMBOLS, inactive_symbols=(), now_ms=NOW) as exchange:
        yield exchange


@pytest.fixture
async def rest(fake: FakeBybit) -> AsyncIterator[CcxtMarketSource]:
    source = loopback_source(fake.base_url, timeout_ms=5_000)
    yield source
    await source.close()


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


Closes = list[tuple[str, str]]


@pytest.fixture
async def make_stream(
    exchange: Any, rest: CcxtMarketSource
) -> AsyncIterator[Callable[..., tuple[CandleStream, Closes]]]:
    made: list[CandleStream] = []

    def make(**timing: Any) -> tuple[CandleStream, Closes]:
        closes: Closes = []
        batching = Batching(**{"silent_after": 60.0, "retry": (0.2, 1.0), **timing})
        stream = CandleStream(
            exchange,
            PAIRS,
            rest.fetch_candles,
            LIMITS,
            on_close=lambda s, tf: closes.append((s, tf)),
            batching=batching,
        )
        stream.start()
        made.append(stream)
        return stream, closes

    yield make
    for stream in made:
        await stream.stop()


async def all_series(stream: CandleStream) -> None:
    await eventually(lambda: all(stream.series(s, tf) for (_, tf), s in PAIRS.items()), BOUND)


def assert_consecutive(candles: Candles, step_ms: int = MINUTE) -> None:
    assert np.all(np.diff(candles.timestamp_ms) == step_ms)


def assert_same(stream_series: Candles, rest_series: Candles) -> None:
    assert stream_series.timestamp_ms.tolist() == rest_series.timestamp_ms.tolist()
    for column in ("open", "high", "low", "close", "volume"):
        assert getattr(stream_series, column).tolist() == getattr(rest_series, column).tolist()


def rows(candles: Candles) -> list[list[float]]:
    columns = ("timestamp_ms", "open", "high", "low", "close", "volume")
    return [getattr(candles, column).tolist() for column in columns]


async def push_until(fake: FakeBybit, symbol: str, price: float, done: Callable[[], bool]) -> None:
    """Set ``price`` on the fake until ``done()`` (a set before ccxt's resubscription
    is not seen), bounded."""
    for _ in range(int(BOUND / 0.1)):
        await fake.streams.set_price(symbol, price)
        if done():
            return
        await asyncio.sleep(0.1)
    raise AssertionError("the stream never showed the pushed price")


async def test_backfilled_series_equal_rest_and_requests_stay_small(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    stream, closes = make_stream()
    await all_series(stream)

    for (_, tf), symbol in PAIRS.items():
        kept = stream.series(symbol, tf)
        assert kept is not None and len(kept) == LIMITS[tf]
        assert_same(kept, await rest.fetch_candles(symbol, tf, LIMITS[tf]))
    btc = stream.series("BTCUSDT", "1m")
    assert btc is not None and int(btc.timestamp_ms[-1]) == BUCKET
    assert stream.last_closed_ms("BTCUSDT", "1m") == BUCKET - MINUTE
    assert ("BTCUSDT", "1m") in closes  # the first closed candle is news too
    requests = [r.message["args"] for r in fake.streams.received if r.message["op"] == "subscribe"]
    assert [len(args) for args in requests] == [10, 3]
    assert len(fake.streams.subscribed("spot")) == len(PAIRS)
    assert stream.errors == 0 and stream.gaps == 0
    assert stream.backfills == len(PAIRS)
    assert [len(batch) for batch in stream.batches] == [10, 3]


async def test_the_forming_candle_is_revised_in_place(make_stream, fake: FakeBybit) -> None:
    stream, closes = make_stream()
    await all_series(stream)
    closes.clear()
    before = stream.series("ETHUSDT", "1m")
    assert before is not None

    await push_until(fake, "ETHUSDT", 3456.5, lambda: _close("ETHUSDT", stream) == 3456.5)

    after = stream.series("ETHUSDT", "1m")
    assert after is not None and len(after) == len(before)
    assert after.timestamp_ms.tolist() == before.timestamp_ms.tolist()
    assert after.close[:-1].tolist() == before.close[:-1].tolist()  # closed ones untouched
    assert stream.last_closed_ms("ETHUSDT", "1m") == BUCKET - MINUTE
    assert closes == []  # no candle closed
    assert stream.updates >= 1


async def test_a_candle_closes_when_the_next_one_opens(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    stream, closes = make_stream()
    await all_series(stream)
    closes.clear()

    fake.set_now(NOW + MINUTE)  # the forming candle ends; the next trade opens a new one
    await push_until(fake, "BTCUSDT", 66_000.0, lambda: _last_open("BTCUSDT", stream) > BUCKET)

    kept = stream.series("BTCUSDT", "1m")
    assert kept is not None and int(kept.timestamp_ms[-1]) == BUCKET + MINUTE
    assert kept.close[-1] == 66_000.0 and len(kept) == LIMITS["1m"]
    assert_consecutive(kept)
    assert stream.last_closed_ms("BTCUSDT", "1m") == BUCKET
    assert closes.count(("BTCUSDT", "1m")) == 1
    assert ("BTCUSDT", "5m") not in closes  # the 5 m candle goes on forming
    assert_same(kept, await rest.fetch_candles("BTCUSDT", "1m", LIMITS["1m"]))
    assert stream.gaps == 0


async def test_a_gap_in_the_stream_is_backfilled(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    stream, _ = make_stream()
    await all_series(stream)
    backfills = stream.backfills

    fake.set_now(NOW + 3 * MINUTE)  # two candles pass unseen by the stream
    await push_until(fake, "SOLUSDT", 151.5, lambda: _last_open("SOLUSDT", stream) > BUCKET)

    kept = stream.series("SOLUSDT", "1m")
    assert kept is not None and int(kept.timestamp_ms[-1]) == BUCKET + 3 * MINUTE
    assert_consecutive(kept)
    assert stream.gaps >= 1 and stream.backfills > backfills
    assert stream.last_closed_ms("SOLUSDT", "1m") == BUCKET + 2 * MINUTE
    assert_same(kept, await rest.fetch_candles("SOLUSDT", "1m", LIMITS["1m"]))


async def test_a_dropped_stream_reconnects_and_backfills_without_a_gap(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    stream, _ = make_stream()
    await all_series(stream)
    backfills = stream.backfills

    await fake.streams.drop_all(abrupt=True)
    fake.set_now(NOW + 4 * MINUTE)  # candles close while nobody listens
    await push_until(fake, "BTCUSDT", 67_000.0, lambda: _close("BTCUSDT", stream) == 67_000.0)

    kept = stream.series("BTCUSDT", "1m")
    assert kept is not None and int(kept.timestamp_ms[-1]) == BUCKET + 4 * MINUTE
    assert len(kept) == LIMITS["1m"]
    assert_consecutive(kept)
    assert_same(kept, await rest.fetch_candles("BTCUSDT", "1m", LIMITS["1m"]))
    assert stream.backfills > backfills
    assert stream.errors >= 1
    await eventually(lambda: stream.reconnects >= 1, BOUND)
    assert fake.streams.connections_opened >= 2
    requests = [r.message["args"] for r in fake.streams.received if r.message["op"] == "subscribe"]
    assert max(len(args) for args in requests) <= 10


async def test_a_failed_backfill_is_retried_for_that_pair_alone(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    await rest.start()  # markets loaded, so the next REST call is a kline request
    fake.http_error_next(503, times=2, path="/v5/market/kline")
    stream, _ = make_stream()
    await fake.streams.start_ticking(10)  # deliveries to retry on
    try:
        await all_series(stream)
    finally:
        await fake.streams.stop_ticking()

    assert stream.backfill_errors == 2
    assert stream.errors == 0  # the batches carried on
    assert stream.backfills == len(PAIRS)
    for (_, tf), symbol in PAIRS.items():
        kept = stream.series(symbol, tf)
        assert kept is not None and len(kept) == LIMITS[tf]
        assert_consecutive(kept, 5 * MINUTE if tf == "5m" else MINUTE)


async def test_a_silent_stream_hands_out_no_series(make_stream, fake: FakeBybit) -> None:
    stream, _ = make_stream(silent_after=1.0)
    await fake.streams.start_ticking(10)
    try:
        await all_series(stream)
        await eventually(stream.is_live, BOUND)  # every batch within the 1 s bound at once
        fake.streams.silence(pongs=True)  # the socket stays open and answers pings
        await eventually(lambda: stream.series("BTCUSDT", "1m") is None, BOUND)
        await eventually(lambda: not stream.is_live(), BOUND)  # every pair silent
        assert "BTCUSDT" in stream.silent_symbols()
        backfills = stream.backfills
        fake.set_now(NOW + MINUTE)  # a candle closes while the stream says nothing

        fake.streams.resume()
        await all_series(stream)
        assert stream.backfills > backfills  # what closed unseen is fetched from REST
    finally:
        await fake.streams.stop_ticking()


async def test_a_reconnect_within_the_same_candle_fetches_no_history(
    make_stream, fake: FakeBybit
) -> None:
    """Nothing can have closed unseen while the stream's newest candle is still the one
    the series was forming: a storm of reconnects costs no REST call."""
    stream, _ = make_stream()
    await all_series(stream)
    backfills = stream.backfills
    for step in range(3):
        opened = fake.streams.connections_opened
        await fake.streams.drop_all(abrupt=True)
        await eventually(lambda o=opened: fake.streams.connections_opened > o, BOUND)
        price = 64_000.5 + step
        await push_until(fake, "BTCUSDT", price, lambda p=price: _close("BTCUSDT", stream) == p)
    assert stream.reconnects >= 3
    assert stream.backfills == backfills  # the clock stayed inside the same minute


async def test_a_forgotten_subscription_is_subscribed_again_and_backfilled(
    make_stream, fake: FakeBybit, rest: CcxtMarketSource
) -> None:
    stream, _ = make_stream(silent_after=1.0, resubscribe_after=1.0)  # stalls after 1 s
    await fake.streams.start_ticking(10)
    try:
        await all_series(stream)
        backfills = stream.backfills
        fake.streams.forget()  # the exchange lost every subscription and says nothing
        fake.set_now(NOW + 5 * MINUTE)  # and candles close meanwhile (1 m and 5 m)

        await eventually(lambda: stream.resubscribes >= len(stream.batches), BOUND)
        await all_series(stream)
    finally:
        await fake.streams.stop_ticking()
    assert stream.backfills >= backfills + len(PAIRS)  # history fetched again, every pair
    assert stream.resets == 0 and fake.streams.connections_opened == 1
    served = await rest.fetch_candles("BTCUSDT", "1m", LIMITS["1m"])  # ticking stopped

    def same_as_rest() -> bool:
        kept = stream.series("BTCUSDT", "1m")
        return kept is not None and rows(kept) == rows(served)

    await eventually(same_as_rest, BOUND)  # the last tick's candle may still be merging


def _close(symbol: str, stream: CandleStream) -> float | None:
    kept = stream.series(symbol, "1m")
    return None if kept is None else float(kept.close[-1])


def _last_open(symbol: str, stream: CandleStream) -> int:
    kept = stream.series(symbol, "1m")
    return -1 if kept is None else int(kept.timestamp_ms[-1])
