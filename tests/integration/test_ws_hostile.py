"""Hostile WebSocket clients: every per-connection queue bounded in count and bytes,
snapshot replies coalesced, client messages and handshakes rate-limited, foreign
origins refused, malformed frames answered with a close frame. The broadcaster and its
connections directly (fast, with hypothesis), then hypercorn on loopback with real
``websockets`` clients and hand-made frames."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import struct
import zlib
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from quart import Quart
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from app.realtime import Broadcaster, WsLimits, protocol, register_ws
from app.realtime.connection import Connection
from app.realtime.origin import OriginPolicy, parse_origin
from app.resilience.rate_limit import RateLimiter, RateLimits
from tests.integration.test_ws import (
    client,
    close_of,
    eventually,
    recv,
    send,
    small_socket,
    subscribe,
)
from tests.support.ws_server import serve_app

CHANNELS = list(protocol.CHANNELS)
SUB_ALL = orjson.dumps({"type": "subscribe", "channels": CHANNELS})
UNSUB_ALL = orjson.dumps({"type": "unsubscribe", "channels": CHANNELS})
RESYNC_ALL = orjson.dumps({"type": "resync", "channels": CHANNELS})
PING = b'{"type":"ping"}'
UNLIMITED_MESSAGES = {"message_rate": 1e6, "message_burst": 1_000_000}


class NullSocket:
    """A socket that is never sent to (the queues are inspected instead)."""

    async def send(self, text: str) -> None:  # pragma: no cover - never awaited here
        raise AssertionError("not sent in these tests")


def deliver(b: Broadcaster, channel: str, symbol: str | None, data: Any, seq: int) -> None:
    """What ``publish`` does without Redis, synchronously."""
    head, tail = protocol.update_parts(channel, symbol, seq, data, 1.0)
    b.broker.deliver(head + str(seq) + tail, 1.0)


def connect_now(b: Broadcaster, client_id: str = "c") -> Connection:
    return asyncio.run(b.connect(NullSocket(), client_id))


def queued_texts(conn: Connection) -> list[str]:
    return [t for t, _, _ in conn._replies.values()] + [
        t for t, _, _ in [*conn._alerts, *conn._updates.values()]
    ]


def assert_within_bounds(conn: Connection) -> None:
    limits = conn.limits
    assert len(conn._replies) <= limits.max_queued_replies
    assert len(conn._alerts) <= limits.max_queued_alerts
    assert len(conn._updates) <= limits.max_queue
    assert conn.queued_bytes == sum(len(t) for t in queued_texts(conn))  # the accounting
    assert conn.queued_bytes <= limits.max_queued_bytes


# -- the broadcaster and its connections ------------------------------------------------


def test_subscribe_unsubscribe_loop_keeps_one_snapshot_per_channel() -> None:
    b = Broadcaster("r1", limits=WsLimits(**UNLIMITED_MESSAGES))
    for i, channel in enumerate(CHANNELS):
        for s in range(25):
            deliver(b, channel, f"S{s:02d}USDT", {"pad": "x" * 500, "i": i}, s + 1)
    conn = connect_now(b)
    for _ in range(2000):
        b.handle_message(conn, SUB_ALL)
        b.handle_message(conn, UNSUB_ALL)
    b.handle_message(conn, SUB_ALL)
    assert not conn.closed.is_set()
    assert len(conn._replies) == len(CHANNELS)  # one snapshot per channel, the latest
    assert_within_bounds(conn)
    assert b.stats.coalesced["control"] == len(CHANNELS) * 2000  # every later one replaced
    snapshots = [orjson.loads(t) for t in queued_texts(conn)]
    assert [s["channel"] for s in snapshots] == CHANNELS
    assert all(len(s["items"]) == 25 for s in snapshots)


def test_resync_and_ping_loops_coalesce() -> None:
    b = Broadcaster("r1", limits=WsLimits(**UNLIMITED_MESSAGES))
    deliver(b, "market", "BTCUSDT", {"v": 1}, 1)
    conn = connect_now(b)
    b.handle_message(conn, SUB_ALL)
    for _ in range(1000):
        b.handle_message(conn, RESYNC_ALL)
        b.handle_message(conn, PING)
    assert len(conn._replies) == len(CHANNELS) + 1  # the snapshots and one pong
    assert_within_bounds(conn)
    assert not conn.closed.is_set()


def test_whole_channel_snapshot_is_serialized_once_per_version() -> None:
    b = Broadcaster("r1")
    deliver(b, "market", "BTCUSDT", {"v": 1}, 1)
    one, two = connect_now(b, "a"), connect_now(b, "b")
    sub = orjson.dumps({"type": "subscribe", "channels": ["market"]})
    b.handle_message(one, sub)
    b.handle_message(two, sub)
    (first,), (second,) = queued_texts(one), queued_texts(two)
    assert first is second  # the same str object, not an equal copy
    deliver(b, "market", "ETHUSDT", {"v": 2}, 2)  # a new version of the channel
    one._next(), two._next()  # the snapshots went out; the updates are queued now
    b.handle_message(one, orjson.dumps({"type": "resync", "channels": ["market"]}))
    fresh = one._replies[("snapshot", "market")][0]
    assert fresh is not first
    assert [i["symbol"] for i in orjson.loads(fresh)["items"]] == ["BTCUSDT", "ETHUSDT"]


def test_a_subset_snapshot_reuses_the_serialized_items() -> None:
    b = Broadcaster("r1")
    deliver(b, "market", "BTCUSDT", {"v": 1}, 1)
    deliver(b, "market", "ETHUSDT", {"v": 2}, 2)
    conn = connect_now(b)
    b.handle_message(conn, b'{"type":"subscribe","channels":["market"],"symbols":["ETHUSDT"]}')
    (text,) = queued_texts(conn)
    assert orjson.loads(text)["items"] == [
        {"symbol": "ETHUSDT", "seq": 2, "generated_at": 2, "data": {"v": 2}}
    ]
    assert set(b.hub._items["market"]) == {"ETHUSDT"}  # only what was asked was serialized


def test_messages_over_the_rate_get_rate_limited_then_close_1008() -> None:
    limits = WsLimits(message_rate=1.0, message_burst=20, max_bad_messages=5)
    b = Broadcaster("r1", limits=limits)
    conn = connect_now(b)
    for _ in range(20):  # the burst: answered
        b.handle_message(conn, PING)
    assert [orjson.loads(t)["type"] for t in queued_texts(conn)] == ["pong"]
    for _ in range(4):
        b.handle_message(conn, PING)
    errors = [orjson.loads(t) for t in queued_texts(conn)][1:]
    assert [e["code"] for e in errors] == ["rate_limited"] * 4
    assert not conn.closed.is_set()
    b.handle_message(conn, b'{"type":"pong","nonce":1}')  # any type counts
    assert conn.closed.is_set() and (conn.close_code, conn.close_cause) == (1008, "abuse")
    assert_within_bounds(conn)


def test_the_byte_bound_closes_1013_before_it_is_passed() -> None:
    limits = WsLimits(max_queued_bytes=50_000, max_queue=1000)
    b = Broadcaster("r1", limits=limits)
    conn = connect_now(b)
    b.handle_message(conn, b'{"type":"subscribe","channels":["market","alerts"]}')
    conn._next(), conn._next()  # the two snapshots went out
    for i in range(100):
        deliver(b, "market", f"S{i:03d}USDT", {"pad": "x" * 1000}, i + 1)
        assert_within_bounds(conn)
    assert conn.closed.is_set() and conn.close_code == 1013
    assert (conn.close_cause, conn.close_reason) == (
        "bytes_full",
        "too slow: more than 50000 bytes waiting",
    )


def test_alerts_count_towards_the_byte_bound_too() -> None:
    b = Broadcaster("r1", limits=WsLimits(max_queued_bytes=20_000))
    conn = connect_now(b)
    b.handle_message(conn, b'{"type":"subscribe","channels":["alerts"]}')
    for i in range(50):
        deliver(b, "alerts", "BTCUSDT", {"n": i, "pad": "y" * 1000}, i + 1)
        assert_within_bounds(conn)
    assert conn.close_cause == "bytes_full"


def test_the_reply_count_bound_closes_1013() -> None:
    limits = WsLimits(max_queued_replies=4, max_bad_messages=1000, **UNLIMITED_MESSAGES)
    b = Broadcaster("r1", limits=limits)
    conn = connect_now(b)
    for _ in range(10):
        b.handle_message(conn, b"not json")  # errors are never coalesced
        assert_within_bounds(conn)
    assert (conn.close_code, conn.close_cause) == (1013, "replies_full")


def test_the_update_count_bound_replaces_in_place_and_counts() -> None:
    b = Broadcaster("r1", limits=WsLimits(max_queue=3))
    conn = connect_now(b)
    b.handle_message(conn, b'{"type":"subscribe","channels":["market"]}')
    conn._next()
    for seq in range(1, 500):
        deliver(b, "market", ("AAAUSDT", "BBBUSDT", "CCCUSDT")[seq % 3], {"s": seq}, seq)
        assert_within_bounds(conn)
    assert not conn.closed.is_set() and len(conn._updates) == 3


def test_discarding_at_close_zeroes_the_accounting() -> None:
    b = Broadcaster("r1", limits=WsLimits(**UNLIMITED_MESSAGES))
    deliver(b, "market", "BTCUSDT", {"v": 1}, 1)
    conn = connect_now(b)
    b.handle_message(conn, SUB_ALL)
    deliver(b, "market", "BTCUSDT", {"v": 2}, 2)
    assert conn.queued_bytes > 0
    b.release(conn)
    assert conn.queued == 0 and conn.queued_bytes == 0


def test_handshake_buckets_are_bounded_per_client() -> None:
    limits = WsLimits(handshake_rate=0.001, handshake_burst=3, max_handshake_clients=500)
    b = Broadcaster("r1", limits=limits)

    async def run() -> None:
        assert [await b.admit_handshake("ip:1") for _ in range(3)] == [None] * 3
        refused = await b.admit_handshake("ip:1")
        assert refused is not None and refused.retry_after_seconds >= 1
        assert await b.admit_handshake("ip:2") is None  # another client
        for i in range(5000):  # a flood of addresses: the state stays bounded
            await b.admit_handshake(f"ip:10.0.{i // 250}.{i % 250}")
            assert len(b.admission._handshakes) <= 500

    asyncio.run(run())
    assert b.stats.disconnects["rejected_handshake_rate"] == 1


def test_rate_limit_file_sets_the_websocket_limits() -> None:
    limits = RateLimits.model_validate(
        {"websocket": {"handshake_rate": 2, "handshake_burst": 7, "message_burst": 9}}
    )
    b = Broadcaster("r1", rate_limiter=RateLimiter(limits))
    assert (b.limits.handshake_rate, b.limits.handshake_burst) == (2, 7)
    assert (b.limits.message_rate, b.limits.message_burst) == (5, 9)
    off = RateLimiter(limits.model_copy(update={"enabled": False}))
    assert Broadcaster("r1", rate_limiter=off).limits.handshake_burst == 0  # unlimited


# -- property-based: arbitrary frames never crash and never pass a bound -------------------

json_text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)  # no surrogates
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(json_text, inner),
    max_leaves=20,
)
messages = st.fixed_dictionaries(
    {"type": st.sampled_from([*protocol.CLIENT_TYPES, "other"])},
    optional={
        "channels": st.lists(st.sampled_from([*CHANNELS, "weather"]), max_size=8) | json_values,
        "symbols": st.lists(
            st.sampled_from(["BTCUSDT", "eth/usdt", "SOL-USDT", "DOGEUSDT", "", "x" * 50]),
            max_size=10,
        )
        | json_values,
        "nonce": json_values,
    },
)
frames = st.one_of(
    messages.map(lambda m: orjson.dumps(m).decode()),
    messages.map(orjson.dumps),
    json_values.map(lambda v: orjson.dumps(v).decode()),
    st.binary(max_size=300),
    st.text(max_size=300),
)
operations = st.lists(
    st.one_of(
        frames.map(lambda f: ("frame", f)),
        st.just(("frame", None)),
        st.tuples(
            st.just("publish"),
            st.sampled_from(CHANNELS),
            st.sampled_from([None, "BTCUSDT", "ETHUSDT", "SOLUSDT"]),
            st.integers(0, 3000),
        ),
        st.tuples(st.just("send"), st.integers(1, 5)),
    ),
    max_size=60,
)
FUZZ_LIMITS = WsLimits(
    max_queue=4,
    max_queued_alerts=6,
    max_queued_replies=5,
    max_queued_bytes=8000,
    max_bad_messages=20,
    max_subscriptions=6,
    message_burst=40,
)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(ops=operations)
def test_arbitrary_frames_never_raise_nor_pass_a_bound(ops: list[tuple]) -> None:
    b = Broadcaster("r1", limits=FUZZ_LIMITS, known_symbols=lambda: {"BTCUSDT", "ETHUSDT"})
    conn = connect_now(b)
    seq = 0
    for op in ops:
        if op[0] == "frame":
            b.handle_message(conn, op[1])
        elif op[0] == "publish":
            seq += 1
            deliver(b, op[1], op[2], {"pad": "z" * op[3]}, seq)
        else:
            for _ in range(op[1]):
                conn._next()
        assert_within_bounds(conn)
        if conn.closed.is_set():
            assert conn.close_code in (1008, 1013)
    b.release(conn)
    assert b.connections == set() and conn.queued_bytes == 0
    assert all(not members for index in b.hub._index.values() for members in index.values())


# -- origins ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        (None, True),  # not a browser
        ("http://dash.test:8003", True),  # the page's own origin
        ("HTTP://DASH.TEST:8003", True),  # host names and schemes are case-insensitive
        ("http://dash.test:8004", False),  # another port is another origin
        ("https://dash.test:8003", False),  # another scheme
        ("http://evil.test:8003", False),
        ("null", False),  # sandboxed frames, file: pages
        ("http://dash.test:8003/", False),  # not an origin: a path
        ("http://user@dash.test:8003", False),  # user info
        ("ws://dash.test:8003", False),  # not a page's scheme
        ("http://dash.test:8003, http://evil.test", False),
        ("http://dash.test:99999", False),
        ("", False),
        ("https://partner.test", True),  # configured (default port 443 left out)
        ("https://partner.test:443", True),  # ... or written
        ("http://partner.test", False),  # configured for https only
    ],
)
def test_origin_policy_spellings(origin: str | None, allowed: bool) -> None:
    policy = OriginPolicy(["https://partner.test"])
    headers = {"Host": "dash.test:8003"} | ({} if origin is None else {"Origin": origin})
    assert (policy.refusal(headers, "ws") is None) is allowed


def test_origin_policy_default_ports_ipv6_and_forwarded_headers() -> None:
    policy = OriginPolicy()
    assert policy.refusal({"Host": "dash.test", "Origin": "http://dash.test:80"}, "ws") is None
    assert policy.refusal({"Host": "dash.test", "Origin": "https://dash.test"}, "wss") is None
    assert policy.refusal({"Host": "[::1]:8003", "Origin": "http://[::1]:8003"}, "ws") is None
    assert policy.refusal({"Origin": "http://dash.test"}, "ws") is not None  # no Host
    behind = {"Host": "dash.test", "Origin": "https://dash.test", "X-Forwarded-Proto": "https"}
    assert policy.refusal(behind, "ws") is not None  # the header of an untrusted client
    trusting = OriginPolicy(trust_forwarded=True)
    assert trusting.refusal(behind, "ws") is None
    assert trusting.refusal(behind | {"X-Forwarded-Proto": "http"}, "ws") is not None
    moved = {"Host": "app:8003", "X-Forwarded-Host": "dash.test:8080"}  # never read
    assert trusting.refusal(moved | {"Origin": "http://dash.test:8080"}, "ws") is not None
    with pytest.raises(ValueError, match="not origins"):
        OriginPolicy(["dash.test"])
    assert parse_origin("https://Dash.Test") == ("https", "dash.test", 443)


# -- over a real socket ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def served(
    limits: WsLimits | None = None, **options: Any
) -> AsyncIterator[tuple[Broadcaster, str]]:
    """Like ``tests.integration.test_ws.running``, with ``register_ws`` options."""
    route = {k: options.pop(k) for k in ("allowed_origins", "origins") if k in options}
    broadcaster = Broadcaster("r1", limits=limits or WsLimits(), **options)
    app = Quart(__name__)
    register_ws(app, broadcaster, **route)
    async with serve_app(app) as base:
        try:
            yield broadcaster, base + "/ws"
        finally:
            await broadcaster.close()


async def watch_bounds(broadcaster: Broadcaster, stop: asyncio.Event) -> dict[str, int]:
    """The largest queue seen on any connection while the test runs (server side)."""
    seen = {"queued": 0, "bytes": 0, "replies": 0}
    while not stop.is_set():
        for conn in list(broadcaster.connections):
            assert_within_bounds(conn)
            seen["queued"] = max(seen["queued"], conn.queued)
            seen["bytes"] = max(seen["bytes"], conn.queued_bytes)
            seen["replies"] = max(seen["replies"], len(conn._replies))
        await asyncio.sleep(0.002)
    return seen


async def publish_until(broadcaster: Broadcaster, stop: asyncio.Event, pad: int = 300) -> None:
    i = 0
    while not stop.is_set():
        i += 1
        await broadcaster.publish("market", f"S{i % 20:02d}USDT", {"i": i, "pad": "p" * pad}, i)
        await asyncio.sleep(0.005)


async def good_updates(ws: ClientConnection, count: int) -> int:
    """Reads until ``count`` updates arrived (bounded by the caller's timeout)."""
    got = 0
    while got < count:
        message = await recv(ws, 10)
        if message["type"] == "update":
            got += 1
    return got


async def test_a_flooding_client_is_rate_limited_and_closed_while_others_get_updates() -> None:
    async with served() as (broadcaster, url), client(url) as good, client(url) as bad:
        await subscribe(good, ["market"])
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_bounds(broadcaster, stop))
        publisher = asyncio.create_task(publish_until(broadcaster, stop))
        errors: list[str] = []

        async def read_bad() -> None:
            with contextlib.suppress(ConnectionClosed):
                async for raw in bad:
                    message = orjson.loads(raw)
                    if message["type"] == "error":
                        errors.append(message["code"])

        reader = asyncio.create_task(read_bad())
        with contextlib.suppress(ConnectionClosed):
            for _ in range(5000):  # bounded: the server closes it long before
                await bad.send(UNSUB_ALL.decode())
                await bad.send(SUB_ALL.decode())
        async with asyncio.timeout(10):
            await reader
        assert (bad.close_code, bad.close_reason) == (1008, "too many invalid messages")
        assert await good_updates(good, 20) == 20
        stop.set()
        seen = await watcher
        await publisher
        assert set(errors) <= {"rate_limited"} and len(errors) <= 5
        assert seen["replies"] <= len(CHANNELS) + broadcaster.limits.max_bad_messages
        await eventually(lambda: broadcaster.stats.disconnects["abuse"] == 1)


