"""MemcachedTier against real memcached servers (no mocks).

Servers come from tests/support/servers.py: ``memcached`` (the session's server, emptied
before each test; a test may kill and restart it) and ``spawn()`` for more. ``Proxy`` is
a loopback TCP proxy that can hold back a server's answers (a stalled server, as far as
the client can tell) and counts the commands clients send.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import subprocess
import sys
import textwrap
import time
import warnings
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator

import aiomcache
import pytest
import pytest_asyncio
from hypothesis import given, settings
from hypothesis import strategies as st

from app.backends.errors import TierUnavailable
from app.cache.memcached import MemcachedTier, parse_server, rendezvous_owner
from app.resilience.breaker import BreakerConfig
from tests.conftest import eventually
from tests.support.servers import LocalServer, memcached_server

# Our TCP connections must all be closed (tests/support/servers.py's Docker probe may leave a
# Unix socket to the GC: not ours, hence the family=2 / transport filters).
pytestmark = [
    pytest.mark.filterwarnings("error:unclosed transport:ResourceWarning"),
    pytest.mark.filterwarnings(r"error:unclosed <socket\.socket [^>]*family=2,:ResourceWarning"),
]

LOGGER = "app.cache.memcached"
TIMEOUT = 0.25  # the tier's timeout in the tests about timeouts
# Everywhere else: a slow answer on a busy machine is not what those tests are about.
PATIENT = 5.0
MiB = 1024 * 1024


# --- helpers ------------------------------------------------------------------------------


@pytest.fixture
def spawn() -> Iterator[Callable[[], LocalServer]]:
    """Starts extra memcached servers (each on its own free port), killed at the end."""
    started: list[LocalServer] = []

    def start() -> LocalServer:
        server = memcached_server()
        started.append(server)
        return server

    yield start
    for server in started:
        server.kill()


@pytest_asyncio.fixture
async def make_tier() -> AsyncIterator[Callable[..., MemcachedTier]]:
    """Builds tiers (timeout PATIENT unless told) and closes them all at the end."""
    tiers: list[MemcachedTier] = []

    def make(*servers: str, **options) -> MemcachedTier:
        options.setdefault("timeout_seconds", PATIENT)
        tier = MemcachedTier(list(servers), **options)
        tiers.append(tier)
        return tier

    yield make
    for tier in tiers:
        await tier.close()


@contextlib.asynccontextmanager
async def direct(server) -> AsyncIterator[aiomcache.Client]:
    """A plain aiomcache client straight to one server, to check what it holds."""
    client = aiomcache.Client("127.0.0.1", server.port, pool_size=1)
    try:
        yield client
    finally:
        await client.close()


async def server_stats(server) -> dict[bytes, bytes]:
    async with direct(server) as client:
        return await client.stats()


def log_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


class Proxy:
    """A loopback TCP proxy in front of one server.

    ``hold()`` keeps the server's answers back (what a stalled server or network looks
    like to the client) until ``release()``; ``answered``/``delivered`` count the bytes
    received from the server / passed on. ``commands`` counts the commands the clients
    sent (data blocks of storage commands skipped); ``connections`` the client connections.
    """

    STORAGE = (b"set", b"add", b"replace", b"append", b"prepend", b"cas")

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.commands: Counter[str] = Counter()
        self.connections = 0
        self.answered = 0
        self.delivered = 0
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._tasks: set[asyncio.Task] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def hold(self) -> None:
        self._flowing.clear()

    def release(self) -> None:
        self._flowing.set()

    def gets(self) -> int:
        return self.commands["get"] + self.commands["gets"]

    async def __aenter__(self) -> Proxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        handler = asyncio.current_task()
        assert handler is not None
        self._tasks.add(handler)
        self.connections += 1
        upstream_writer = None
        pumps: list[asyncio.Task] = []
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(
                "127.0.0.1", self.upstream_port
            )
            pumps = [
                asyncio.create_task(self._requests(reader, upstream_writer)),
                asyncio.create_task(self._answers(upstream_reader, writer)),
            ]
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except (asyncio.CancelledError, OSError):
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)
            for stream in (writer, upstream_writer):
                if stream is not None:
                    stream.transport.abort()
            self._tasks.discard(handler)

    async def _requests(self, reader: asyncio.StreamReader, upstream: asyncio.StreamWriter) -> None:
        buffer, data_left = bytearray(), 0
        with contextlib.suppress(OSError):
            while data := await reader.read(65536):
                upstream.write(data)
                buffer += data
                while True:
                    if data_left:
                        taken = min(data_left, len(buffer))
                        del buffer[:taken]
                        data_left -= taken
                        if data_left:
                            break
                    end = buffer.find(b"\r\n")
                    if end < 0:
                        break
                    words = bytes(buffer[:end]).split()
                    del buffer[: end + 2]
                    if words:
                        self.commands[words[0].decode()] += 1
                    if words and words[0] in self.STORAGE:
                        data_left = int(words[4]) + 2
                await upstream.drain()

    async def _answers(self, upstream: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            while data := await upstream.read(65536):
                self.answered += len(data)
                await self._flowing.wait()
                writer.write(data)
                await writer.drain()
                self.delivered += len(data)


class LoopBlocked(BaseException):
    """A BaseException, so that no ``except Exception`` on the way can swallow it."""


@contextlib.contextmanager
def loop_watchdog(seconds: float) -> Iterator[None]:
    """Fails the test if the event loop is stuck (a coroutine spinning without yielding)."""

    def fire(_signum, _frame) -> None:
        raise LoopBlocked(f"the event loop was blocked for {seconds} s")

    previous = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


@contextlib.asynccontextmanager
async def crashing_server() -> AsyncIterator[int]:
    """A server that answers every command with half a line and hangs up (a crash mid-reply)."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(OSError):
            await reader.readline()
            writer.write(b"STOR")
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        server.close()
        await server.wait_closed()


