"""The service on the exchange's streams, end to end: real ccxt.pro against the loopback
fake Bybit's v5 public stream, the embedded service served by hypercorn, a WebSocket
client of the service. A price set on the exchange reaches the client without a REST
ticker call; a dropped stream is watched again; a silent one falls back to REST polling
(the price still moves, from REST) and the streams take over again when they speak;
``VIRTUOSO_STREAMS=off`` opens no stream at all."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import numpy as np
import pytest
import pytest_asyncio
import websockets

from app.main.embedded import create_app
from app.market.models.timeframes import TIMEFRAME_SECONDS
from tests.conftest import eventually, exchange_settings, make_settings
from tests.support.streams import close_without_tls_linger
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

pytestmark = pytest.mark.integration

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"
BOUND = 30.0  # seconds: the most any wait may take on a busy machine


def streaming_settings(fake: FakeBybit, **environ: str) -> Any:
    host_port = fake.base_url.removeprefix("http://")
    streaming = {
        "VIRTUOSO_STREAMS": "on",
        "VIRTUOSO_EXCHANGE_WS_URL": f"ws://{host_port}",
        "VIRTUOSO_STREAM_SILENCE_SECONDS": "1",
        "VIRTUOSO_REFRESH_SECONDS": "1",
    }
    return exchange_settings(fake.base_url, SYMBOLS, **(streaming | environ))


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS.split(",")) as exchange:
        yield exchange


class Client:
    """A /ws client subscribed to the market channel, keeping the newest price seen."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.prices: dict[str, float] = {}
        self.updates: list[dict] = []

    async def read(self) -> None:
        async for text in self.ws:
            message = json.loads(text)
            if message["type"] == "heartbeat":
                await self.ws.send(json.dumps({"type": "pong", "nonce": message["nonce"]}))
            elif message["type"] == "update" and message["channel"] == "market":
                self.updates.append(message)
                if message["data"] and message["data"].get("price") is not None:
                    self.prices[message["symbol"]] = message["data"]["price"]
            elif message["type"] == "snapshot" and message["channel"] == "market":
                for item in message["items"]:
                    if item["data"] and item["data"].get("price") is not None:
                        self.prices[item["symbol"]] = item["data"]["price"]


@contextlib.asynccontextmanager
async def market_client(base: str) -> AsyncIterator[Client]:
    async with websockets.connect(f"{base}/ws", origin=base.replace("ws", "http")) as ws:
        subscribe = {"type": "subscribe", "channels": ["market"], "symbols": SYMBOLS.split(",")}
        await ws.send(json.dumps(subscribe))
        client = Client(ws)
        reader = asyncio.create_task(client.read())
        try:
            yield client
        finally:
            reader.cancel()


@contextlib.asynccontextmanager
async def streaming_service(
    fake: FakeBybit, moving: str, **environ: str
) -> AsyncIterator[tuple[Any, str, Client]]:
    """The service on ``fake``'s streams (``environ``: more settings), served, warm and
    streaming, with a /ws client that has every symbol's price: (the app, its ws:// base,
    the client). The symbol ``moving`` ticks all along, as a live market does (the fake
    sends only on a change, and the streams' silence bound is 1 s here unless
    ``environ`` says otherwise); the test's own symbols stay put."""
    app = create_app(streaming_settings(fake, **environ))
    source = app.extensions["virtuoso"].pipeline.source
    ticking = asyncio.create_task(tick_forever(fake, [moving]))
    try:
        async with serve_app(app) as base:
            await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
            await eventually(source.streaming, BOUND)
            async with market_client(base) as client:
                await eventually(lambda: len(client.prices) == 3, BOUND)
                yield app, base, client
    finally:
        ticking.cancel()


def ticker_calls(fake: FakeBybit) -> int:
    return sum(1 for r in fake.requests if r.path.endswith("/market/tickers"))