@pytest.mark.parametrize("loop", ["subscribe", "resync", "ping"])
async def test_request_loops_stay_bounded_without_a_message_limit(loop: str) -> None:
    limits = WsLimits(**UNLIMITED_MESSAGES)
    async with served(limits) as (broadcaster, url), client(url) as good, client(url) as bad:
        await subscribe(good, ["market"])
        await subscribe(bad, CHANNELS)
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_bounds(broadcaster, stop))
        publisher = asyncio.create_task(publish_until(broadcaster, stop))
        frames = {
            "subscribe": [UNSUB_ALL, SUB_ALL],
            "resync": [RESYNC_ALL],
            "ping": [PING],
        }[loop]
        with contextlib.suppress(ConnectionClosed):  # (closed 1013 if it reads too slowly)
            for _ in range(1500):  # sent without reading: nothing piles up on the server
                for data in frames:
                    await bad.send(data.decode())
            await send(bad, {"type": "ping"})
        assert await good_updates(good, 20) == 20
        stop.set()
        seen = await watcher
        await publisher
        assert seen["replies"] <= len(CHANNELS) + 1
        assert seen["bytes"] <= limits.max_queued_bytes
        with contextlib.suppress(ConnectionClosed):  # it still works (or was closed 1013)
            for _ in range(100):
                if (await recv(bad))["type"] == "pong":
                    break
        assert broadcaster.stats.disconnects.keys() <= {"send_timeout", "bytes_full"}