# --- configuration and keys ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("127.0.0.1:11311", ("127.0.0.1", 11311)),
        ("memcached://cache-1:11212", ("cache-1", 11212)),
        ("memcached://cache-1:11212/", ("cache-1", 11212)),
        (" cache ", ("cache", 11211)),
        ("[::1]:11213", ("::1", 11213)),
    ],
)
def test_server_specs_are_parsed(spec: str, expected: tuple[str, int]) -> None:
    assert parse_server(spec) == expected


@pytest.mark.parametrize(
    "spec",
    ["", ":11211", "host:0", "host:65536", "host:port", "redis://host:1", "::1:11211", "a b:1"],
)
def test_invalid_server_specs_raise_value_error(spec: str) -> None:
    with pytest.raises(ValueError):
        parse_server(spec)


def test_invalid_tier_configuration_raises_value_error() -> None:
    with pytest.raises(ValueError, match="at least one"):
        MemcachedTier([])
    with pytest.raises(ValueError, match="twice"):
        MemcachedTier("127.0.0.1:1, memcached://127.0.0.1:1")
    with pytest.raises(ValueError, match="pool_size"):
        MemcachedTier(["127.0.0.1:1"], pool_size=0)
    with pytest.raises(ValueError, match="timeout"):
        MemcachedTier(["127.0.0.1:1"], timeout_seconds=0)


async def test_a_comma_separated_string_lists_the_servers() -> None:
    tier = MemcachedTier("memcached://127.0.0.1:1,127.0.0.1:2")
    assert tier.servers == ["127.0.0.1:1", "127.0.0.1:2"]
    await tier.close()


