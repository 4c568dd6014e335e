"""Real Memcached and Redis servers for the tests, on free loopback ports.

With a reachable Docker engine the servers run in containers (testcontainers);
otherwise Debian's ``memcached`` and ``redis-server`` binaries run as child
processes (``make test`` installs them when missing). Either way a test can
``kill()`` a server and ``restart()`` it on the same port, to prove what the
service does through an outage.

One Memcached and one Redis serve the whole session: the ``memcached`` and ``redis``
fixtures hand them to each test emptied (every key, the statistics, Redis's memory
limit and every client connection of earlier tests gone), and start them again on
their port when an earlier test killed one and left it down.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio

from tools.ports import free_port

__all__ = ["free_port"]  # the tests' port picker, shared with the local stack


def wait_for_port(port: int, seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.02)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {seconds} s")


@functools.cache
def docker_reachable() -> bool:
    try:
        import docker

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


@dataclass
class LocalServer:
    """A server process on 127.0.0.1:port that can be killed and restarted on that port."""

    name: str
    command: list[str]
    port: int
    process: subprocess.Popen | None = field(default=None, repr=False)
    # SIGTERM first on stop (False: SIGKILL at once, for a server with nothing to save —
    # Memcached takes up to a second to stop on SIGTERM).
    graceful_stop: bool = True

    def start(self) -> LocalServer:
        binary = shutil.which(self.command[0])
        if binary is None:
            raise RuntimeError(f"{self.command[0]} is not installed (make test installs it)")
        self.process = subprocess.Popen(
            [binary, *self.command[1:]], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_for_port(self.port)
        return self

    def kill(self) -> None:
        """SIGKILL: connections drop at once, like a crashed server."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.kill()
        self.start()

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ensure_running(self) -> None:
        """Starts the server again on its port if a test killed it and left it down."""
        if not self.running:
            self.start()

    def stop(self) -> None:
        if not self.graceful_stop:
            self.kill()
        elif self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"


def memcached_server(memory_mb: int = 64) -> LocalServer:
    port = free_port()
    command = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mb)]
    command += ["-u", "root"] if _is_root() else []
    return LocalServer("memcached", command, port, graceful_stop=False).start()


def redis_server(directory: str, persistent: bool = False) -> LocalServer:
    """``persistent``: an append-only file synced on every write, so a restart (even
    after SIGKILL) keeps every acknowledged write, as the compose stack runs it."""
    port = free_port()
    aof = (
        ["--appendonly", "yes", "--appendfsync", "always"] if persistent else ["--appendonly", "no"]
    )
    command = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += [*aof, "--dir", directory, "--protected-mode", "yes"]
    return LocalServer("redis", command, port).start()


def _is_root() -> bool:
    return os.geteuid() == 0


class ContainerServer:
    """The same interface over a testcontainers container (used when Docker is reachable)."""

    def __init__(self, image: str, internal_port: int) -> None:
        from testcontainers.core.container import DockerContainer

        self.container = DockerContainer(image).with_exposed_ports(internal_port)
        self.internal_port = internal_port
        self.container.start()
        self.port = int(self.container.get_exposed_port(internal_port))
        wait_for_port(self.port)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def kill(self) -> None:
        self.container.get_wrapped_container().kill()

    def restart(self) -> None:
        self.container.get_wrapped_container().restart()
        wait_for_port(self.port)

    def ensure_running(self) -> None:
        container = self.container.get_wrapped_container()
        container.reload()
        if container.status != "running":
            self.restart()

    def stop(self) -> None:
        self.container.stop()


def empty_memcached(port: int) -> None:
    """Every item and every statistic of the Memcached on ``port`` gone."""
    with socket.create_connection(("127.0.0.1", port), 5) as sock:
        sock.sendall(b"flush_all\r\nstats reset\r\n")
        reply = b""
        while not reply.endswith(b"RESET\r\n"):
            chunk = sock.recv(64)
            if not chunk:
                raise RuntimeError(f"memcached on {port} closed the connection: {reply!r}")
            reply += chunk


def empty_redis(port: int) -> None:
    """The Redis on ``port`` as a new one: no key, statistics reset, no memory limit,
    and no client of an earlier test still connected (subscribers included)."""
    import redis as redis_sync

    client = redis_sync.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        client.flushall()
        client.config_resetstat()
        client.config_set("maxmemory", "0")
        client.config_set("maxmemory-policy", "noeviction")
        client.client_kill_filter(_type="normal", skipme=True)
        client.client_kill_filter(_type="pubsub", skipme=True)
    finally:
        client.close()


@pytest.fixture(scope="session")
def session_memcached() -> Iterator[LocalServer | ContainerServer]:
    server = ContainerServer("memcached:1.6", 11211) if docker_reachable() else memcached_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def memcached(session_memcached: LocalServer | ContainerServer) -> LocalServer | ContainerServer:
    """The session's Memcached, running and empty (a test may kill and restart it)."""
    session_memcached.ensure_running()
    empty_memcached(session_memcached.port)
    return session_memcached


@pytest.fixture
def persistent_redis(tmp_path) -> Iterator[LocalServer]:
    """A Redis with an append-only file (local binary: its data directory must survive
    restarts, which a throwaway container would not give)."""
    server = redis_server(str(tmp_path), persistent=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def session_redis() -> Iterator[LocalServer | ContainerServer]:
    if docker_reachable():
        server: LocalServer | ContainerServer = ContainerServer("redis:7", 6379)
    else:
        server = redis_server(tempfile.mkdtemp(prefix="virtuoso-redis-"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(session_redis: LocalServer | ContainerServer) -> LocalServer | ContainerServer:
    """The session's Redis, running and empty (a test may kill and restart it)."""
    session_redis.ensure_running()
    empty_redis(session_redis.port)
    return session_redis


# The shared client's socket timeouts: patient, since the tests using it are not about
# timeouts (a slow answer on a busy machine must not fail them); the tests about
# timeouts build their own client with a short one.
REDIS_CLIENT_TIMEOUT = 5.0


@pytest_asyncio.fixture
async def redis_client(redis) -> AsyncIterator:
    """The app's Redis client factory, on the test server; closed after the test."""
    from app.backends.connection import connect_redis

    client = connect_redis(f"redis://{redis.address}/0", REDIS_CLIENT_TIMEOUT)
    try:
        yield client
    finally:
        await client.aclose()


@contextlib.asynccontextmanager
async def unresponsive_server() -> AsyncIterator[int]:
    """A TCP server on a free loopback port that accepts connections and never answers
    (a hung backend); yields its port and closes every connection on exit."""
    connections: list[asyncio.StreamWriter] = []

    async def black_hole(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(writer)
        with contextlib.suppress(Exception):
            await reader.read(-1)

    server = await asyncio.start_server(black_hole, "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1]
    finally:
        for writer in connections:
            writer.close()
        server.close()
        await server.wait_closed()