async def test_a_client_that_sends_without_reading_is_closed_or_limited() -> None:
    limits = WsLimits(send_timeout=0.5, **UNLIMITED_MESSAGES)
    async with served(limits) as (broadcaster, url), client(url) as good:
        await subscribe(good, ["market"])
        host, port = url.removeprefix("ws://").split("/")[0].split(":")
        sock = small_socket()
        await asyncio.get_running_loop().sock_connect(sock, (host, int(port)))
        async with client(url, sock=sock, max_queue=1) as bad:
            await subscribe(bad, CHANNELS)
            stop = asyncio.Event()
            watcher = asyncio.create_task(watch_bounds(broadcaster, stop))
            # big updates: the socket's buffers fill, the server's sends block
            publisher = asyncio.create_task(publish_until(broadcaster, stop, 20_000))
            with contextlib.suppress(ConnectionClosed):
                for _ in range(3000):
                    await bad.send(UNSUB_ALL.decode())
                    await bad.send(SUB_ALL.decode())
                    await asyncio.sleep(0)
            assert await good_updates(good, 20) == 20
            await eventually(lambda: bool(broadcaster.stats.disconnects), 15)
            stop.set()
            seen = await watcher
            await publisher
        assert set(broadcaster.stats.disconnects) <= {"send_timeout", "bytes_full", "queue_full"}
        assert seen["bytes"] <= limits.max_queued_bytes


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="counts /proc/self/fd")
async def test_a_client_that_goes_on_sending_after_its_close_leaves_nothing_behind() -> None:
    """hypercorn kept such a connection forever (a full queue nobody read)."""
    async with served() as (broadcaster, url):
        await asyncio.sleep(0.1)
        fds, tasks = open_fds(), len(asyncio.all_tasks())
        for _ in range(3):
            async with connect(url, ping_interval=None, close_timeout=0.5) as ws:
                with contextlib.suppress(ConnectionClosed):
                    for _ in range(2000):  # far past the abuse limit: closed 1008
                        await ws.send(PING.decode())
                await eventually(lambda: ws.close_code is not None or not ws.transport, 10)
                ws.transport.abort()
        await eventually(lambda: broadcaster.stats.disconnects["abuse"] == 3, 10)
        await eventually(lambda: open_fds() <= fds and len(asyncio.all_tasks()) <= tasks, 10)


