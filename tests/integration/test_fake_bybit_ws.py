"""The fake exchange's Bybit v5 public WebSocket streams, read by the real ccxt.pro.

ccxt.pro.bybit (ccxt 4.5.90) is pointed at the fake through ``urls['api']['ws']['public']
['spot']`` (REST through the other ``urls['api']`` entries), and every test checks what
ccxt made of the fake's messages against the fake's own state. Raw aiohttp clients check
the protocol details ccxt does not expose (acks, refusals, pongs, the linear stream).
Waits are bounded; nothing asserts on wall-clock durations.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import pytest
from ccxt.base.errors import ExchangeError, NetworkError, RequestTimeout

from tests.conftest import eventually
from tests.support.streams import STREAM_SYMBOLS, close_without_tls_linger, pro_exchange
from tools.fake_bybit import FakeBybit
from tools.fake_bybit_ws import ARGS_TOO_MANY, BybitStreams, topics_for

NOW = 1_800_000_000_000 + 30_000  # frozen clock: half-way through a 1 m candle
MINUTE = 60_000
SYMBOLS = STREAM_SYMBOLS
BOUND = 10.0  # seconds: the most any single wait may take on a busy machine

Exchange = Any  # ccxt.pro.bybit has no type stubs
MakeExchange = Callable[..., Exchange]


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS, inactive_symbols=(), now_ms=NOW) as exchange:
        yield exchange


@pytest.fixture
async def make_exchange(fake: FakeBybit) -> AsyncIterator[MakeExchange]:
    """ccxt.pro.bybit instances pointed at the fake (spot); all closed afterwards."""
    made: list[Exchange] = []

    def make(**config: Any) -> Exchange:
        exchange = pro_exchange(fake, **config)
        made.append(exchange)
        return exchange

    yield make
    for exchange in made:
        await exchange.close()


@pytest.fixture
async def exchange(make_exchange: MakeExchange) -> Exchange:
    return make_exchange()


async def watch_while_pushing(
    watch: Callable[[], Awaitable[Any]], push: Callable[[], Awaitable[None]]
) -> Any:
    """Start ``watch()`` and ``push()`` until it returns (a push made before ccxt's
    future exists would be missed, so pushing repeats), bounded."""
    task = asyncio.ensure_future(watch())
    try:
        async with asyncio.timeout(BOUND):
            while not task.done():
                await push()
                await asyncio.wait({task}, timeout=0.1)
        return task.result()
    finally:
        task.cancel()


def subscribe_requests(streams: BybitStreams) -> list[dict[str, Any]]:
    return [r.message for r in streams.received if r.message.get("op") == "subscribe"]


def book_messages(streams: BybitStreams, topic: str) -> list[dict[str, Any]]:
    return [m for m in streams.sent if m.get("topic") == topic]


def floats(levels: list[list[str]]) -> list[list[float]]:
    return [[float(price), float(size)] for price, size in levels]


# ----- tickers ---------------------------------------------------------------------------


async def test_watch_ticker_gets_the_rest_state_and_an_ack(
    fake: FakeBybit, exchange: Exchange
) -> None:
    ticker = await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)

    rest = fake.tickers["BTCUSDT"]
    assert ticker["last"] == float(rest["lastPrice"])
    assert ticker["high"] == float(rest["highPrice24h"])
    assert ticker["timestamp"] == NOW  # the message's ts
    [request] = subscribe_requests(fake.streams)
    assert request["args"] == ["tickers.BTCUSDT"]
    ack = next(m for m in fake.streams.sent if m.get("op") == "subscribe")
    assert ack == {
        "success": True,
        "ret_msg": "",
        "conn_id": ack["conn_id"],
        "req_id": str(request["req_id"]),
        "op": "subscribe",
    }
    assert fake.streams.subscribed("spot") == {"tickers.BTCUSDT"}


async def test_a_price_set_on_the_fake_reaches_watch_ticker_and_rest(
    fake: FakeBybit, exchange: Exchange
) -> None:
    await asyncio.wait_for(exchange.watch_ticker("ETH/USDT"), BOUND)

    ticker = await watch_while_pushing(
        lambda: exchange.watch_ticker("ETH/USDT"),
        lambda: fake.streams.set_price("ETHUSDT", 3456.78),
    )

    assert ticker["last"] == 3456.78
    assert (await exchange.fetch_ticker("ETH/USDT"))["last"] == 3456.78  # REST agrees


async def test_watch_tickers_for_several_symbols_in_one_request(
    fake: FakeBybit, exchange: Exchange
) -> None:
    symbols = ["BTC/USDT", "ETH/USDT", "SOL/USDT"]
    first = await asyncio.wait_for(exchange.watch_tickers(symbols), BOUND)
    assert list(first) == ["BTC/USDT"]  # ccxt returns the ticker that resolved the call
    await eventually(lambda: set(exchange.tickers) == set(symbols), BOUND)

    [request] = subscribe_requests(fake.streams)
    assert request["args"] == topics_for("tickers", ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    for symbol in symbols:
        rest = fake.tickers[symbol.replace("/", "")]
        assert exchange.tickers[symbol]["last"] == float(rest["lastPrice"])


# ----- candles ---------------------------------------------------------------------------


async def test_watch_ohlcv_forming_then_closed_candle(fake: FakeBybit, exchange: Exchange) -> None:
    bucket = NOW // MINUTE * MINUTE
    [forming] = await asyncio.wait_for(exchange.watch_ohlcv("BTC/USDT", "1m"), BOUND)
    row = fake.kline_rows("BTCUSDT", "1", limit=1)[0]
    assert forming == [bucket, *(float(v) for v in row[1:6])]
    first = book_messages(fake.streams, "kline.1.BTCUSDT")[0]
    assert first["data"][0]["confirm"] is False
    assert first["data"][0]["end"] == bucket + MINUTE - 1

    fake.set_now(NOW + MINUTE)  # the candle ends; the next trade opens a new one
    candles = await watch_while_pushing(
        lambda: exchange.watch_ohlcv("BTC/USDT", "1m"),
        lambda: fake.streams.set_price("BTCUSDT", 66_000.0),
    )

    assert candles[0][0] == bucket  # the closed candle resolves the call first
    cache = exchange.ohlcvs["BTC/USDT"]["1m"]
    await eventually(lambda: cache[-1][0] == bucket + MINUTE, BOUND)
    assert cache[-1][4] == 66_000.0
    closed_messages = [
        m["data"][0]
        for m in book_messages(fake.streams, "kline.1.BTCUSDT")
        if m["data"][0]["confirm"]
    ]
    assert closed_messages and closed_messages[0]["start"] == bucket
    stored = {c[0]: c for c in exchange.ohlcvs["BTC/USDT"]["1m"]}
    rest = await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=2)
    assert stored[bucket] == rest[0]  # the closed candle equals REST's
    assert stored[bucket + MINUTE] == rest[1]


# ----- order books -----------------------------------------------------------------------


async def test_order_book_snapshot_then_deltas_with_increasing_ids(
    fake: FakeBybit, exchange: Exchange
) -> None:
    book = await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), BOUND)
    rest = fake.order_books["BTCUSDT"]
    assert book["bids"] == floats(rest["b"][:50])
    assert book["asks"] == floats(rest["a"][:50])

    for price in (64_001.0, 64_002.5, 63_990.0):
        book = await watch_while_pushing(
            lambda: exchange.watch_order_book("BTC/USDT"),
            lambda p=price: fake.streams.set_price("BTCUSDT", p),  # type: ignore[misc]
        )
        best_bid = price - 0.01
        await eventually(lambda b=best_bid: exchange.orderbooks["BTC/USDT"]["bids"][0][0] == b)
    book = exchange.orderbooks["BTC/USDT"]
    rest = fake.order_books["BTCUSDT"]
    assert book["bids"] == floats(rest["b"][:50])
    assert book["asks"] == floats(rest["a"][:50])
    messages = book_messages(fake.streams, "orderbook.50.BTCUSDT")
    assert messages[0]["type"] == "snapshot"
    assert {m["type"] for m in messages[1:]} == {"delta"}
    ids = [m["data"]["u"] for m in messages]
    seqs = [m["data"]["seq"] for m in messages]
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert all(m["cts"] <= m["ts"] for m in messages)


async def test_a_lost_book_update_goes_unnoticed_by_ccxt_until_a_snapshot(
    fake: FakeBybit, exchange: Exchange
) -> None:
    """ccxt 4.5.90's bybit applies every delta without looking at ``u`` or ``seq`` (no
    checksum either): after a lost update its book silently keeps stale levels, and only
    a new snapshot from the exchange repairs it. Gap detection is the caller's job."""
    await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), BOUND)
    fake.streams.skip_update("BTCUSDT")
    await fake.streams.set_price("BTCUSDT", 64_100.0)  # this update is lost

    book = await watch_while_pushing(
        lambda: exchange.watch_order_book("BTC/USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_200.0),
    )

    ids = [m["data"]["u"] for m in book_messages(fake.streams, "orderbook.50.BTCUSDT")]
    assert ids[1] == ids[0] + 2  # the gap, as sent
    rest = fake.order_books["BTCUSDT"]
    assert len(book["bids"]) > 50  # stale levels of the lost update stay
    assert book["bids"] != floats(rest["b"][:50])

    await fake.streams.resnapshot("BTCUSDT")
    repaired = floats(rest["b"][:50])
    await eventually(lambda: exchange.orderbooks["BTC/USDT"]["bids"] == repaired, BOUND)


async def test_resubscribing_is_how_a_caller_gets_a_fresh_book_snapshot(
    fake: FakeBybit, exchange: Exchange
) -> None:
    """Since ccxt does not re-snapshot by itself, a caller that detects a gap can
    unsubscribe and subscribe again: the exchange answers a new subscription with a
    snapshot, and ccxt resets its book on it."""
    await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), BOUND)
    fake.streams.skip_update("BTCUSDT")
    await fake.streams.set_price("BTCUSDT", 64_100.0)

    await asyncio.wait_for(exchange.un_watch_order_book("BTC/USDT"), BOUND)
    book = await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), BOUND)

    rest = fake.order_books["BTCUSDT"]
    assert book["bids"] == floats(rest["b"][:50])
    assert book["asks"] == floats(rest["a"][:50])
    kinds = [m["type"] for m in book_messages(fake.streams, "orderbook.50.BTCUSDT")]
    assert kinds == ["snapshot", "snapshot"]  # the lost delta never went out


