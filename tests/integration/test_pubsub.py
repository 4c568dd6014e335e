"""InvalidationBus against a real redis-server: delivery, own-origin skip, bad messages,
outages (killed server, dropped and frozen connections) and a clean close."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio

from app.backends.connection import connect_redis
from app.backends.errors import TierUnavailable
from app.backends.keyspace import Keyspace
from app.cache.pubsub import Invalidation, InvalidationBus
from app.resilience.redis_breaker import redis_guard
from tests.conftest import eventually

TIMEOUT = 2.0  # seconds per Redis call: a busy machine takes 0.3 s to connect at times
KEYSPACE = Keyspace("bus-test")
FAST = {"min_backoff": 0.02, "max_backoff": 0.3, "ping_interval": 0.3, "poll_seconds": 0.1}


class Replica:
    """One replica's client, bus and what its callbacks saw."""

    def __init__(
        self, address: str, replica_id: str, keyspace: Keyspace = KEYSPACE, **options
    ) -> None:
        self.client = connect_redis(f"redis://{address}/0", TIMEOUT)
        self.messages: list[Invalidation] = []
        self.reconnects = 0
        self.bus = InvalidationBus(
            self.client,
            replica_id,
            self._on_message,
            keyspace=keyspace,
            on_reconnect=self._on_reconnect,
            guard=redis_guard(timeout_seconds=TIMEOUT),
            **{**FAST, **options},
        )

    async def _on_message(self, message: Invalidation) -> None:
        self.messages.append(message)

    def _on_reconnect(self) -> None:  # sync callbacks work too
        self.reconnects += 1

    async def start(self) -> Replica:
        self.bus.start()
        assert await self.bus.wait_subscribed(5.0)
        return self

    async def close(self) -> None:
        await self.bus.close()
        await self.client.aclose()


@pytest_asyncio.fixture
async def replicas(redis) -> AsyncIterator[tuple[Replica, Replica]]:
    a, b = Replica(redis.address, "replica-a"), Replica(redis.address, "replica-b")
    try:
        yield await a.start(), await b.start()
    finally:
        await a.close()
        await b.close()


async def published_and_seen(sender: Replica, receiver: Replica, marker: str) -> None:
    """Publishes a marker key and waits until ``receiver`` got it: everything sent
    before it has then arrived too (one connection, in order)."""
    await sender.bus.publish(keys=[marker], scope="l1")
    await eventually(lambda: any(marker in m.keys for m in receiver.messages), 5.0)