async def test_a_client_closing_while_it_is_closed_for_abuse_frees_its_slot() -> None:
    """The client's close arriving while the server closes it (Quart cancels the
    handler in its clean-up) once left the connection registered and its slot taken."""
    async with served() as (broadcaster, url):
        for _ in range(5):
            bad_then_close = [frame(0x1, b"{bad")] * 5 + [frame(0x8, struct.pack("!H", 1000))]
            assert await raw_session(url, bad_then_close) is not None
        await eventually(lambda: not broadcaster.connections, 10)
        assert broadcaster.admission.per_client.clients == 0


async def test_large_symbol_lists_and_many_subscriptions() -> None:
    limits = WsLimits(max_bad_messages=100)
    async with served(limits) as (_, url), client(url) as ws:
        many = [f"S{i:04d}USDT" for i in range(2000)]
        await send(ws, {"type": "subscribe", "channels": CHANNELS, "symbols": many})
        assert (await recv(ws))["code"] == "too_large"
        await send(ws, {"type": "subscribe", "channels": ["market"], "symbols": many[:200]})
        assert (await recv(ws))["type"] == "snapshot"
        await send(ws, {"type": "subscribe", "channels": ["beta"], "symbols": many[:1]})
        assert (await recv(ws))["code"] == "too_many_subscriptions"
        await send(ws, {"type": "subscribe", "channels": CHANNELS * 50})
        snapshots = [await recv(ws) for _ in CHANNELS]  # duplicates collapse
        assert [s["channel"] for s in snapshots] == CHANNELS


