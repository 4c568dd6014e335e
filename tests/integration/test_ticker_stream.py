"""Tickers from the exchange's stream: real ccxt.pro on the loopback fake Bybit's v5
public stream. A price set on the fake reaches ``on_ticker``; more symbols than one
subscribe request may carry are split (none refused); a dropped connection is watched
again; a silent stream stops being live, and is live again when it speaks; a
subscription the exchange forgot is subscribed again, and a connection dead to
everything but pings is reset — every batch on it delivers again."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from app.market.models.ticker import Ticker
from app.market.sources.stream_batches import Batching
from app.market.sources.ticker_stream import TickerStream
from tests.conftest import eventually
from tests.support.streams import (
    STREAM_SYMBOLS,
    ccxt_symbol,
    close_without_tls_linger,
    loaded_pro_exchange,
)
from tools.fake_bybit import FakeBybit

SYMBOLS = (*STREAM_SYMBOLS[:-1], "NEARUSDT")  # twelve USDT pairs
BOUND = 20.0  # seconds: the most any wait may take on a busy machine


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS, inactive_symbols=()) as exchange:
        yield exchange


@pytest.fixture
async def exchange(fake: FakeBybit) -> AsyncIterator[Any]:
    async with loaded_pro_exchange(fake) as made:
        yield made


@contextlib.asynccontextmanager
async def ticker_stream(
    exchange: Any, **bounds: Any
) -> AsyncIterator[tuple[TickerStream, list[Ticker]]]:
    """A started ``TickerStream`` of ``SYMBOLS`` (``bounds``: its ``Batching``) and the
    tickers it heard; stopped on exit."""
    heard: list[Ticker] = []
    symbols = {ccxt_symbol(name): name for name in SYMBOLS}
    watching = TickerStream(exchange, symbols, on_ticker=heard.append, batching=Batching(**bounds))
    watching.start()
    try:
        yield watching, heard
    finally:
        await watching.stop()


@pytest.fixture
async def stream(exchange: Any) -> AsyncIterator[tuple[TickerStream, list[Ticker]]]:
    async with ticker_stream(exchange, silent_after=1.0) as made:
        yield made


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


async def moved_in_every_batch(watching: TickerStream, fake: FakeBybit, bound: float) -> None:
    """Set a new price on the first symbol of each batch until the stream has them all
    (each set is sent at once; a batch not subscribed misses it and the next is tried)."""
    firsts = [watching.symbols[batch[0]] for batch in watching.batches]
    step = 0
    async with asyncio.timeout(bound):
        while True:
            step += 1
            prices = {s: float(fake.tickers[s]["lastPrice"]) + step for s in firsts}
            for symbol, price in prices.items():
                await fake.streams.set_price(symbol, price)
            await asyncio.sleep(0.2)
            if all(watching.latest[s].last == p for s, p in prices.items()):
                return


async def test_a_forgotten_subscription_is_subscribed_again(fake, exchange) -> None:
    async with ticker_stream(exchange, silent_after=1.0, resubscribe_after=1.0) as (watching, _):
        await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
        resubscribes = watching.resubscribes
        assert fake.streams.forget() == len(SYMBOLS)

        await moved_in_every_batch(watching, fake, BOUND + watching.stall_after)

        assert watching.resubscribes >= resubscribes + len(watching.batches)
        assert watching.resets == 0
        assert fake.streams.connections_opened == 1  # the same connection, subscribed anew
        unsubscribed = {
            topic
            for received in fake.streams.received
            if received.message.get("op") == "unsubscribe"
            for topic in received.message["args"]
        }
        assert unsubscribed == {f"tickers.{s}" for s in SYMBOLS}
        assert fake.streams.subscribed() == {f"tickers.{s}" for s in SYMBOLS}


async def test_a_connection_dead_to_requests_is_reset_for_every_batch(fake, exchange) -> None:
    """A batch stalls after 1 s here and an unsubscribe unanswered for 1 s resets the
    connection (an answered one before the silence may too: only what follows counts)."""
    quick = {"silent_after": 1.0, "resubscribe_after": 1.0, "unwatch_timeout": 1.0}
    async with ticker_stream(exchange, **quick) as (watching, _):
        await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
        resets, opened = watching.resets, fake.streams.connections_opened
        fake.streams.silence(requests=False)  # pings answered; nothing else, ever

        await eventually(lambda: watching.resets > resets, BOUND + 3 * watching.stall_after)
        await eventually(lambda: fake.streams.connections_opened > opened, BOUND)
        assert not watching.is_live()
        fake.streams.resume()

        await moved_in_every_batch(watching, fake, BOUND + 3 * watching.stall_after)
        assert watching.is_live()  # every batch delivers again: no batch's task was lost


async def test_a_connection_ccxt_closes_under_the_readers_loses_no_batch(
    stream, fake, exchange
) -> None:
    """ccxt's ``Client.close`` cancels the pending watches: each batch takes that as a
    failure (its task carries on) and watches again on a new connection."""
    watching, _ = stream
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    for client in list(exchange.clients.values()):
        await client.close()

    await moved_in_every_batch(watching, fake, BOUND)
    assert watching.errors >= len(watching.batches)
    assert watching.reconnects >= len(watching.batches)
    assert fake.streams.connections_opened >= 2


async def test_a_symbol_the_exchange_forgot_alone_is_not_live_and_comes_back(stream, fake) -> None:
    """The others keep its batch delivering: the forgotten symbol is judged on its own
    messages, stops being live after the silence bound (REST answers for it) and is
    subscribed again after the stall bound."""
    watching, _ = stream
    await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
    others = [s for s in SYMBOLS if s != "BTCUSDT"]
    ticking = asyncio.create_task(tick_forever(fake, others))
    try:
        await eventually(lambda: "BTCUSDT" not in watching.silent_symbols(), BOUND)
        assert fake.streams.forget(["BTCUSDT"]) == 1
        await eventually(lambda: "BTCUSDT" in watching.silent_symbols(), BOUND)
        batch = next(b for b in watching.batches if "BTC/USDT" in b)
        assert watching.batch_live(batch)  # its batch delivers on the others' messages
        assert "ETHUSDT" not in watching.silent_symbols()
        await eventually(lambda: watching.resubscribes >= 1, BOUND + watching.stall_after)
        price = float(fake.tickers["BTCUSDT"]["lastPrice"]) + 1
        await fake.streams.set_price("BTCUSDT", price)
        await eventually(lambda: watching.latest["BTCUSDT"].last == price, BOUND)
        assert "BTCUSDT" not in watching.silent_symbols()
        assert fake.streams.connections_opened == 1
    finally:
        ticking.cancel()


async def tick_forever(fake: FakeBybit, symbols: list[str]) -> None:
    while True:
        await fake.streams.tick(symbols)
        await asyncio.sleep(0.2)


async def test_a_refused_topic_is_isolated_and_the_rest_of_its_batch_delivers(
    fake, exchange
) -> None:
    """The exchange refuses a subscribe request as a whole: the batch is cut in two
    until the refused topic is alone, and every other symbol streams."""
    fake.delist("SOLUSDT")  # its topic is refused ("Invalid symbol")
    symbols = {ccxt_symbol(name): name for name in SYMBOLS}
    watching = TickerStream(exchange, symbols, batching=Batching(retry=(0.05, 0.2)))
    watching.start()
    try:
        served = set(SYMBOLS) - {"SOLUSDT"}
        await eventually(lambda: served <= set(watching.latest), BOUND)
        assert watching.splits >= 1
        assert ("SOL/USDT",) in watching.batches  # alone, still retried
        assert sorted(k for b in watching.batches for k in b) == sorted(symbols)
    finally:
        await watching.stop()


async def test_a_reconnect_storm_does_not_reset_the_back_off(fake, exchange) -> None:
    """Each connection answers the subscription once and closes: every batch delivers
    once per connection, and its back-off still grows to the longest wait. (A watch left
    hanging by a closing connection is given up after 3 s, and its unanswered
    unsubscribe after 1 s, well within the test's bounds.)"""
    symbols = {ccxt_symbol(name): name for name in SYMBOLS}
    storm = Batching(retry=(0.02, 0.16), silent_after=1.0, unwatch_timeout=1.0)
    watching = TickerStream(exchange, symbols, batching=storm)
    fake.streams.close_after_subscribe = True
    watching.start()
    try:
        # deliveries between the failures (a connection that answers, then drops): the
        # back-off grows through them all the same
        await eventually(lambda: watching.deliveries >= 2 * len(watching.batches), BOUND)
        # A batch whose watch a closing connection left hanging errs only when that watch
        # is given up (3 s, then 1 s for its unsubscribe): on a busy machine four such
        # rounds take longer than BOUND.
        await eventually(lambda: watching.errors >= 4 * len(watching.batches), 4 * BOUND)
        await eventually(
            lambda: all(watching.backoff(b) == 0.16 for b in watching.batches), 4 * BOUND
        )
    finally:
        await watching.stop()


class HeldTickerStream(TickerStream):
    """A reader that holds each delivery until ``gate`` is open and for ``pause``
    seconds more (a slow delivery, as a candle backfill is): a connection closing
    meanwhile has no watch of the batch to fail. ``holding``: deliveries held now."""

    def __init__(self, *args: Any, pause: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.pause = pause
        self.holding = 0

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        await super()._deliver(batch, recovered)
        if self.gate.is_set() and not self.pause:
            return  # no yield: what arrives next waits for the next watch, as usual
        self.holding += 1
        try:
            await self.gate.wait()
            await asyncio.sleep(self.pause)
        finally:
            self.holding -= 1


def held_stream(exchange: Any, **bounds: Any) -> HeldTickerStream:
    symbols = {ccxt_symbol(name): name for name in SYMBOLS}
    pause = bounds.pop("pause", 0.0)
    return HeldTickerStream(exchange, symbols, batching=Batching(**bounds), pause=pause)


async def test_a_connection_dropped_during_a_delivery_fails_that_batch_too(fake, exchange) -> None:
    """One batch is taking a delivery when the connection drops: the other's pending
    watch fails at once; ccxt only forgets the connection, and the batch in delivery
    finds it gone on its next turn: a failure and a reconnect like the other's."""
    watching = held_stream(exchange, silent_after=1.0, retry=(0.05, 0.4))
    watching.start()
    try:
        await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
        assert (watching.errors, watching.reconnects) == (0, 0)
        watching.gate.clear()
        await fake.streams.set_price("BTCUSDT", float(fake.tickers["BTCUSDT"]["lastPrice"]) + 1)
        await eventually(lambda: watching.holding == 1, BOUND)

        assert await fake.streams.drop_all(abrupt=True) == 1
        # the other batch failed and dialled anew: a new connection under the same URL
        await eventually(lambda: fake.streams.connections_opened == 2, BOUND)
        assert watching.errors == 1
        watching.gate.set()

        await eventually(lambda: watching.errors == len(watching.batches), BOUND)
        await moved_in_every_batch(watching, fake, BOUND)
        assert watching.reconnects == len(watching.batches)
        assert fake.streams.connections_opened == 2
    finally:
        await watching.stop()


async def test_a_gateway_hanging_up_between_watches_is_dialled_with_back_off(
    fake, exchange
) -> None:
    """Each connection answers the subscription once and closes while the batches are
    still taking the delivery, so no watch fails: each batch finds its connection gone
    on its next turn, counts the failure and backs off to the longest wait instead of
    dialling again at once."""
    watching = held_stream(exchange, silent_after=1.0, retry=(0.02, 0.16), pause=0.2)
    fake.streams.close_after_subscribe = True
    watching.start()
    try:
        await eventually(lambda: watching.errors >= 4 * len(watching.batches), BOUND)
        await eventually(lambda: all(watching.backoff(b) == 0.16 for b in watching.batches), BOUND)
    finally:
        await watching.stop()
    # one connection per delivery at most: every dial answered once, then failed
    assert fake.streams.connections_opened <= watching.deliveries + len(watching.batches)


async def test_a_reset_of_the_readers_own_making_fails_no_batch(fake, exchange) -> None:
    """One topic is forgotten while the others tick and its unsubscribe goes unanswered,
    so the reader resets its connection: counted in ``resets``, and no batch counts
    that reset as a failure (the batch that asked for it delivers again at once)."""
    quick = {"silent_after": 1.0, "resubscribe_after": 1.0, "unwatch_timeout": 1.0}
    async with ticker_stream(exchange, **quick) as (watching, _):
        await eventually(lambda: len(watching.latest) == len(SYMBOLS), BOUND)
        ticking = asyncio.create_task(tick_forever(fake, [s for s in SYMBOLS if s != "BTCUSDT"]))
        try:
            fake.streams.forget(["BTCUSDT"])
            fake.streams.answer_requests = False  # the stalled topic's unsubscribe waits
            await eventually(lambda: watching.resets == 1, BOUND + watching.stall_after)
            fake.streams.answer_requests = True
            await moved_in_every_batch(watching, fake, BOUND)
        finally:
            ticking.cancel()
        assert watching.resets == 1
        assert fake.streams.connections_opened == 2
        batch = next(b for b in watching.batches if "BTC/USDT" in b)
        others = [b for b in watching.batches if b != batch]
        # the other batch's pending watch failed with the reset: its error is the only one
        assert watching.errors <= len(others)