async def test_a_price_set_on_the_exchange_reaches_a_websocket_client_without_rest(
    fake: FakeBybit,
) -> None:
    # A silence bound of 5 s: the fake's ticks (every 0.2 s) can be held up past 1 s on
    # a busy machine, and a symbol quiet that long is read from REST — not this test.
    silence = {"VIRTUOSO_STREAM_SILENCE_SECONDS": "5"}
    async with streaming_service(fake, "ETHUSDT", **silence) as (app, base, client):
        source = app.extensions["virtuoso"].pipeline.source
        # a market that moves (ETH, SOL tick; BTC's price is sent again unchanged), as
        # a live stream does: no symbol's silence bound is reached, so once every
        # symbol streams again no REST call is needed
        ticking = asyncio.create_task(tick_forever(fake, ["ETHUSDT", "SOLUSDT"]))
        speaking = asyncio.create_task(repeat_forever(fake, "BTCUSDT"))
        await eventually(lambda: not feed_status(app)["tickers"]["silent"], BOUND)
        started = refreshes(app)  # a refresh begun while a symbol was quiet asked REST
        await eventually(lambda: refreshes(app) >= started + 2, BOUND)
        rest_before = ticker_calls(fake)
        refreshed = refreshes(app)
        for price in (45_678.5, 45_700.0, 45_650.25):
            await fake.streams.set_price("BTCUSDT", price)
            await eventually(lambda p=price: client.prices.get("BTCUSDT") == p, BOUND)
        # the update carries the exchange's event time and when it was published
        last = [u for u in client.updates if u["symbol"] == "BTCUSDT"][-1]
        assert 0 < last["generated_at"] <= last["published_at"] * 1000 + 1
        # refreshes go on (every second) but ask REST for no ticker
        await eventually(lambda: refreshes(app) >= refreshed + 2, BOUND)
        assert ticker_calls(fake) == rest_before
        assert source.status()["mode"] == "streaming"
        # the polled dashboard follows the stream too (views rebuilt from ticks)
        await eventually(lambda: dashboard_price(app) == 45_650.25, BOUND)
        # operators see it: metrics and the collector's status in /health
        http = base.replace("ws://", "http://")
        await eventually(lambda: metric_is(http, "virtuoso_stream_live", 1.0), BOUND)
        reads = await metric(http, 'virtuoso_market_reads_total{by="feed"}')
        assert (reads or 0) >= 3  # the three tickers of a refresh, at least
        aged = 'virtuoso_ws_data_age_seconds_count{channel="market"}'
        assert (await metric(http, aged) or 0) >= 3  # each fanned-out price told its age
        async with aiohttp.ClientSession() as session, session.get(f"{http}/health") as reply:
            health = await reply.json()
        assert "streaming" in json.dumps(health), health
        ticking.cancel()
        speaking.cancel()


async def repeat_forever(fake: FakeBybit, symbol: str) -> None:
    """Send ``symbol``'s current price again and again (a stream that speaks, unmoved)."""
    while True:
        await fake.streams.set_price(symbol, float(fake.tickers[symbol]["lastPrice"]))
        await asyncio.sleep(0.2)


async def metric(http: str, name: str) -> float | None:
    """The value of the sample ``name`` (with its labels) in the service's /metrics."""
    async with aiohttp.ClientSession() as session, session.get(f"{http}/metrics") as reply:
        text = await reply.text()
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[-1])
    return None


async def tick_forever(fake: FakeBybit, symbols: list[str]) -> None:
    while True:
        await fake.streams.tick(symbols)
        await asyncio.sleep(0.2)


def refreshes(app: Any) -> int:
    return app.extensions["virtuoso"].pipeline.status.refreshes.get("ok", 0)


async def metric_is(http: str, name: str, value: float) -> bool:
    return await metric(http, name) == value


async def metric_at_least(http: str, name: str, value: float) -> bool:
    return (await metric(http, name) or 0) >= value


def dashboard_price(app: Any) -> float | None:
    latest = app.extensions["virtuoso"].pipeline.latest
    ticker = None if latest is None else latest.tickers.get("BTCUSDT")
    return None if ticker is None else ticker.last