async def test_handshakes_over_the_rate_are_refused_429() -> None:
    limits = WsLimits(handshake_rate=0.01, handshake_burst=3)
    async with served(limits) as (broadcaster, url):
        for _ in range(3):
            async with client(url, "same"):
                pass
        with pytest.raises(InvalidStatus) as refused:
            async with client(url, "same"):
                pass
        response = refused.value.response
        assert response.status_code == 429
        assert int(response.headers["Retry-After"]) >= 1
        assert orjson.loads(response.body)["error"] == "rate_limited"
        async with client(url, "other") as ws:  # another client is not affected
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
        assert broadcaster.stats.disconnects["rejected_handshake_rate"] == 1


async def test_origins_over_a_real_socket() -> None:
    async with served(allowed_origins=["https://partner.test"]) as (broadcaster, url):
        port = url.split(":")[2].split("/")[0]
        for origin in (f"http://127.0.0.1:{port}", f"HTTP://127.0.0.1:{port}", None):
            async with client(url, origin=origin) as ws:
                await send(ws, {"type": "ping"})
                assert (await recv(ws))["type"] == "pong"
        async with client(url, origin="https://partner.test") as ws:
            await send(ws, {"type": "ping"})
            assert (await recv(ws))["type"] == "pong"
        refused_origins = [
            "http://evil.test",
            f"http://127.0.0.1:{int(port) + 1}",
            f"https://127.0.0.1:{port}",
            "null",
        ]
        for origin in refused_origins:
            with pytest.raises(InvalidStatus) as refused:
                async with client(url, origin=origin):
                    pass
            assert refused.value.response.status_code == 403
            assert orjson.loads(refused.value.response.body)["error"] == "origin_not_allowed"
        assert broadcaster.stats.disconnects["rejected_origin"] == len(refused_origins)
        assert not broadcaster.connections