# ----- trades and batches ----------------------------------------------------------------


async def test_watch_trades_sees_the_trade_of_a_price_move(
    fake: FakeBybit, exchange: Exchange
) -> None:
    trades = await watch_while_pushing(
        lambda: exchange.watch_trades("SOL/USDT"),
        lambda: fake.streams.set_price("SOL/USDT".replace("/", ""), 151.25),
    )

    assert trades[-1]["price"] == 151.25
    assert trades[-1]["timestamp"] == NOW
    assert trades[-1]["symbol"] == "SOL/USDT"
    assert trades[-1]["side"] in ("buy", "sell")


async def test_send_trade_sends_exactly_the_fields_given(
    fake: FakeBybit, exchange: Exchange
) -> None:
    price = fake.tickers["ETHUSDT"]["lastPrice"]
    trades = await watch_while_pushing(
        lambda: exchange.watch_trades("ETH/USDT"),
        lambda: fake.streams.send_trade("ETHUSDT", price="0", size="-1", side="Sell"),
    )

    assert (trades[-1]["price"], trades[-1]["amount"], trades[-1]["side"]) == (0.0, -1.0, "sell")
    assert fake.tickers["ETHUSDT"]["lastPrice"] == price  # the fake's prices stay
    [message, *_] = [m for m in fake.streams.sent if m.get("topic") == "publicTrade.ETHUSDT"]
    assert message["data"][0]["p"] == "0" and message["data"][0]["S"] == "Sell"


