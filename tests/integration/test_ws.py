"""The real-time endpoint end to end: hypercorn on loopback, ``websockets`` clients."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from app.backends.connection import connect_redis
from app.backends.keyspace import Keyspace
from app.realtime import Broadcaster, WsLimits, register_ws
from app.resilience.redis_breaker import redis_guard
from tests.support.ws_server import serve_app

_tokens = itertools.count(1)


@contextlib.asynccontextmanager
async def running(
    limits: WsLimits | None = None, **options: Any
) -> AsyncIterator[tuple[Broadcaster, str]]:
    broadcaster = Broadcaster(
        options.pop("replica_id", "r1"), limits=limits or WsLimits(), **options
    )
    app = Quart(__name__)
    register_ws(app, broadcaster)
    async with serve_app(app) as base:
        assert await broadcaster.wait_ready(5)
        try:
            yield broadcaster, base + "/ws"
        finally:
            await broadcaster.close()


def client(url: str, token: str | None = None, **options: Any) -> Any:
    headers = {"Authorization": f"Bearer {token or f't{next(_tokens)}'}"}
    return connect(
        url,
        additional_headers=headers,
        compression=None,
        ping_interval=None,
        open_timeout=5,
        close_timeout=2,
        **options,
    )


async def recv(ws: ClientConnection, seconds: float = 5) -> dict:
    async with asyncio.timeout(seconds):
        return orjson.loads(await ws.recv())


async def send(ws: ClientConnection, message: Any) -> None:
    await ws.send(message if isinstance(message, str | bytes) else orjson.dumps(message).decode())


async def subscribe(ws: ClientConnection, channels: list[str], symbols=None) -> list[dict]:
    message: dict[str, Any] = {"type": "subscribe", "channels": channels}
    if symbols is not None:
        message["symbols"] = symbols
    await send(ws, message)
    snapshots = [await recv(ws) for _ in channels]
    assert [s["type"] for s in snapshots] == ["snapshot"] * len(channels), snapshots
    return snapshots


async def close_of(ws: ClientConnection, seconds: float = 10) -> tuple[int | None, str | None]:
    """Reads (and discards) until the server closes; the close code and reason."""
    async with asyncio.timeout(seconds):
        with contextlib.suppress(ConnectionClosed):
            while True:
                await ws.recv()
    return ws.close_code, ws.close_reason


async def eventually(condition, seconds: float = 5) -> None:
    async with asyncio.timeout(seconds):
        while not condition():  # noqa: ASYNC110 (polling a plain condition)
            await asyncio.sleep(0.01)


async def test_clients_get_only_their_channels_and_symbols() -> None:
    async with running() as (broadcaster, url), client(url) as btc, client(url) as conf:
        await subscribe(btc, ["market"], ["BTC/USDT"])
        await subscribe(conf, ["confluence"])
        await broadcaster.publish("market", "ETHUSDT", {"v": 1}, 1)
        await broadcaster.publish("signals", "BTCUSDT", {"v": 2}, 1)
        await broadcaster.publish("confluence", "BTCUSDT", {"v": 3}, 1)
        await broadcaster.publish("market", "BTCUSDT", {"v": 4}, 1)
        first = await recv(btc)
        assert (first["channel"], first["symbol"], first["data"]) == ("market", "BTCUSDT", {"v": 4})
        got = await recv(conf)
        assert (got["channel"], got["symbol"], got["data"]) == ("confluence", "BTCUSDT", {"v": 3})
        await send(btc, {"type": "ping"})
        await send(conf, {"type": "ping"})
        assert (await recv(btc))["type"] == "pong"  # nothing else was queued before it
        assert (await recv(conf))["type"] == "pong"


async def test_snapshot_has_the_latest_value_of_each_subscribed_symbol() -> None:
    async with running() as (broadcaster, url), client(url) as ws:
        await broadcaster.publish("market", "BTCUSDT", {"v": 1}, 100)
        await broadcaster.publish("market", "BTCUSDT", {"v": 2}, 200)
        await broadcaster.publish("market", "ETHUSDT", {"v": 3}, 300)
        await broadcaster.publish("market", "SOLUSDT", {"v": 4}, 400)
        await broadcaster.publish("beta", "BTCUSDT", {"v": 5}, 500)
        (snap,) = await subscribe(ws, ["market"], ["BTCUSDT", "ETHUSDT", "XRPUSDT"])
        assert snap["items"] == [
            {"symbol": "BTCUSDT", "seq": 2, "generated_at": 200, "data": {"v": 2}},
            {"symbol": "ETHUSDT", "seq": 3, "generated_at": 300, "data": {"v": 3}},
        ]
        (snap,) = await subscribe(ws, ["market"])  # the whole channel: only SOL is new
        assert {i["symbol"] for i in snap["items"]} == {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
        await send(ws, {"type": "resync", "channels": ["market"]})
        assert len((await recv(ws))["items"]) == 3


async def test_sequence_numbers_grow_by_one_per_channel() -> None:
    async with running() as (broadcaster, url), client(url) as ws:
        await subscribe(ws, ["market", "beta"])
        for i in range(10):
            await broadcaster.publish("market", f"S{i % 3}USDT", {"i": i}, i)
            await broadcaster.publish("beta", None, {"i": i}, i)
            await asyncio.sleep(0.005)
        seqs: dict[str, list[int]] = {"market": [], "beta": []}
        for _ in range(20):
            message = await recv(ws)
            seqs[message["channel"]].append(message["seq"])
        assert seqs == {"market": list(range(1, 11)), "beta": list(range(1, 11))}


def small_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    return sock


async def stalled_client(url: str) -> Any:
    """A client that reads nothing until told: tiny receive buffer, 1-frame queue."""
    sock = small_socket()
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
    return client(url, sock=sock, max_queue=1)


async def test_updates_are_written_straight_to_clients_that_keep_up_in_order() -> None:
    async with running() as (broadcaster, url), client(url) as a, client(url) as b:
        for ws in (a, b):
            await subscribe(ws, ["market"])
        await eventually(  # both snapshots sent: nothing waits before the updates
            lambda: all(not c._sending and c.queued == 0 for c in broadcaster.connections)
        )
        for i in range(50):
            await broadcaster.publish("market", f"S{i:02d}USDT", {"i": i}, i)
        for ws in (a, b):
            assert [(await recv(ws))["data"]["i"] for _ in range(50)] == list(range(50))
        assert broadcaster.stats.direct["market"] >= 2  # at least the first update, to both
        assert broadcaster.stats.sent["market"] == 100


async def test_a_slow_client_gets_the_latest_value_per_symbol() -> None:
    limits = WsLimits(send_timeout=10)
    async with running(limits) as (broadcaster, url), await stalled_client(url) as ws:
        symbols = ["AAAUSDT", "BBBUSDT", "CCCUSDT"]
        await subscribe(ws, ["market"], symbols)
        pad = "x" * 8192
        for i in range(200):
            for symbol in symbols:
                await broadcaster.publish("market", symbol, {"i": i, "pad": pad}, i)
            await asyncio.sleep(0)
        last = dict.fromkeys(symbols, -1)
        received = 0
        while min(last.values()) < 199:
            message = await recv(ws)
            assert message["data"]["i"] > last[message["symbol"]]  # in order, never older
            last[message["symbol"]] = message["data"]["i"]
            received += 1
        assert received < 600
        assert broadcaster.stats.coalesced["market"] == 600 - received


async def test_a_stalled_client_is_closed_1013_while_others_keep_up() -> None:
    limits = WsLimits(max_queue=8, send_timeout=0.5)
    async with contextlib.AsyncExitStack() as stack:
        broadcaster, url = await stack.enter_async_context(running(limits))
        stalled = await stack.enter_async_context(await stalled_client(url))
        fast = [await stack.enter_async_context(client(url)) for _ in range(2)]
        for ws in [stalled, *fast]:
            await subscribe(ws, ["market"])
        received: list[list[int]] = [[], []]

        async def consume(ws: ClientConnection, into: list[int]) -> None:
            async for raw in ws:
                into.append(orjson.loads(raw)["seq"])

        consumers = [
            asyncio.create_task(consume(ws, r)) for ws, r in zip(fast, received, strict=True)
        ]
        pad = "x" * 8192
        published = 0
        started = time.monotonic()
        while published < 300 or not broadcaster.stats.disconnects:
            assert time.monotonic() - started < 20, "the stalled client was never closed"
            data = {"pad": pad}
            await broadcaster.publish("market", f"S{published % 30:02d}USDT", data, published)
            published += 1
            await asyncio.sleep(0.002)
        await eventually(lambda: all(len(r) == published for r in received))
        for consumer in consumers:
            consumer.cancel()
        assert dict(broadcaster.stats.disconnects).keys() <= {"queue_full", "send_timeout"}
        assert sum(broadcaster.stats.disconnects.values()) == 1  # the stalled one only
        # The others kept up with the publisher, whatever the machine's speed: every update
        # arrived, in order, none coalesced — so each was sent before the next one of its
        # symbol was published (30 publishes later) — and neither was closed as too slow.
        for r in received:
            assert r == list(range(1, published + 1))
        assert await close_of(stalled) == (1013, broadcaster_reason(broadcaster))


def broadcaster_reason(broadcaster: Broadcaster) -> str:
    cause = next(iter(broadcaster.stats.disconnects))
    limits = broadcaster.limits
    if cause == "queue_full":
        return f"too slow: more than {limits.max_queue} updates waiting"
    return f"too slow: a send took over {limits.send_timeout:g} s"


async def test_a_client_that_never_pongs_is_closed_1011() -> None:
    # pong_timeout: long enough for the answering client's pongs on a busy machine
    limits = WsLimits(heartbeat_seconds=0.2, pong_timeout=2.0)
    async with running(limits) as (broadcaster, url), client(url) as silent, client(url) as alive:

        async def answer() -> None:
            async for raw in alive:
                message = orjson.loads(raw)
                if message["type"] == "heartbeat":
                    await send(alive, {"type": "pong", "nonce": message["nonce"]})

        responder = asyncio.create_task(answer())
        code, reason = await close_of(silent, 30)  # the bound is only against a hang
        assert (code, reason) == (1011, "no pong within 2 s")
        await asyncio.sleep(0.5)
        assert not responder.done() and len(broadcaster.connections) == 1
        assert broadcaster.stats.disconnects["heartbeat_timeout"] == 1
        responder.cancel()


async def test_connection_limits_close_with_a_reason() -> None:
    limits = WsLimits(max_connections=3, max_connections_per_client=2)
    async with running(limits) as (broadcaster, url), contextlib.AsyncExitStack() as stack:
        for token in ("a", "a"):
            await stack.enter_async_context(client(url, token))
        third = await stack.enter_async_context(client(url, "a"))
        assert await close_of(third) == (1008, "too many connections from this client")
        await stack.enter_async_context(client(url, "b"))
        fourth = await stack.enter_async_context(client(url, "c"))
        assert await close_of(fourth) == (1013, "server full")
        assert broadcaster.stats.disconnects == {
            "rejected_per_client": 1,
            "rejected_server_full": 1,
        }
        assert len(broadcaster.connections) == 3
    await eventually(lambda: not broadcaster.connections)


async def test_invalid_messages_get_error_codes() -> None:
    limits = WsLimits(max_subscriptions=2, max_message_bytes=256, max_bad_messages=100)
    known = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
    async with running(limits, known_symbols=lambda: known) as (_, url), client(url) as ws:
        cases = [
            ("{bad", "bad_json"),
            ("[1]", "bad_message"),
            ({"type": "dance"}, "unknown_type"),
            ({"type": "subscribe", "channels": ["weather"]}, "unknown_channel"),
            (
                {"type": "subscribe", "channels": ["market"], "symbols": ["DOGEUSDT"]},
                "unknown_symbol",
            ),
            (
                {"type": "subscribe", "channels": ["market"], "symbols": sorted(known)},
                "too_many_subscriptions",
            ),
            ({"type": "resync", "channels": ["beta"]}, "not_subscribed"),
            ({"type": "ping", "pad": "x" * 300}, "too_large"),
        ]
        for message, code in cases:
            await send(ws, message)
            reply = await recv(ws)
            assert (reply["type"], reply["code"]) == ("error", code), (message, reply)
        await subscribe(ws, ["market"], ["btcusdt", "ETH-USDT"])
        await send(ws, "x" * 70_000)  # above hypercorn's websocket_max_message_size
        assert (await close_of(ws))[0] == 1009


async def test_repeated_abuse_closes_1008() -> None:
    async with running() as (broadcaster, url), client(url) as ws:
        for _ in range(5):
            await send(ws, "not json")
        assert await close_of(ws) == (1008, "too many invalid messages")
        await eventually(lambda: broadcaster.stats.disconnects["abuse"] == 1)


async def test_two_replicas_share_updates_through_redis_exactly_once(redis) -> None:
    patient = 5.0  # not a test of Redis timing out (the kill below is refused at once)
    redis_clients = [connect_redis(f"redis://{redis.address}/0", patient) for _ in range(2)]
    try:
        async with contextlib.AsyncExitStack() as stack:
            replicas = []
            for i, redis_client in enumerate(redis_clients):
                guard = redis_guard(timeout_seconds=patient)
                replicas.append(
                    await stack.enter_async_context(
                        running(
                            replica_id=f"r{i}",
                            redis=redis_client,
                            guard=guard,
                            keyspace=Keyspace("ws-test"),
                        )
                    )
                )
            (one, url1), (two, url2) = replicas
            ws1 = await stack.enter_async_context(client(url1))
            ws2 = await stack.enter_async_context(client(url2))
            for ws in (ws1, ws2):
                await subscribe(ws, ["market", "alerts"])
            assert await one.publish("market", "BTCUSDT", {"v": 1}, 10) == 1
            assert await two.publish("market", "ETHUSDT", {"v": 2}, 20) == 2
            assert await one.publish_alert({"symbol": "BTCUSDT", "kind": "spike"}, 30) == 1
            assert await two.publish("market", "BTCUSDT", {"v": 3}, 40) == 3
            for ws in (ws1, ws2):
                got = [await recv(ws) for _ in range(4)]
                assert [(m["type"], m["seq"], m["data"].get("v")) for m in got] == [
                    ("update", 1, 1),
                    ("update", 2, 2),
                    ("alert", 1, None),
                    ("update", 3, 3),
                ]
                await send(ws, {"type": "ping"})
                assert (await recv(ws))["type"] == "pong"  # nothing twice before it
            async with client(url2) as late:  # replica two's snapshot has replica one's data
                (snap,) = await subscribe(late, ["market"], ["BTCUSDT", "ETHUSDT"])
                assert [(i["symbol"], i["seq"]) for i in snap["items"]] == [
                    ("BTCUSDT", 3),
                    ("ETHUSDT", 2),
                ]
            redis.kill()  # Redis down: this replica's clients still get updates
            assert await one.publish("market", "SOLUSDT", {"v": 4}, 50) == 4
            message = await recv(ws1)
            assert (message["symbol"], message["seq"]) == ("SOLUSDT", 4)
            assert one.stats.publish_fallbacks == 1
    finally:
        for redis_client in redis_clients:
            await redis_client.aclose()