async def test_forwarded_proto_is_trusted_only_behind_a_trusted_proxy() -> None:
    trusted = RateLimiter(RateLimits(trust_forwarded_for=True, families={}))
    headers = {"X-Forwarded-Proto": "https"}
    async with served(rate_limiter=trusted) as (_, url):
        origin = "https://" + url.split("/")[2]
        async with connect(url, origin=origin, additional_headers=headers, ping_interval=None):
            pass
    async with served() as (_, url):
        origin = "https://" + url.split("/")[2]
        with pytest.raises(InvalidStatus):
            async with connect(url, origin=origin, additional_headers=headers):
                pass


# -- malformed frames ------------------------------------------------------------------


async def test_a_text_frame_with_invalid_utf8_is_closed_1007() -> None:
    async with served() as (broadcaster, url), client(url) as ws, client(url) as other:
        await ws.send(b'{"type": "ping", "x": "\xff\xfe"}', text=True)
        assert await close_of(ws) == (1007, "text frame is not valid UTF-8")
        await send(other, {"type": "ping"})
        assert (await recv(other))["type"] == "pong"
        await eventually(lambda: len(broadcaster.connections) == 1)


def frame(
    opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True, rsv: int = 0
) -> bytes:
    """One client frame, masked unless told (RFC 6455 §5.2)."""
    head = bytes([(0x80 if fin else 0) | rsv << 4 | opcode])
    bit = 0x80 if mask else 0
    if len(payload) < 126:
        head += bytes([bit | len(payload)])
    elif len(payload) < 1 << 16:
        head += bytes([bit | 126]) + struct.pack("!H", len(payload))
    else:
        head += bytes([bit | 127]) + struct.pack("!Q", len(payload))
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