async def test_a_dropped_stream_is_watched_again(fake: FakeBybit) -> None:
    async with streaming_service(fake, "SOLUSDT") as (app, _, client):
        source = app.extensions["virtuoso"].pipeline.source
        opened = fake.streams.connections_opened
        await fake.streams.drop_all(abrupt=True)
        await eventually(lambda: fake.streams.connections_opened > opened, BOUND)
        await fake.streams.set_price("ETHUSDT", 2_345.5)
        await eventually(lambda: client.prices.get("ETHUSDT") == 2_345.5, BOUND)
        await eventually(source.streaming, BOUND)


async def test_a_silent_stream_falls_back_to_rest_and_streams_take_over_again(
    fake: FakeBybit,
) -> None:
    async with streaming_service(fake, "ETHUSDT") as (app, base, client):
        source = app.extensions["virtuoso"].pipeline.source
        fake.streams.silence(pongs=True)  # connected and answering pings: ccxt is happy
        rest_before = ticker_calls(fake)
        await eventually(lambda: not source.streaming(), BOUND)
        # a price the stream does not send arrives through REST polling
        await fake.streams.set_price("SOLUSDT", 150.5)
        await eventually(lambda: client.prices.get("SOLUSDT") == 150.5, BOUND)
        assert ticker_calls(fake) > rest_before
        assert source.fallbacks >= 1
        http = base.replace("ws://", "http://")
        await eventually(lambda: metric_is(http, "virtuoso_stream_live", 0.0), BOUND)
        fake.streams.resume()
        await fake.streams.set_price("SOLUSDT", 151.5)  # the stream speaks again
        await eventually(source.streaming, BOUND)
        await eventually(lambda: client.prices.get("SOLUSDT") == 151.5, BOUND)
        calls = ticker_calls(fake)
        await fake.streams.set_price("SOLUSDT", 152.0)
        await eventually(lambda: client.prices.get("SOLUSDT") == 152.0, BOUND)
        assert source.status()["mode"] == "streaming"
        assert ticker_calls(fake) - calls <= 1  # at most a refresh already under way


async def test_a_forgotten_subscription_is_subscribed_again_and_streams_take_over(
    fake: FakeBybit,
) -> None:
    """The exchange drops every subscription without a word (the connection stays up
    and answers pings): REST stands in while the streams are silent, then the stalled
    batches are subscribed again and the streams carry the prices once more."""
    async with streaming_service(fake, "ETHUSDT") as (app, base, client):
        source = app.extensions["virtuoso"].pipeline.source
        opened = fake.streams.connections_opened
        fake.streams.forget()
        await eventually(lambda: not source.streaming(), BOUND)
        await eventually(source.streaming, BOUND)  # subscribed again (3 s stall bound)
        await fake.streams.set_price("BTCUSDT", 46_111.0)
        await eventually(lambda: client.prices.get("BTCUSDT") == 46_111.0, BOUND)
        assert fake.streams.connections_opened == opened  # the same connections
        http = base.replace("ws://", "http://")
        resubscribed = 'virtuoso_stream_events_total{event="resubscribes",kind="tickers"}'
        assert feed_status(app)["tickers"]["resubscribes"] >= 1
        await eventually(lambda: metric_at_least(http, resubscribed, 1.0), BOUND)  # next report


async def test_streams_off_polls_rest_and_opens_no_stream(fake: FakeBybit) -> None:
    app = create_app(streaming_settings(fake, VIRTUOSO_STREAMS="off"))
    async with serve_app(app):
        await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
        calls = ticker_calls(fake)
        await eventually(lambda: ticker_calls(fake) > calls, BOUND)  # polled each refresh
        assert fake.streams.connections_opened == 0
        assert not hasattr(app.extensions["virtuoso"].pipeline.source, "next_ticks")


def fake_best_bid(fake: FakeBybit, symbol: str) -> float:
    return float(fake.order_books[symbol]["b"][0][0])