@pytest.mark.parametrize(
    "key", ["has space", "k" * 251, "", "tab\there", "new\nline", "ключ", "del\x7f", "nul\x00"]
)
async def test_invalid_keys_raise_value_error_before_any_io(make_tier, key: str) -> None:
    tier = make_tier("127.0.0.1:1")  # nothing listens there: any I/O would fail
    with pytest.raises(ValueError):
        await tier.get_many(["fine", key])
    with pytest.raises(ValueError):
        await tier.set_many({"fine": b"1", key: b"2"}, 60)
    with pytest.raises(ValueError):
        await tier.delete_many([key])
    assert all(c.ops == 0 for c in tier.counters.values())


async def test_wrong_types_and_ttls_are_refused(make_tier) -> None:
    tier = make_tier("127.0.0.1:1")
    with pytest.raises(TypeError):
        await tier.get_many([b"bytes-key"])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        await tier.set_many({"k": "text"}, 60)  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        await tier.set_many({"k": b"v"}, -1)


# --- round trips --------------------------------------------------------------------------


async def test_round_trip_with_binary_values_up_to_500_kb(memcached, make_tier) -> None:
    tier = make_tier(memcached.address)
    items = {
        "empty": b"",
        "small": b"v",
        "protocol-lookalike": b"END\r\nVALUE x 0 1\r\n\x00\xff" * 100,
        "k" * 250: b"longest key",
        "binary-500k": os.urandom(500 * 1024),
        "binary-64k": os.urandom(64 * 1024 + 3),
    }
    await tier.set_many(items, 60)
    assert await tier.get_many([*items, "absent-1", "absent-2"]) == items
    assert await tier.get_many(["small", "small", "absent-1"]) == {"small": b"v"}
    assert await tier.get_many([]) == {}
    assert await tier.get("binary-500k") == items["binary-500k"]
    await tier.set("small", b"w", 60)
    assert await tier.get("small") == b"w"

    await tier.delete_many(["small", "binary-500k", "never-there"])
    left = await tier.get_many(list(items))
    assert set(left) == set(items) - {"small", "binary-500k"}
    assert await tier.get("absent-1") is None
    counters = tier.counters[memcached.address]
    assert counters.errors == 0 and counters.hits > 0 and counters.misses > 0


async def test_ttl_expires(memcached, make_tier) -> None:
    tier = make_tier(memcached.address)
    await tier.set_many({"long": b"2"}, 60)
    # Memcached's clock ticks in whole seconds: a 1 s item lives between 0 and 1 s, so it
    # can expire before it is read back if the clock ticks in between (rare; try again).
    for _ in range(3):
        await tier.set_many({"short": b"1"}, 1)
        if await tier.get_many(["short", "long"]) == {"short": b"1", "long": b"2"}:
            break
    else:
        raise AssertionError("a 1 s item was never read back")
    await asyncio.sleep(2.1)
    assert await tier.get_many(["short", "long"]) == {"long": b"2"}


async def test_ttls_over_30_days_are_durations_too(memcached, make_tier) -> None:
    # Memcached reads an expiry above 30 days as a Unix time: sent as is, 31 days would
    # be a date in 1970 and the item would expire at once.
    tier = make_tier(memcached.address)
    await tier.set_many({"month": b"m"}, 31 * 24 * 3600)
    assert await tier.get_many(["month"]) == {"month": b"m"}


async def test_values_above_the_size_limit_are_not_sent(memcached, make_tier) -> None:
    tier = make_tier(memcached.address, max_value_bytes=1000)
    await tier.set_many({"big": b"x" * 1001, "fits": b"x" * 1000}, 60)
    assert await tier.get_many(["big", "fits"]) == {"fits": b"x" * 1000}
    await tier.set_many({"big": b"x" * 5000}, 60)  # nothing to send: not an outage
    counters = tier.counters[memcached.address]
    assert counters.too_large == 2 and counters.errors == 0

    default = make_tier(memcached.address)
    await default.set_many({"huge": b"x" * (2 * MiB), "ok": b"x" * 1_000_000}, 60)
    assert set(await default.get_many(["huge", "ok"])) == {"ok"}
    assert default.counters[memcached.address].errors == 0


# --- several servers ----------------------------------------------------------------------