async def handshake(url: str, extra: str) -> tuple[asyncio.StreamReader, Any, bytes]:
    """A hand-made handshake with ``extra`` header lines: (reader, writer, response head)."""
    host, port = url.removeprefix("ws://").split("/")[0].split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
        ).encode()
    )
    async with asyncio.timeout(10):
        head = await reader.readuntil(b"\r\n\r\n")
    return reader, writer, head


@contextlib.asynccontextmanager
async def raw_socket(url: str) -> AsyncIterator[tuple[asyncio.StreamReader, Any]]:
    """A WebSocket opened by hand (so any frame can be sent): (reader, writer)."""
    token = base64.b64encode(os.urandom(12)).decode()
    reader, writer, head = await handshake(url, f"Authorization: Bearer raw-{token}\r\n")
    try:
        assert head.startswith(b"HTTP/1.1 101"), head
        yield reader, writer
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()


async def read_frame(reader: asyncio.StreamReader) -> tuple[int, bytes] | None:
    """The server's next frame (opcode, payload); None when the connection ended."""
    async with asyncio.timeout(10):
        try:
            b0, b1 = await reader.readexactly(2)
            length = b1 & 0x7F
            if length == 126:
                (length,) = struct.unpack("!H", await reader.readexactly(2))
            elif length == 127:
                (length,) = struct.unpack("!Q", await reader.readexactly(8))
            return b0 & 0x0F, await reader.readexactly(length)
        except (asyncio.IncompleteReadError, ConnectionError):
            return None


async def close_code_of(reader: asyncio.StreamReader) -> int | None:
    """Reads until the server's close frame: its code (None: dropped without one)."""
    for _ in range(10_000):
        got = await read_frame(reader)
        if got is None:
            return None
        opcode, payload = got
        if opcode == 0x8:
            return struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
    raise AssertionError("no close after 10,000 frames")


async def raw_session(url: str, frames: list[bytes]) -> int | None:
    """Sends ``frames`` on a hand-made WebSocket; the code of the server's close."""
    async with raw_socket(url) as (reader, writer):
        for data in frames:
            writer.write(data)
        await writer.drain()
        return await close_code_of(reader)


PING_TEXT = frame(0x1, PING)
MALFORMED = {
    "invalid UTF-8 split across fragments": (
        [frame(0x1, b'{"a":"\xe2\x82', fin=False), frame(0x0, b'\x28"}')],
        1007,
    ),
    "close reason not UTF-8": ([frame(0x8, struct.pack("!H", 1000) + b"\xff")], 1007),
    "unmasked client frame": ([frame(0x1, PING, mask=False)], 1002),
    "reserved bits": ([frame(0x1, PING, rsv=0b100)], 1002),
    "unknown opcode": ([frame(0x3, b"x")], 1002),
    "ping above 125 bytes": ([frame(0x9, b"p" * 126)], 1002),
    "fragmented ping": ([frame(0x9, b"p", fin=False)], 1002),
    "continuation without a start": ([frame(0x0, PING)], 1002),
    "close code 999": ([frame(0x8, struct.pack("!H", 999))], 1002),
    "close with a one-byte payload": ([frame(0x8, b"\x03")], 1002),
}


@pytest.mark.parametrize("case", list(MALFORMED))
async def test_malformed_frames_get_a_close_frame_with_the_rfc_code(case: str) -> None:
    frames, code = MALFORMED[case]
    async with served() as (broadcaster, url):
        assert await raw_session(url, [PING_TEXT, *frames, PING_TEXT]) == code
        await eventually(lambda: not broadcaster.connections)
        assert broadcaster.stats.disconnects.get("error", 0) == 0


async def test_binary_frames_and_control_frames_are_handled() -> None:
    async with served() as (broadcaster, url), raw_socket(url) as (reader, writer):
        for data in [
            frame(0x2, PING),  # binary JSON: read as JSON
            frame(0x2, b"\x00\xff\x01"),  # binary garbage: bad_json
            frame(0x2, b""),  # an empty binary frame (Quart hands it over as None)
            frame(0x9, b"hello"),  # a ping: hypercorn answers with a pong frame
            frame(0xA, b"unsolicited"),  # a pong nobody asked for: ignored
            frame(0x1, b'{"type":', fin=False),  # a fragmented text message ...
            frame(0x9, b"mid"),  # ... with a control frame between its fragments
            frame(0x0, b'"ping"}'),
        ]:
            writer.write(data)
        seen: dict[str, Any] = {}
        pongs: set[bytes] = set()
        while "error" not in seen or "pong" not in seen or len(pongs) < 2:
            opcode, payload = await read_frame(reader) or (0, b"")
            assert opcode in (0x1, 0xA), (opcode, payload)
            if opcode == 0xA:
                pongs.add(payload)
            else:
                message = orjson.loads(payload)
                seen[message["type"]] = message
        assert seen["error"]["code"] == "bad_json" and pongs == {b"hello", b"mid"}
        writer.write(frame(0x8, struct.pack("!H", 1000) + b"bye"))
        assert await close_code_of(reader) == 1000
        await eventually(lambda: not broadcaster.connections)
        assert broadcaster.stats.disconnects.get("error", 0) == 0