def served_best_bid(app: Any, symbol: str) -> float | None:
    latest = app.extensions["virtuoso"].pipeline.latest
    book = None if latest is None else latest.books.get(symbol)
    return None if book is None else float(book.bids[0, 0])


def feed_status(app: Any) -> dict:
    return app.extensions["virtuoso"].pipeline.source.status()["feed"]


async def test_a_lost_book_update_resnapshots_and_the_served_book_follows_the_exchange(
    fake: FakeBybit,
) -> None:
    app = create_app(streaming_settings(fake))
    async with app.test_app():
        await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
        ticking = asyncio.create_task(tick_forever(fake, ["ETHUSDT"]))  # a live market
        await eventually(lambda: feed_status(app)["books"]["live"], BOUND)
        fake.streams.skip_update("BTCUSDT")
        await fake.streams.set_price("BTCUSDT", 61_000.0)  # this book update is lost
        await fake.streams.set_price("BTCUSDT", 61_500.0)  # the next one shows the gap
        await eventually(lambda: feed_status(app)["books"]["resnapshots"] >= 1, BOUND)
        assert feed_status(app)["books"]["gaps"] >= 1
        # the refreshes serve the re-snapshotted book: the exchange's, not a stale one
        await eventually(
            lambda: served_best_bid(app, "BTCUSDT") == fake_best_bid(fake, "BTCUSDT"), BOUND
        )
        ticking.cancel()


async def test_a_dropped_stream_backfills_candles_with_no_gap(fake: FakeBybit) -> None:
    app = create_app(streaming_settings(fake))
    async with app.test_app():
        await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
        await eventually(lambda: feed_status(app)["candles"]["live"], BOUND)
        backfills = feed_status(app)["candles"]["backfills"]
        await fake.streams.drop_all(abrupt=True)
        # a 1m candle closes while the stream is down (a minute passes: no more, or the
        # exchange's times would be ahead of ours): what closed unseen comes from REST
        # (a reconnect within the same candle would need none)
        fake.set_now(fake.now_ms() + 60_000)
        ticking = asyncio.create_task(tick_forever(fake, SYMBOLS.split(",")))
        try:
            await eventually(lambda: feed_status(app)["candles"]["backfills"] > backfills, BOUND)
            source = app.extensions["virtuoso"].pipeline.source
            for timeframe in ("1m", "5m"):
                series = await source.fetch_candles("BTCUSDT", timeframe, 100)
                steps = set(np.diff(series.timestamp_ms).tolist())
                assert steps == {TIMEFRAME_SECONDS[timeframe] * 1000}, (timeframe, steps)
            # answered by the stream (backfilled), not by a REST call of this read
            reads = source.answered["feed"]
            await source.fetch_candles("BTCUSDT", "1m", 100)
            assert source.answered["feed"] == reads + 1
        finally:
            ticking.cancel()


async def test_the_simulated_market_streams_its_ticks_between_refreshes() -> None:
    """The embedded default: prices move several times a second on a /ws client while
    the refresh comes every 10 s."""
    app = create_app(
        make_settings(
            VIRTUOSO_REFRESH_SECONDS="10", VIRTUOSO_SYMBOLS=SYMBOLS, VIRTUOSO_STREAMS="on"
        )
    )
    async with serve_app(app) as base:
        await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
        async with market_client(base) as client:
            await eventually(lambda: len(client.prices) == 3, BOUND)
            await eventually(lambda: len({u["data"]["price"] for u in btc(client)}) >= 4, BOUND)
            assert refreshes(app) <= 2  # the moves came from the ticks, not from refreshes
            stamps = [u["generated_at"] for u in btc(client)]
            assert stamps == sorted(stamps)  # never a step back
            sent = [u["published_at"] for u in btc(client)]
            gaps = [later - earlier for earlier, later in itertools.pairwise(sent)]
            assert min(gaps) >= 0.2  # at most 4 a second per (channel, symbol), some slack
        # /health says how old the newest data is: a tick's, not the last refresh's (older
        # than the bound by then)
        status = app.extensions["virtuoso"].pipeline.status
        bound_ms = 2_000
        await eventually(
            lambda: time.time() * 1000 - (status.last_success_ms or 0) > bound_ms, BOUND
        )
        http = base.replace("ws://", "http://")
        assert await health_age_ms(http, under=bound_ms)