async def test_batch_watches_send_one_subscribe_request_each(
    fake: FakeBybit, exchange: Exchange
) -> None:
    pair = ["BTC/USDT", "ETH/USDT"]
    ids = ["BTCUSDT", "ETHUSDT"]
    await watch_while_pushing(lambda: exchange.watch_trades_for_symbols(pair), fake.streams.tick)
    await asyncio.wait_for(exchange.watch_order_book_for_symbols(pair), BOUND)
    await asyncio.wait_for(
        exchange.watch_ohlcv_for_symbols([[s, "1m"] for s in pair] + [["BTC/USDT", "5m"]]),
        BOUND,
    )

    requests = [r["args"] for r in subscribe_requests(fake.streams)]
    assert requests == [
        topics_for("publicTrade", ids),
        topics_for("orderbook", ids, "50"),
        [*topics_for("kline", ids, "1"), "kline.5.BTCUSDT"],
    ]
    assert len({r.conn_id for r in fake.streams.received}) == 1  # one connection


async def test_un_watch_ticker_unsubscribes(fake: FakeBybit, exchange: Exchange) -> None:
    await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)
    await asyncio.wait_for(exchange.un_watch_ticker("BTC/USDT"), BOUND)

    assert fake.streams.subscribed() == set()
    ack = [m for m in fake.streams.sent if m.get("op") == "unsubscribe"]
    assert ack and ack[0]["success"] is True