async def test_keys_are_spread_over_every_server(spawn, make_tier) -> None:
    servers = [spawn() for _ in range(3)]
    tier = make_tier(*(server.address for server in servers))
    items = {f"view:spread:{i}": f"value {i}".encode() for i in range(90)}
    await tier.set_many(items, 60)

    for server in servers:
        async with direct(server) as client:
            held = await client.multi_get(*(key.encode() for key in items))
        mine = {key for key, value in zip(items, held, strict=True) if value is not None}
        assert 10 <= len(mine) <= 50, f"{server.address} holds {len(mine)} of 90 keys"
        assert mine == {key for key in items if tier.server_for(key) == server.address}
    assert await tier.get_many(list(items)) == items


async def test_removing_a_server_moves_only_its_keys(spawn, make_tier) -> None:
    a, b, c = (spawn() for _ in range(3))
    three = make_tier(a.address, b.address, c.address)
    items = {f"view:stable:{i}": str(i).encode() for i in range(120)}
    await three.set_many(items, 60)
    on_b = {key for key in items if three.server_for(key) == b.address}
    assert 0 < len(on_b) < len(items)

    two = make_tier(a.address, c.address)  # b removed from the configuration
    for key in set(items) - on_b:
        assert two.server_for(key) == three.server_for(key)
    assert set(await two.get_many(list(items))) == set(items) - on_b


def test_rendezvous_placement_is_balanced_and_deterministic() -> None:
    ids = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    keys = [f"view:{i}" for i in range(3000)]
    owners = Counter(rendezvous_owner(ids, key) for key in keys)
    assert set(owners) == set(ids)
    assert all(800 <= n <= 1200 for n in owners.values()), owners
    # blake2b, not the salted hash(): fixed across processes and runs.
    assert rendezvous_owner(ids, "view:0") == rendezvous_owner(list(reversed(ids)), "view:0")
    placement = "".join(rendezvous_owner(ids, f"view:{i}")[7] for i in range(8))
    assert placement == "11212113"  # frozen: a change would move every key of a deployment


@settings(max_examples=60, deadline=None)
@given(
    servers=st.lists(
        st.from_regex(r"[a-z]{1,8}:[1-9][0-9]{0,3}", fullmatch=True),
        min_size=2,
        max_size=6,
        unique=True,
    ),
    keys=st.lists(st.from_regex(r"[!-~]{1,40}", fullmatch=True), min_size=1, max_size=40),
    data=st.data(),
)
def test_rendezvous_removal_only_moves_the_removed_servers_keys(servers, keys, data) -> None:
    removed = data.draw(st.sampled_from(servers))
    rest = [server for server in servers if server != removed]
    for key in keys:
        before = rendezvous_owner(servers, key)
        if before != removed:
            assert rendezvous_owner(rest, key) == before


async def test_get_many_sends_one_request_per_server(spawn, make_tier) -> None:
    one, two = spawn(), spawn()
    async with Proxy(one.port) as p1, Proxy(two.port) as p2:
        tier = make_tier(p1.address, p2.address)
        keys = [f"view:batch:{i}" for i in range(40)]
        await tier.set_many({key: b"v" for key in keys[:30]}, 60)
        routed = Counter(tier.server_for(key) for key in keys)
        assert routed[p1.address] > 0 and routed[p2.address] > 0
        before = [p1.gets(), p2.gets()]
        cmd_get = {s.port: int((await server_stats(s))[b"cmd_get"]) for s in (one, two)}

        found = await tier.get_many(keys)

        assert found == {key: b"v" for key in keys[:30]}
        assert [p1.gets() - before[0], p2.gets() - before[1]] == [1, 1]
        # ... and each of those requests asked its server for all of its keys.
        for server, proxy in ((one, p1), (two, p2)):
            asked = int((await server_stats(server))[b"cmd_get"]) - cmd_get[server.port]
            assert asked == routed[proxy.address]