async def health_age_ms(http: str, *, under: int) -> bool:
    async with aiohttp.ClientSession() as session, session.get(f"{http}/health") as reply:
        age = (await reply.json())["pipeline"]["data_age_ms"]
    return age is not None and 0 <= age < under


def btc(client: Client) -> list[dict]:
    return [u for u in client.updates if u["symbol"] == "BTCUSDT" and u["data"]]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def trading_app(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Any]:
    """One streaming app on its own fake for the tests of unreadable frames: each
    counts from what the app had read before it (its frames do not stop the reading,
    which is what they prove)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        close_without_tls_linger(monkeypatch)
        async with FakeBybit(symbols=SYMBOLS.split(",")) as fake:
            data = str(tmp_path_factory.mktemp("trading"))
            app = create_app(streaming_settings(fake, VIRTUOSO_DATA_DIR=data))
            async with app.test_app():
                await eventually(lambda: app.extensions["virtuoso"].warmed, BOUND)
                yield app, fake


async def read_on_after(app: Any, fake: FakeBybit) -> int:
    """A trade sent and read (the stream is up); the feed's trade updates then."""
    before = feed_status(app)["trades"]["updates"]
    await fake.streams.send_trade("BTCUSDT", price="60000", size="0.5")
    await eventually(lambda: feed_status(app)["trades"]["updates"] > before, BOUND)
    return feed_status(app)["trades"]["updates"]


@pytest.mark.asyncio(loop_scope="module")
async def test_a_message_ccxt_cannot_read_is_dropped_and_the_connection_reads_on(
    trading_app: tuple[Any, FakeBybit],
) -> None:
    """A trade with a NaN size makes ccxt raise in its message callback, which would end
    the connection's reading (socket open, silent ~50 s until ccxt's keepalive): it is
    dropped and counted, and the next message is read at once."""
    app, fake = trading_app
    before = await read_on_after(app, fake)
    unreadable = feed_status(app)["unreadable"]
    await fake.streams.send_trade("BTCUSDT", price="60000", size="NaN")
    await eventually(lambda: feed_status(app)["unreadable"] > unreadable, BOUND)
    await fake.streams.send_trade("BTCUSDT", price="60010", size="0.25")
    await eventually(lambda: feed_status(app)["trades"]["updates"] > before, 10)


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize(
    "frame",
    [b"\x00\xff\xfe binary", "{not json", b'{"topic": "publicTrade.BTCUSDT", "data": 7}'],
    ids=["not-utf8", "not-json", "wrong-shape"],
)
async def test_a_frame_ccxt_cannot_decode_is_dropped_and_the_connection_reads_on(
    trading_app: tuple[Any, FakeBybit], frame: bytes | str
) -> None:
    """A binary frame that is not UTF-8 fails in ccxt's decoding, before its message
    callback: dropped and counted the same way, and the next trade is read at once;
    text that is not JSON, or JSON of the wrong shape, is passed over by ccxt itself."""
    app, fake = trading_app
    before = await read_on_after(app, fake)
    unreadable = feed_status(app)["unreadable"]
    for conn in list(fake.streams._conns):  # raw frames: what no Bybit control sends
        if isinstance(frame, bytes):
            await conn.ws.send_bytes(frame)
        else:
            await conn.ws.send_str(frame)
    await fake.streams.send_trade("BTCUSDT", price="60010", size="0.25")
    await eventually(lambda: feed_status(app)["trades"]["updates"] > before, 10)
    if isinstance(frame, bytes) and not frame.startswith(b"{"):  # not UTF-8: dropped
        assert feed_status(app)["unreadable"] > unreadable