# ----- limits and refusals ---------------------------------------------------------------


async def test_ccxt_does_not_split_eleven_topics_and_bybit_refuses_them(
    fake: FakeBybit, exchange: Exchange
) -> None:
    symbols = [f"{s[:-4]}/USDT" for s in SYMBOLS if s.endswith("USDT")]
    assert len(symbols) == 11

    with pytest.raises(ExchangeError, match=ARGS_TOO_MANY):
        await asyncio.wait_for(exchange.watch_tickers(symbols), BOUND)

    [request] = subscribe_requests(fake.streams)
    assert len(request["args"]) == 11  # one request: ccxt leaves the splitting to us
    assert fake.streams.subscribed() == set()


async def raw_request(ws: aiohttp.ClientWebSocketResponse, op: str, **fields: Any) -> dict:
    """Send ``op`` and return the reply to it (data messages in between are skipped)."""
    await ws.send_str(json.dumps({"op": op, **fields}))
    async with asyncio.timeout(BOUND):
        while True:
            reply = json.loads((await ws.receive()).data)
            if "topic" not in reply:
                return dict(reply)


@pytest.fixture
async def raw(fake: FakeBybit) -> AsyncIterator[Callable[[str], Any]]:
    """Open raw WebSocket connections to the fake: ``await raw("spot")``."""
    async with aiohttp.ClientSession() as session:

        async def connect(category: str) -> aiohttp.ClientWebSocketResponse:
            return await session.ws_connect(fake.streams.url(category))

        yield connect


async def test_refusals_as_bybit_sends_them(fake: FakeBybit, raw: Callable[[str], Any]) -> None:
    ws = await raw("spot")
    eleven = topics_for("tickers", SYMBOLS[:11])

    too_many = await raw_request(ws, "subscribe", args=eleven, req_id="a")
    assert too_many["success"] is False
    assert too_many["ret_msg"] == ARGS_TOO_MANY
    assert too_many["req_id"] == "a"
    assert too_many["op"] == "subscribe"
    ten = await raw_request(ws, "subscribe", args=eleven[:10], req_id="b")
    assert ten["success"] is True
    again = await raw_request(ws, "subscribe", args=eleven[:1], req_id="c")
    assert again["success"] is False and "already subscribed" in again["ret_msg"]
    unknown_symbol = await raw_request(ws, "subscribe", args=["tickers.NOPEUSDT"], req_id="d")
    assert unknown_symbol["success"] is False
    assert unknown_symbol["ret_msg"] == "Invalid symbol :[tickers.NOPEUSDT]"
    unknown_topic = await raw_request(ws, "subscribe", args=["candles.BTCUSDT"], req_id="e")
    assert unknown_topic["success"] is False
    assert "handler not found" in unknown_topic["ret_msg"]
    bad_depth = await raw_request(ws, "subscribe", args=["orderbook.7.BTCUSDT"], req_id="f")
    assert bad_depth["success"] is False
    invalid = await raw_request(ws, "fly")
    assert invalid["success"] is False and invalid["ret_msg"] == "error:invalid op"

    fake.streams.max_topics = 11  # the per-connection bound
    over = await raw_request(ws, "subscribe", args=topics_for("publicTrade", SYMBOLS[:2]))
    assert over["success"] is False and "exceed" in over["ret_msg"]
    assert len(fake.streams.subscribed("spot")) == 10
    await ws.close()