async def test_other_replicas_receive_exactly_once_and_the_sender_does_not(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    receivers = await a.bus.publish(families=["ticker", "candles"], keys=["BTCUSDT:1h"])
    assert receivers == 2  # both listeners, the sender's own included

    await published_and_seen(a, b, "marker")
    assert b.messages[0] == Invalidation("replica-a", ("ticker", "candles"), ("BTCUSDT:1h",), "all")
    assert len(b.messages) == 2
    assert b.messages[1].scope == "l1"
    await published_and_seen(b, a, "marker-back")
    assert [m.keys for m in a.messages] == [("marker-back",)]  # never its own messages
    assert b.bus.received == 2


async def test_another_deployments_bus_is_not_heard(
    replicas: tuple[Replica, Replica], redis
) -> None:
    a, b = replicas
    other = await Replica(redis.address, "elsewhere", keyspace=Keyspace("other")).start()
    try:
        assert other.bus.channel == "other:invalidate" and a.bus.channel == "bus-test:invalidate"
        assert await other.bus.publish(families=["market"]) == 1  # its own listener only
        await published_and_seen(a, b, "marker")
        assert [m.keys for m in b.messages] == [("marker",)]
        assert other.messages == []
    finally:
        await other.close()


async def test_malformed_messages_are_logged_once_and_ignored(
    replicas: tuple[Replica, Replica], caplog: pytest.LogCaptureFixture
) -> None:
    a, b = replicas
    caplog.set_level(logging.DEBUG, logger="app.cache.pubsub")
    for payload in (
        b"not json",
        b"[1, 2]",
        orjson.dumps({"origin": 7}),
        orjson.dumps({"origin": "x", "families": "ticker"}),
        orjson.dumps({"origin": "x", "scope": "everything"}),
        orjson.dumps({"origin": "x", "keys": [1]}),
    ):
        await a.client.publish("bus-test:invalidate", payload)
    await published_and_seen(a, b, "after-garbage")

    assert [m.keys for m in b.messages] == [("after-garbage",)]
    assert b.bus.malformed == 6
    warnings = [
        r for r in caplog.records if r.name == "app.cache.pubsub" and r.levelno >= logging.WARNING
    ]
    assert len(warnings) == 2  # one per bus: each listener sees the garbage once
    assert all("malformed" in r.getMessage() for r in warnings)
    assert a.bus.listening and b.bus.listening


async def test_a_failing_callback_does_not_stop_the_listener(redis) -> None:
    calls: list[Invalidation] = []

    def explode(message: Invalidation) -> None:
        calls.append(message)
        raise RuntimeError("callback bug")

    sender = await Replica(redis.address, "sender").start()
    client = connect_redis(f"redis://{redis.address}/0", TIMEOUT)
    bus = InvalidationBus(client, "receiver", explode, keyspace=KEYSPACE, **FAST)
    try:
        bus.start()
        assert await bus.wait_subscribed(5.0)
        await sender.bus.publish(keys=["one"])
        await sender.bus.publish(keys=["two"])
        await eventually(lambda: len(calls) == 2, 5.0)
        assert bus.listening
    finally:
        await bus.close()
        await client.aclose()
        await sender.close()


async def test_killed_and_restarted_redis_is_rejoined_and_on_reconnect_called(
    redis, replicas: tuple[Replica, Replica]
) -> None:
    a, b = replicas
    await published_and_seen(a, b, "before")

    redis.kill()
    await eventually(lambda: not b.bus.listening, 5.0)
    with pytest.raises(TierUnavailable):
        await a.bus.publish(keys=["lost"])
    redis.restart()

    await eventually(lambda: b.reconnects == 1 and b.bus.listening, 10.0)
    assert b.bus.reconnects == 1
    await eventually(lambda: a.bus.listening, 10.0)
    for _ in range(100):  # A's breaker may still be open for a moment after the failure
        with contextlib.suppress(TierUnavailable):
            await published_and_seen(a, b, "after")
            break
        await asyncio.sleep(0.1)
    assert [m.keys[0] for m in b.messages] == ["before", "after"]
    assert b.reconnects == 1


class Proxy:
    """A TCP proxy to Redis that can drop its connections or freeze them silently."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.pipes: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.tasks: set[asyncio.Task] = set()
        self.server: asyncio.Server | None = None

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return self.server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        self.pipes.append((writer, up_writer))
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.create_task(self._pump(source, sink))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    async def _pump(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while data := await source.read(65536):
                if not self.frozen:  # frozen: bytes vanish, nothing is closed
                    sink.write(data)
                    await sink.drain()
        sink.close()

    def drop_all(self) -> None:
        for client_side, server_side in self.pipes:
            client_side.close()
            server_side.close()
        self.pipes.clear()

    async def close(self) -> None:
        self.drop_all()
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest_asyncio.fixture
async def proxied(redis) -> AsyncIterator[tuple[Proxy, Replica, Replica]]:
    proxy = Proxy(redis.port)
    port = await proxy.start()
    sender = Replica(redis.address, "sender")
    receiver = Replica(f"127.0.0.1:{port}", "receiver")
    try:
        yield proxy, await sender.start(), await receiver.start()
    finally:
        await receiver.close()
        await sender.close()
        await proxy.close()


async def test_a_dropped_connection_is_noticed_even_when_reconnected_at_once(
    proxied: tuple[Proxy, Replica, Replica],
) -> None:
    proxy, sender, receiver = proxied
    await published_and_seen(sender, receiver, "before")
    proxy.drop_all()  # the proxy still accepts: redis-py may reconnect silently
    await eventually(lambda: receiver.reconnects >= 1 and receiver.bus.listening, 10.0)
    await published_and_seen(sender, receiver, "after")


async def test_a_frozen_connection_is_detected_by_ping_and_replaced(
    proxied: tuple[Proxy, Replica, Replica],
) -> None:
    proxy, sender, receiver = proxied
    await published_and_seen(sender, receiver, "before")
    proxy.frozen = True  # no FIN, no RST: only the missing PONG tells
    await eventually(lambda: not receiver.bus.listening, 5.0)
    proxy.frozen = False
    proxy.drop_all()
    await eventually(lambda: receiver.reconnects >= 1 and receiver.bus.listening, 10.0)
    await published_and_seen(sender, receiver, "after")


async def test_close_ends_the_listener_even_while_redis_is_down(redis) -> None:
    replica = await Replica(redis.address, "lonely").start()
    task = replica.bus._subscriber._task
    assert task is not None and not task.done()
    redis.kill()
    await eventually(lambda: not replica.bus.listening, 5.0)
    async with asyncio.timeout(2.0):
        await replica.close()
    assert task.done()
    assert not replica.bus.listening
    await replica.bus.close()  # twice is fine


async def test_close_before_start_and_publish_validation(redis) -> None:
    replica = Replica(redis.address, "idle")
    try:
        with pytest.raises(ValueError, match="scope"):
            await replica.bus.publish(keys=["k"], scope="everything")  # type: ignore[arg-type]
        assert await replica.bus.publish(keys=["k"]) == 0  # nobody listens
        assert not await replica.bus.wait_subscribed(0.05)
    finally:
        await replica.close()
    with pytest.raises(ValueError):
        InvalidationBus(replica.client, "", lambda message: None, keyspace=KEYSPACE)


def test_message_encoding_round_trip() -> None:
    message = Invalidation("r1", ("ticker",), ("BTCUSDT",), "l1")
    assert orjson.loads(message.encode()) == {
        "origin": "r1",
        "families": ["ticker"],
        "keys": ["BTCUSDT"],
        "scope": "l1",
    }
    assert Invalidation.decode(message.encode()) == message
    assert Invalidation.decode(b'{"origin": "r2"}') == Invalidation("r2")
