"""Liquidations from the exchange's stream: real ccxt.pro on the loopback fake Bybit's
linear stream (``allLiquidation.<SYMBOL>``). Each perpetual is its own subscribe
request; liquidations sent appear in the symbol's one-hour window (a Bybit ``Buy`` is a
long position liquidated) and leave it an hour later on the exchange's clock; bad
entries are dropped and counted; and the streaming source adds the window to what REST
says of each symbol's derivatives."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from app.market.models.derivatives import HOUR_MS
from app.market.sources.base import MarketSource, fetch_derivatives
from app.market.sources.exchange_feed import ExchangeStreams
from app.market.sources.guarded import GuardedSource
from app.market.sources.liquidation_stream import (
    BUCKETS,
    MINUTE_MS,
    LiquidationStream,
    window_start_ms,
)
from app.market.sources.stream_batches import Batching
from app.market.sources.streaming import StreamingSource
from tests.conftest import eventually
from tests.support.streams import close_without_tls_linger, loopback_source, pro_exchange
from tools.fake_bybit import FakeBybit

NOW = 1_800_000_000_000 + 30_000  # frozen clock
BOUND = 20.0
SYMBOLS = ("BTCUSDT", "ETHUSDT", "SOLUSDT", "ETHBTC")
PERPETUALS = {"BTC/USDT:USDT": "BTCUSDT", "ETH/USDT:USDT": "ETHUSDT", "SOL/USDT:USDT": "SOLUSDT"}


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS, inactive_symbols=(), now_ms=NOW) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    """ccxt.pro with the linear markets loaded, as the service loads them."""
    made = pro_exchange(fake)
    made.options["fetchMarkets"] = {"types": ["spot", "linear"]}
    await made.load_markets()
    yield made
    await made.close()


@pytest.fixture
async def stream(exchange: Any, fake: FakeBybit) -> AsyncIterator[LiquidationStream]:
    batching = Batching(topics_per_request=1, silent_after=600.0, retry=(0.2, 1.0))
    made = LiquidationStream(exchange, PERPETUALS, batching=batching, clock_ms=fake.now_ms)
    made.start()
    topics = {f"allLiquidation.{s}" for s in PERPETUALS.values()}
    await eventually(lambda: fake.streams.subscribed("linear") == topics, BOUND)
    yield made
    await made.stop()


def subscribes(fake: FakeBybit) -> list[list[str]]:
    return [
        m.message["args"]
        for m in fake.streams.received
        if m.category == "linear" and m.message.get("op") == "subscribe"
    ]


async def test_each_perpetual_is_its_own_subscribe_request(
    fake: FakeBybit, stream: LiquidationStream
) -> None:
    assert sorted(subscribes(fake)) == [
        [f"allLiquidation.{s}"] for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    ]
    assert not fake.streams.subscribed("spot")


async def test_liquidations_fill_the_window_and_leave_it_after_an_hour(
    fake: FakeBybit, stream: LiquidationStream
) -> None:
    empty = stream.window("BTCUSDT")
    assert empty is not None and (empty.long_count, empty.short_count) == (0, 0)
    await fake.streams.send_liquidation("BTCUSDT", "Buy", "65000", "0.5")  # a long
    await fake.streams.send_liquidation("BTCUSDT", "Sell", "64000", "2")  # a short
    await fake.streams.send_liquidation("BTCUSDT", "Buy", "64500", "1")

    def btc() -> Any:
        return stream.window("BTCUSDT")

    await eventually(lambda: btc().long_count + btc().short_count == 3, BOUND)
    window = btc()
    assert (window.long_count, window.long_value) == (2, 65_000 * 0.5 + 64_500)
    assert (window.short_count, window.short_value) == (1, 128_000.0)
    assert window.until_ms == NOW
    eth = stream.window("ETHUSDT")
    assert eth is not None and (eth.long_count, eth.short_count) == (0, 0)
    assert stream.window("ETHBTC") is None  # no perpetual, not watched

    fake.set_now(NOW + 30 * 60_000)  # half an hour on: still in
    assert btc().long_count == 2 and btc().window_ms == 30 * 60_000
    fake.set_now((NOW // MINUTE_MS + 60) * MINUTE_MS - 1)  # the last ms of its minute's hour
    assert btc().long_count == 2
    fake.set_now(NOW + HOUR_MS + 1)  # an hour and a bit: its minute has left
    later = btc()
    assert (later.long_count, later.short_count, later.long_value) == (0, 0, 0.0)
    # the window is whole minutes: the current one and the 59 before it
    assert later.window_ms == NOW + HOUR_MS + 1 - window_start_ms(NOW + HOUR_MS + 1)
    assert HOUR_MS - MINUTE_MS < later.window_ms <= HOUR_MS


async def test_bad_liquidations_are_dropped_and_counted(
    fake: FakeBybit, stream: LiquidationStream
) -> None:
    await fake.streams.send_liquidation("ETHUSDT", "Sell", "0", "3")
    await fake.streams.send_liquidation("ETHUSDT", "Sell", "3200", "NaN")
    await fake.streams.send_liquidation("ETHUSDT", "Sideways", "3200", "1")
    await fake.streams.send_liquidation("ETHUSDT", "Sell", "3200", "1.5")
    await eventually(lambda: stream.window("ETHUSDT").short_count == 1, BOUND)  # type: ignore[union-attr]
    await eventually(lambda: stream.dropped == 3, BOUND)
    window = stream.window("ETHUSDT")
    assert window is not None and window.short_value == 4_800.0 and window.long_count == 0


async def test_implausible_liquidations_are_dropped_and_counted_in_data_quality(
    fake: FakeBybit, stream: LiquidationStream
) -> None:
    bad = [
        ("1e308", "1e308"),  # each finite, the product is not
        ("1e13", "1"),  # a price beyond MAX_PRICE
        ("65000", "1e19"),  # a size beyond MAX_VOLUME
        ("-65000", "1"),
        ("65000", "-1"),
        ("65000", "0"),
        ("0", "1"),
        ("NaN", "1"),
        ("65000", "NaN"),
    ]
    for paid, size in bad:
        await fake.streams.send_liquidation("BTCUSDT", "Buy", paid, size)
    await fake.streams.send_liquidation("BTCUSDT", "Buy", "65000", "0.5")
    await eventually(lambda: stream.updates == 1, BOUND)
    await eventually(lambda: stream.dropped == len(bad), BOUND)
    window = stream.window("BTCUSDT")
    assert window is not None
    assert (window.long_count, window.long_value) == (1, 32_500.0)
    assert window.to_dict()["long_value"] == 32_500.0
    assert stream.data_quality.snapshot() == {"BTCUSDT": {"implausible_value": 3}}


async def test_a_flood_keeps_a_bounded_window_with_exact_sums(
    fake: FakeBybit, stream: LiquidationStream
) -> None:
    """20,000 liquidations over 100 minutes of the exchange's clock: at most BUCKETS
    buckets per symbol, and the window holds exactly the last 60 minutes' of them."""
    name, per_minute, minutes = "BTC/USDT:USDT", 200, 100
    largest = 0
    for minute in range(minutes):
        fake.set_now(NOW + minute * MINUTE_MS)
        for _ in range(per_minute // 2):  # a long of 100 and a short of 200 (quote)
            await fake.streams.send_liquidation("BTCUSDT", "Buy", "100", "1")
            await fake.streams.send_liquidation("BTCUSDT", "Sell", "100", "2")
        # ccxt's cache holds 1000 entries: take each minute's before the next
        await soon(lambda m=minute: stream.updates == (m + 1) * per_minute)
        largest = max(largest, len(stream.buckets[name]))
    assert largest <= BUCKETS
    window = stream.window("BTCUSDT")
    assert window is not None and len(stream.buckets[name]) == 60
    half = per_minute // 2
    assert (window.long_count, window.short_count) == (60 * half, 60 * half)
    assert (window.long_value, window.short_value) == (60 * half * 100.0, 60 * half * 200.0)
    assert stream.dropped == 0

    fake.set_now(NOW + minutes * MINUTE_MS)  # one minute on: the oldest minute kept leaves
    later = stream.window("BTCUSDT")
    assert later is not None and later.long_count == 59 * half
    fake.set_now(NOW + (minutes + 59) * MINUTE_MS)  # an hour after the last: all gone
    gone = stream.window("BTCUSDT")
    assert gone is not None and (gone.long_count, gone.short_count) == (0, 0)
    assert (gone.long_value, gone.short_value) == (0.0, 0.0)
    assert len(stream.buckets[name]) == 0


async def soon(condition: Callable[[], bool]) -> None:
    """Waits until ``condition()``, asked every 5 ms (a minute of the flood is read in
    a few ms: ``eventually``'s 50 ms would be most of the test), at most ``BOUND`` s."""
    for _ in range(int(BOUND / 0.005)):
        if condition():
            return
        await asyncio.sleep(0.005)
    raise AssertionError(f"condition not met within {BOUND} s")


# ----- the streaming source adds them to the REST derivatives ----------------------------


@pytest.fixture
async def streaming(fake: FakeBybit) -> AsyncIterator[StreamingSource]:
    market = loopback_source(fake.base_url, timeout_ms=5_000, streaming=True)
    guarded = GuardedSource(market)

    def feed(source: MarketSource, symbols: Any) -> ExchangeStreams:
        return ExchangeStreams(
            market,
            symbols,
            backfill=source.fetch_candles,
            candle_limits={"1m": 5},
            book_depth=5,
            silent_after=30.0,
            clock=lambda: fake.now_ms() / 1000,
        )

    made = StreamingSource(guarded, feed, SYMBOLS)
    await made.start()
    yield made
    await made.close()


async def test_the_streaming_source_adds_the_streamed_liquidations(
    fake: FakeBybit, streaming: StreamingSource
) -> None:
    topics = {f"allLiquidation.{s}" for s in ("BTCUSDT", "ETHUSDT", "SOLUSDT")}
    await eventually(lambda: topics <= fake.streams.subscribed("linear"), BOUND)
    assert "allLiquidation.ETHBTC" not in fake.streams.subscribed()
    await fake.streams.send_liquidation("SOLUSDT", "Buy", "150", "100")

    async def read() -> Any:
        return await fetch_derivatives(streaming, list(SYMBOLS))

    async def arrived() -> bool:
        window = (await read()).by_symbol["SOLUSDT"].liquidations
        return window is not None and window.long_count == 1

    await eventually(arrived, BOUND)
    got = await read()
    assert got.by_symbol["SOLUSDT"].liquidations.long_value == 15_000.0  # type: ignore[union-attr]
    assert got.by_symbol["SOLUSDT"].funding_rate == float(fake.derivatives.funding_rate("SOLUSDT"))
    btc = got.by_symbol["BTCUSDT"].liquidations
    assert btc is not None and btc.long_count == btc.short_count == 0
    assert got.unavailable == {"ETHBTC": "no linear perpetual listed for ETHBTC on bybit"}
    status = streaming.status()["feed"]["liquidations"]
    assert status["updates"] == 1 and status["errors"] == 0


BTC_TOPIC = {"allLiquidation.BTCUSDT"}


class ReaderClock:
    """The reader's liveness clock (monotonic seconds), moved by hand."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@contextlib.asynccontextmanager
async def watching_btc(
    exchange: Any, fake: FakeBybit, *, good_first: bool = True, **bounds: Any
) -> AsyncIterator[LiquidationStream]:
    """A started reader of BTC's perpetual alone (``bounds``: its ``Batching``; an
    unsubscribe waits 1 s and a failed watch is retried within 0.2 s unless they say),
    subscribed, and with one good liquidation taken when ``good_first``; stopped on exit."""
    bounds = {"retry": (0.05, 0.2), "unwatch_timeout": 1.0} | bounds
    batching = Batching(topics_per_request=1, **bounds)
    stream = LiquidationStream(
        exchange, {"BTC/USDT:USDT": "BTCUSDT"}, batching=batching, clock_ms=fake.now_ms
    )
    stream.start()
    try:
        await eventually(lambda: fake.streams.subscribed("linear") == BTC_TOPIC, BOUND)
        if good_first:
            await fake.streams.send_liquidation("BTCUSDT", "Buy", "65000", "0.1")
            await eventually(lambda: stream.updates == 1, BOUND)
        yield stream
    finally:
        await stream.stop()


async def send_bad(fake: FakeBybit, stream: LiquidationStream, dropped: int) -> None:
    """One liquidation priced 0 (dropped and counted), taken as the ``dropped``-th."""
    await fake.streams.send_liquidation("BTCUSDT", "Buy", "0", "0.1")
    await eventually(lambda: stream.dropped == dropped, BOUND)


async def renewed(fake: FakeBybit, times: int) -> None:
    """Until BTC's topic has been subscribed again ``times`` times and holds: a
    liquidation sent between a renewal's unsubscribe and its subscribe is lost, as on
    the exchange (no snapshot brings it back), so a test sends none before this."""

    def subscribes() -> int:
        return sum(
            1
            for received in fake.streams.received
            if received.message.get("op") == "subscribe"
            and "allLiquidation.BTCUSDT" in received.message.get("args", ())
        )

    await eventually(
        lambda: subscribes() == times + 1 and fake.streams.subscribed("linear") == BTC_TOPIC,
        BOUND,
    )


async def test_a_delivering_symbol_is_live_and_keeps_its_window_past_the_stall_bound(
    exchange: Any, fake: FakeBybit
) -> None:
    """Liquidations keep coming for longer than the stall bound (the reader's clock moved
    by hand, 8 s between two): the symbol is heard at each one, so it is never silent,
    not subscribed again, and its window keeps every liquidation (a renewal empties it)."""
    clock = ReaderClock()
    bounds = {"silent_after": 10.0, "resubscribe_after": 10.0, "clock": clock}
    async with watching_btc(exchange, fake, good_first=False, **bounds) as stream:
        for sent in range(1, 7):  # 48 s of the reader's clock: past the 10 s bounds
            await fake.streams.send_liquidation("BTCUSDT", "Buy", "65000", "0.1")
            await eventually(lambda n=sent: stream.updates == n, BOUND)
            assert stream.silent_symbols() == []
            clock.now += 8.0
        assert stream.resubscribes == 0
        window = stream.window("BTCUSDT")
        assert window is not None and window.long_count == 6


async def test_a_symbol_bringing_only_bad_liquidations_is_renewed_without_a_hole(
    exchange: Any, fake: FakeBybit
) -> None:
    """After one good liquidation only bad ones come (price 0, dropped): the symbol goes
    silent and is subscribed again once the stall bound passes, and that renewal leaves
    its window whole (the good liquidation stays counted)."""
    clock = ReaderClock()
    bounds = {"silent_after": 10.0, "resubscribe_after": 10.0, "clock": clock}
    async with watching_btc(exchange, fake, **bounds) as stream:
        for bad in range(1, 4):
            clock.now += 8.0
            await send_bad(fake, stream, bad)
            if bad == 2:  # 16 s since the good one: renewed after this delivery
                await renewed(fake, times=1)
        await eventually(lambda: stream.resubscribes >= 1, BOUND)
        assert stream.silent_symbols() == ["BTCUSDT"]
        window = stream.window("BTCUSDT")
        assert window is not None and window.long_count == 1


@pytest.mark.parametrize("cut", ["dropped", "reset"])
async def test_a_renewal_cut_short_by_the_connection_is_a_hole(
    exchange: Any, fake: FakeBybit, cut: str
) -> None:
    """A symbol bringing only bad liquidations is subscribed again, and its unsubscribe
    goes unanswered: the connection drops meanwhile, or the reader resets it when the
    wait ends (1 s). That renewal is a hole after all: the window starts anew rather
    than claim an hour the reader did not watch whole."""
    silent = 10.0 if cut == "dropped" else 1.0  # the unsubscribe waits this long (real s)
    clock = ReaderClock()
    bounds = {"silent_after": silent, "resubscribe_after": silent, "clock": clock}
    async with watching_btc(exchange, fake, **bounds) as stream:
        fake.streams.answer_requests = False
        for bad in range(1, 3):  # the second comes after the stall bound: a renewal
            clock.now += 0.8 * silent
            await send_bad(fake, stream, bad)
        await eventually(lambda: stream.resubscribes == 1, BOUND)
        if cut == "dropped":
            held = stream.window("BTCUSDT")
            assert held is not None and held.long_count == 1  # renewing: no hole yet
            assert await fake.streams.drop_all(abrupt=True) == 1
        else:
            await eventually(lambda: stream.resets == 1, BOUND)
        fake.streams.answer_requests = True

        await eventually(lambda: fake.streams.connections_opened == 2, BOUND)
        await eventually(lambda: fake.streams.subscribed("linear") == BTC_TOPIC, BOUND)
        window = stream.window("BTCUSDT")
        assert window is not None and window.long_count == 0


@pytest.mark.parametrize("answered", [True, False])
async def test_a_quiet_symbols_renewal_keeps_its_window_unless_the_reader_resets(
    exchange: Any, fake: FakeBybit, answered: bool
) -> None:
    """Nothing comes for the stall bound (1 s): the symbol is subscribed again. When the
    exchange answers the unsubscribe, the window stays whole (a calm market is no
    hole); when it does not for 1 s, the reader resets the connection and the window
    starts anew."""
    async with watching_btc(exchange, fake, silent_after=1.0, resubscribe_after=1.0) as stream:
        fake.streams.answer_requests = answered
        if answered:
            await eventually(lambda: stream.resubscribes >= 1, BOUND)
        else:
            await eventually(lambda: stream.resets == 1, BOUND)
        fake.streams.answer_requests = True

        await eventually(lambda: fake.streams.subscribed("linear") == BTC_TOPIC, BOUND)
        window = stream.window("BTCUSDT")
        assert window is not None and window.long_count == (1 if answered else 0)
        assert stream.resets == (0 if answered else 1)