async def test_linear_takes_more_args_and_sends_ticker_deltas(
    fake: FakeBybit, raw: Callable[[str], Any]
) -> None:
    ws = await raw("linear")
    ack = await raw_request(ws, "subscribe", args=topics_for("tickers", SYMBOLS[:11]))
    assert ack["success"] is True
    snapshots = [json.loads((await ws.receive()).data) for _ in range(11)]
    assert {m["type"] for m in snapshots} == {"snapshot"}
    btc = next(m for m in snapshots if m["topic"] == "tickers.BTCUSDT")
    assert btc["data"]["markPrice"] == fake.tickers["BTCUSDT"]["lastPrice"]
    assert "bid1Price" in btc["data"]

    await fake.streams.set_price("BTCUSDT", 64_321.0)

    delta = json.loads((await asyncio.wait_for(ws.receive(), BOUND)).data)
    assert delta["type"] == "delta" and delta["topic"] == "tickers.BTCUSDT"
    assert delta["data"]["lastPrice"] == "64321.00"
    assert "volume24h" not in delta["data"]  # only what changed
    spot_only = await raw_request(ws, "subscribe", args=["tickers.ETHBTC"])
    assert spot_only["success"] is False  # no ETHBTC perpetual
    await ws.close()


async def test_ccxt_watches_the_linear_stream(fake: FakeBybit, make_exchange: MakeExchange) -> None:
    """Linear perpetuals (``BTC/USDT:USDT``) go to ``/v5/public/linear``; ccxt merges the
    ticker deltas into the snapshot it holds."""
    options = {"defaultType": "swap", "fetchMarkets": {"types": ["linear"]}}
    exchange = make_exchange(options=options)
    first = await asyncio.wait_for(exchange.watch_ticker("BTC/USDT:USDT"), BOUND)
    rest = fake.tickers["BTCUSDT"]
    assert first["last"] == float(rest["lastPrice"])
    assert first["bid"] == float(rest["bid1Price"])

    ticker = await watch_while_pushing(
        lambda: exchange.watch_ticker("BTC/USDT:USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_999.0),
    )
    book = await asyncio.wait_for(exchange.watch_order_book("BTC/USDT:USDT"), BOUND)

    assert ticker["last"] == 64_999.0
    assert ticker["bid"] == 64_998.99
    assert ticker["baseVolume"] == float(rest["volume24h"])  # kept from the snapshot
    assert book["bids"] == floats(fake.order_books["BTCUSDT"]["b"][:50])
    assert {r.category for r in fake.streams.received} == {"linear"}
    kinds = [m["type"] for m in fake.streams.sent if m.get("topic") == "tickers.BTCUSDT"]
    assert kinds[0] == "snapshot" and "delta" in kinds


# ----- keepalive, drops and silence ------------------------------------------------------


async def test_ping_pong_in_bybit_format(fake: FakeBybit, raw: Callable[[str], Any]) -> None:
    for category in ("spot", "linear"):
        ws = await raw(category)
        pong = await raw_request(ws, "ping", req_id="100001")
        assert pong == {
            "success": True,
            "ret_msg": "pong",
            "conn_id": pong["conn_id"],
            "req_id": "100001",
            "op": "ping",
        }
        await ws.close()


async def test_ccxt_keepalive_pings_and_notices_missing_pongs(
    fake: FakeBybit, make_exchange: MakeExchange
) -> None:
    exchange = make_exchange(streaming={"keepAlive": 100})
    await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)

    def pings() -> int:
        return sum(1 for r in fake.streams.received if r.message.get("op") == "ping")

    await eventually(lambda: pings() >= 3, BOUND)
    assert fake.streams.connections_opened == 1  # pongs keep the connection

    fake.streams.silence(pongs=False)
    with pytest.raises(RequestTimeout, match="ping-pong keepalive"):
        await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)

    fake.streams.resume()
    ticker = await watch_while_pushing(
        lambda: exchange.watch_ticker("BTC/USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_444.0),
    )
    assert ticker["last"] == 64_444.0
    assert fake.streams.connections_opened == 2


@pytest.mark.parametrize("abrupt", [False, True], ids=["close-frame", "cut"])
async def test_drop_then_ccxt_reconnects_on_the_next_watch(
    fake: FakeBybit, exchange: Exchange, abrupt: bool
) -> None:
    await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)
    pending = asyncio.ensure_future(exchange.watch_ticker("BTC/USDT"))
    await eventually(lambda: fake.streams.connections == 1, BOUND)

    assert await fake.streams.drop_all(abrupt=abrupt) == 1

    with pytest.raises(NetworkError):
        await asyncio.wait_for(pending, BOUND)
    ticker = await watch_while_pushing(
        lambda: exchange.watch_ticker("BTC/USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_555.0),
    )
    assert ticker["last"] == 64_555.0
    assert fake.streams.connections_opened == 2
    assert [r["args"] for r in subscribe_requests(fake.streams)] == [["tickers.BTCUSDT"]] * 2


async def test_after_a_drop_only_the_watched_topics_are_subscribed_again(
    fake: FakeBybit, exchange: Exchange
) -> None:
    """ccxt's new connection starts with no subscriptions: each watch call subscribes
    its own topics again, so every stream a caller wants must be watched again."""
    await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)
    await asyncio.wait_for(exchange.watch_order_book("BTC/USDT"), BOUND)
    await fake.streams.drop_all()  # returns once ccxt has answered the close frame

    await watch_while_pushing(
        lambda: exchange.watch_ticker("BTC/USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_888.0),
    )

    assert fake.streams.subscribed() == {"tickers.BTCUSDT"}


async def test_silent_stream_times_out_the_watch_then_resumes(
    fake: FakeBybit, exchange: Exchange
) -> None:
    await asyncio.wait_for(exchange.watch_ticker("BTC/USDT"), BOUND)
    fake.streams.silence()  # data stops; the socket stays open and pongs still flow

    watch = asyncio.ensure_future(exchange.watch_ticker("BTC/USDT"))
    await fake.streams.set_price("BTCUSDT", 64_666.0)
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(watch, 0.5)  # the test's bound on a frozen stream
    assert fake.streams.connections == 1

    fake.streams.resume()
    ticker = await watch_while_pushing(
        lambda: exchange.watch_ticker("BTC/USDT"),
        lambda: fake.streams.set_price("BTCUSDT", 64_777.0),
    )
    assert ticker["last"] == 64_777.0
    assert fake.streams.connections_opened == 1  # the same connection


async def test_forget_drops_subscriptions_without_a_word(
    fake: FakeBybit, raw: Callable[[str], Any]
) -> None:
    ws = await raw("spot")
    ack = await raw_request(ws, "subscribe", args=["tickers.BTCUSDT", "tickers.ETHUSDT"])
    assert ack["success"] is True
    assert fake.streams.forget(["BTCUSDT"]) == 1
    await fake.streams.set_price("BTCUSDT", 64_100.0)
    await fake.streams.set_price("ETHUSDT", 3_100.0)
    prices: list[tuple[str, float]] = []  # until ETH's new price: BTC's never came
    async with asyncio.timeout(BOUND):
        while ("tickers.ETHUSDT", 3_100.0) not in prices:
            data = json.loads((await ws.receive()).data)
            prices.append((data["topic"], float(data["data"]["lastPrice"])))
    assert ("tickers.BTCUSDT", 64_100.0) not in prices
    again = await raw_request(ws, "subscribe", args=["tickers.BTCUSDT"])
    assert again["success"] is True  # not "already subscribed": the server forgot it
    assert fake.streams.forget() == 2
    assert fake.streams.subscribed() == set()


async def test_silence_can_leave_requests_unanswered(
    fake: FakeBybit, raw: Callable[[str], Any]
) -> None:
    ws = await raw("spot")
    fake.streams.silence(requests=False)
    await ws.send_str(json.dumps({"op": "subscribe", "args": ["tickers.BTCUSDT"]}))
    pong = await raw_request(ws, "ping", req_id="7")  # pings still answered, first
    assert pong["ret_msg"] == "pong"
    assert fake.streams.subscribed() == set()  # and the subscribe had no effect
    fake.streams.resume()
    ack = await raw_request(ws, "subscribe", args=["tickers.BTCUSDT"])
    assert ack["success"] is True and fake.streams.subscribed() == {"tickers.BTCUSDT"}


async def test_ticking_moves_every_symbol_several_times(
    fake: FakeBybit, exchange: Exchange
) -> None:
    symbols = ["BTC/USDT", "ETH/USDT"]
    before = {s: float(fake.tickers[s.replace("/", "")]["lastPrice"]) for s in symbols}
    await asyncio.wait_for(exchange.watch_tickers(symbols), BOUND)
    await fake.streams.start_ticking(per_second=20)
    try:
        updates = 0
        async with asyncio.timeout(BOUND):
            while updates < 6:  # six updates, so several ticks went out
                await exchange.watch_tickers(symbols)
                updates += 1
    finally:
        await fake.streams.stop_ticking()

    for symbol in symbols:
        now = float(fake.tickers[symbol.replace("/", "")]["lastPrice"])
        assert now != before[symbol]
        await eventually(lambda s=symbol, n=now: exchange.tickers[s]["last"] == n, BOUND)