raw_frames = st.lists(
    st.one_of(
        frames.map(lambda f: frame(0x1, f.encode("utf-8", "replace") if isinstance(f, str) else f)),
        st.binary(max_size=200).map(lambda b: frame(0x2, b)),
        st.tuples(st.integers(0, 15), st.binary(max_size=130), st.booleans()).map(
            lambda t: frame(t[0], t[1], fin=t[2])
        ),
    ),
    min_size=1,
    max_size=12,
)


@settings(
    max_examples=25,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(sent=raw_frames)
async def test_arbitrary_frames_over_a_real_socket(sent: list[bytes]) -> None:
    limits = WsLimits(max_queued_replies=8, max_queued_bytes=20_000)
    async with served(limits) as (broadcaster, url):
        stop = asyncio.Event()
        watcher = asyncio.create_task(watch_bounds(broadcaster, stop))
        code = await raw_session(url, [*sent, frame(0x8, struct.pack("!H", 1000))])
        assert code is not None  # always a close frame, never a dropped connection
        await eventually(lambda: not broadcaster.connections)
        stop.set()
        await watcher
        assert broadcaster.stats.disconnects.get("error", 0) == 0  # the handler never failed


def deflate_bomb(inflated_bytes: int) -> bytes:
    """A permessage-deflate payload (RFC 7692 §7.2.1) that inflates to that many bytes."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    body = packer.compress(b"[" + b"0," * (inflated_bytes // 2)) + packer.flush(zlib.Z_SYNC_FLUSH)
    return body[:-4]  # the sync flush's 00 00 ff ff tail is left out on the wire


@pytest.mark.parametrize(
    "offer",
    [
        "permessage-deflate",
        "permessage-deflate; client_max_window_bits",
        "permessage-deflate; server_no_context_takeover, x-webkit-deflate-frame",
    ],
)
async def test_no_compression_is_negotiated_so_a_deflate_bomb_is_a_protocol_error(
    offer: str,
) -> None:
    """hypercorn would accept permessage-deflate, and wsproto inflate a whole frame
    before any size check: a 64 KB frame could cost 64 MB. No extension is taken, so a
    compressed frame (RSV1) is a protocol error, closed 1002 before it is inflated."""
    async with served() as (broadcaster, url):
        reader, writer, head = await handshake(url, f"Sec-WebSocket-Extensions: {offer}\r\n")
        try:
            assert head.startswith(b"HTTP/1.1 101"), head
            assert b"sec-websocket-extensions" not in head.lower(), head
            bomb = deflate_bomb(32 * 1024 * 1024)
            assert len(bomb) < 64 * 1024
            writer.write(frame(0x1, bomb, rsv=0b100))
            await writer.drain()
            assert await close_code_of(reader) == 1002
        finally:
            writer.close()
        await eventually(lambda: not broadcaster.connections)


async def test_a_websockets_client_asking_for_compression_gets_none() -> None:
    async with served() as (_, url), connect(url, compression="deflate") as ws:
        assert ws.protocol.extensions == []
        await send(ws, {"type": "ping"})
        assert (await recv(ws))["type"] == "pong"


async def test_a_ping_frame_flood_is_closed_1008() -> None:
    """Ping frames are answered by the server itself, out of the application's sight:
    they have their own limit (a burst, then a rate), past which the client is closed."""
    async with served() as (broadcaster, url), client(url) as good:
        async with raw_socket(url) as (reader, writer):
            # one write (one loopback segment): the server reads the whole flood before it
            # closes, so no unread bytes turn its close into a reset that eats the frame
            writer.write(b"".join(frame(0x9, b"p%03d" % i) for i in range(200)))
            await writer.drain()
            assert await close_code_of(reader) == 1008
        await send(good, {"type": "ping"})
        assert (await recv(good))["type"] == "pong"
        await eventually(lambda: len(broadcaster.connections) == 1)


async def test_pings_at_a_normal_pace_are_answered() -> None:
    async with served() as (_, url), raw_socket(url) as (reader, writer):
        for i in range(10):  # under the burst: every one gets its pong
            writer.write(frame(0x9, b"p%d" % i))
        await writer.drain()
        pongs = []
        for _ in range(10):
            got = await read_frame(reader)
            assert got is not None
            pongs.append(got)
        assert [opcode for opcode, _ in pongs] == [0xA] * 10
        assert [payload for _, payload in pongs] == [b"p%d" % i for i in range(10)]