async def test_one_server_down_gives_partial_results(spawn, make_tier) -> None:
    up, down = spawn(), spawn()
    tier = make_tier(up.address, down.address)
    items = {f"view:partial:{i}": b"v" for i in range(40)}
    await tier.set_many(items, 60)
    down.kill()

    on_up = {key for key in items if tier.server_for(key) == up.address}
    assert set(await tier.get_many(list(items))) == on_up  # the rest are misses, no error
    await tier.set_many({key: b"w" for key in items}, 60)  # stored where possible, no error
    assert await tier.get_many(sorted(on_up)) == dict.fromkeys(on_up, b"w")
    with pytest.raises(TierUnavailable, match=down.address):  # a copy may survive there
        await tier.delete_many(list(items))
    assert await tier.get_many(sorted(on_up)) == {}  # deleted where it could be
    assert tier.available
    assert tier.counters[down.address].errors > 0
    assert tier.counters[up.address].errors == 0


# --- outages ------------------------------------------------------------------------------


async def test_killed_server_is_skipped_then_rejoins_on_restart(memcached, make_tier, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    config = BreakerConfig(consecutive_failures=2, open_seconds=0.3, max_open_seconds=0.6)
    # patient: a refused connection fails at once, and a busy machine may take 0.25 s
    tier = make_tier(memcached.address, breaker_config=config, timeout_seconds=PATIENT)
    await tier.set_many({"view:a": b"1"}, 60)
    assert await tier.get_many(["view:a"]) == {"view:a": b"1"}

    memcached.kill()
    for _ in range(2):  # failures: the connection is refused (no timeout to wait)
        with pytest.raises(TierUnavailable):
            await tier.get_many(["view:a"])
    assert not tier.available
    for _ in range(5):  # skipped while the breaker is open: nothing sent, nothing awaited
        with pytest.raises(TierUnavailable, match="skipped"):
            await tier.get_many(["view:a"])
        with pytest.raises(TierUnavailable):
            await tier.set_many({"view:a": b"2"}, 60)
    counters = tier.counters[memcached.address]
    assert counters.skipped >= 10 and counters.errors == 2 and counters.timeouts == 0
    assert len(log_lines(caplog, logging.WARNING)) == 1
    assert "down" in log_lines(caplog, logging.WARNING)[0]
    stats = await tier.stats()  # never raises
    assert stats["servers_up"] == 0 and stats["servers"][memcached.address]["up"] is False

    memcached.restart()  # same port, empty

    async def stored_and_read() -> bool:
        try:
            await tier.set_many({"view:b": b"2"}, 60)
            return await tier.get_many(["view:b"]) == {"view:b": b"2"}
        except TierUnavailable:
            return False

    deadline = time.monotonic() + 10
    while not await stored_and_read():
        assert time.monotonic() < deadline, "the tier did not rejoin within 10 s"
        await asyncio.sleep(0.05)
    assert tier.available
    assert await tier.get_many(["view:a", "view:b"]) == {"view:b": b"2"}
    assert log_lines(caplog, logging.INFO) == [f"memcached {memcached.address} is back"]
    assert len(log_lines(caplog, logging.WARNING)) == 1


async def test_a_stalled_server_costs_the_timeout_not_more(memcached, make_tier) -> None:
    async with Proxy(memcached.port) as proxy:
        tier = make_tier(
            proxy.address,
            breaker_config=BreakerConfig(consecutive_failures=10),
            timeout_seconds=TIMEOUT,
        )
        await tier.set_many({"view:s": b"1"}, 60)
        proxy.hold()
        for operation in (
            lambda: tier.get_many(["view:s"]),
            lambda: tier.set_many({"view:s": b"2"}, 60),
            lambda: tier.delete_many(["view:s"]),
        ):
            started = time.monotonic()
            # The held answer never comes: only the tier's own timeout ends the call
            # (this outer bound only keeps a broken tier from hanging the test).
            async with asyncio.timeout(30):
                with pytest.raises(TierUnavailable, match=f"timed out after {TIMEOUT} s"):
                    await operation()
            assert time.monotonic() - started >= TIMEOUT - 0.01
        assert tier.counters[proxy.address].timeouts == 3
        proxy.release()


async def test_start_reports_a_dead_server_once_and_never_raises(memcached, make_tier, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    dead = "127.0.0.1:1"
    tier = make_tier(memcached.address, dead)
    await tier.start()
    assert len(log_lines(caplog, logging.WARNING)) == 1
    assert dead in log_lines(caplog, logging.WARNING)[0]
    assert any(memcached.address in line for line in log_lines(caplog, logging.INFO))
    assert tier.available


# --- cancellation safety ------------------------------------------------------------------


async def test_plain_aiomcache_reuses_a_connection_whose_answer_is_in_flight(memcached):
    """The hazard MemcachedTier guards against, shown with aiomcache alone: after a timed-out
    get, its connection goes back to the pool and later gets read earlier answers."""
    async with Proxy(memcached.port) as proxy, direct(memcached) as other:
        client = aiomcache.Client("127.0.0.1", proxy.port, pool_size=1)
        try:
            await client.set(b"a", b"old")
            await client.set(b"b", b"bee")
            proxy.hold()
            answered = proxy.answered
            with pytest.raises(TimeoutError):
                async with asyncio.timeout(0.2):
                    await client.get(b"a")
            await eventually(lambda: proxy.answered > answered, 5)
            await other.set(b"a", b"new")
            proxy.release()

            assert await client.get(b"a") == b"old"  # stale: the answer to the timed-out get
            assert await client.get(b"b") is None  # a wrong miss: it reads the answer for a
            assert proxy.connections == 1  # all on the one poisoned connection
        finally:
            await client.close()


@pytest.mark.parametrize("interruption", ["timeout", "cancel"])
@pytest.mark.parametrize("stalled", ["get", "set", "delete"])
async def test_an_interrupted_operation_does_not_poison_the_pool(
    memcached, make_tier, stalled: str, interruption: str
) -> None:
    async with Proxy(memcached.port) as proxy, direct(memcached) as other:
        tier = make_tier(
            proxy.address, pool_size=1, timeout_seconds=TIMEOUT if interruption == "timeout" else 30
        )
        await tier.set_many({"a": b"old", "b": b"bee"}, 60)
        assert proxy.connections == 1
        operation = {
            "get": lambda: tier.get_many(["a"]),
            "set": lambda: tier.set_many({"c": b"sea"}, 60),
            "delete": lambda: tier.delete_many(["zz"]),
        }[stalled]
        proxy.hold()
        answered = proxy.answered
        task = asyncio.create_task(operation())
        await eventually(lambda: proxy.answered > answered, 5)  # the answer is held back
        if interruption == "cancel":
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        else:
            with pytest.raises(TierUnavailable, match="timed out"):
                await task
        await other.set(b"a", b"new")
        proxy.release()

        assert await tier.get_many(["a"]) == {"a": b"new"}
        assert await tier.get_many(["b"]) == {"b": b"bee"}
        assert await tier.get_many(["a", "b", "zz"]) == {"a": b"new", "b": b"bee"}
        await tier.set_many({"d": b"dee"}, 60)
        assert await tier.get_many(["d"]) == {"d": b"dee"}
        assert proxy.connections == 2  # the interrupted connection was dropped, not reused
        counters = tier.counters[proxy.address]
        assert counters.timeouts == (1 if interruption == "timeout" else 0)
        assert counters.errors == counters.timeouts


def test_plain_aiomcache_hangs_the_event_loop_when_a_server_dies_mid_reply() -> None:
    """The other hazard guarded against: aiomcache's one-line replies are read in a loop
    that never yields at end of stream, so not even a timeout can fire."""
    script = textwrap.dedent(
        """
        import asyncio, aiomcache

        async def main():
            async def serve(reader, writer):
                await reader.readline()
                writer.write(b"STOR")
                await writer.drain()
                writer.close()

            server = await asyncio.start_server(serve, "127.0.0.1", 0)
            port = server.sockets[0].getsockname()[1]
            client = aiomcache.Client("127.0.0.1", port, pool_size=1)
            print("ready", flush=True)
            try:
                async with asyncio.timeout(0.2):
                    await client.set(b"k", b"v")
            except BaseException as exc:
                print("raised", type(exc).__name__, flush=True)

        asyncio.run(main())
        """
    )
    process = subprocess.Popen(
        [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == b"ready\n"
        with pytest.raises(subprocess.TimeoutExpired):  # 5 times the 0.2 s timeout
            process.wait(timeout=1.0)
    finally:
        process.kill()
        process.wait(timeout=10)
        process.stdout.close()  # type: ignore[union-attr]


async def test_a_server_dying_mid_reply_is_an_error_not_a_hang(make_tier) -> None:
    async with crashing_server() as port:
        tier = make_tier(f"127.0.0.1:{port}")
        with loop_watchdog(5.0):
            for operation in (
                lambda: tier.set_many({"k": b"v"}, 60),
                lambda: tier.delete_many(["k"]),
                lambda: tier.get_many(["k"]),
            ):
                with pytest.raises(TierUnavailable) as raised:
                    await operation()
                assert "timed out" not in str(raised.value)  # the reset ends it, at once


# --- stats and lifecycle ------------------------------------------------------------------


async def test_stats_report_used_and_limit_per_server_and_in_total(spawn, make_tier) -> None:
    one, two = spawn(), spawn()
    tier = make_tier(one.address, two.address)
    await tier.set_many({f"view:stats:{i}": os.urandom(10_000) for i in range(20)}, 60)
    await tier.get_many(["view:stats:0", "view:stats:absent"])

    stats = await tier.stats()

    assert stats["tier"] == "memcached" and stats["available"] is True
    assert stats["servers_up"] == stats["servers_total"] == 2
    for address in (one.address, two.address):
        server = stats["servers"][address]
        assert server["up"] is True and server["breaker"] == "closed"
        assert server["limit_bytes"] == 64 * MiB
        assert server["used_bytes"] > 0 and server["curr_items"] > 0
        assert 0 < server["memory_used_ratio"] < 1
        assert server["evictions"] == 0 and server["uptime_seconds"] >= 0
        assert server["version"].startswith("1.")
        assert server["counters"]["errors"] == 0
    totals = stats["totals"]
    assert totals["limit_bytes"] == 128 * MiB
    assert totals["used_bytes"] > 200_000 and totals["curr_items"] == 20
    assert totals["get_hits"] + totals["get_misses"] == 2
    assert stats["memory_used_ratio"] == pytest.approx(totals["used_bytes"] / (128 * MiB), 1e-3)


async def test_close_closes_every_connection(memcached) -> None:
    async def connections() -> int:
        return int((await server_stats(memcached))[b"curr_connections"])

    tier = MemcachedTier([memcached.address], pool_size=3, timeout_seconds=PATIENT)
    try:
        await tier.set_many({f"k{i}": b"v" for i in range(10)}, 60)
        assert len(await tier.get_many([f"k{i}" for i in range(10)])) == 10
        during = await connections()
    finally:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await tier.close()
            await tier.close()  # idempotent
            gc.collect()
    ours = [str(w.message) for w in caught if issubclass(w.category, ResourceWarning)]
    assert not [m for m in ours if "transport" in m or "family=2," in m]  # see pytestmark

    deadline = time.monotonic() + 5
    while await connections() > during - 3:  # the pool's 3 connections are gone
        assert time.monotonic() < deadline, "the tier's connections are still open"
        await asyncio.sleep(0.05)
    assert not tier.available
    with pytest.raises(TierUnavailable, match="closed"):
        await tier.get_many(["k1"])
    assert (await tier.stats())["servers_up"] == 0
