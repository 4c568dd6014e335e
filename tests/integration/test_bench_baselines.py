"""The benchmark's baselines (bench/baselines/) as the benchmark runs them: each started
as ``python -m bench.baselines.<name>`` on a free port, asked for the desktop dashboard
twice, then stopped with SIGTERM. Memcached and Redis are real servers (tests/support/servers.py).
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from app.settings import load_settings
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
PATH = "/api/dashboard/data"
START_SECONDS = 60.0  # the first start may import and compile a lot (numpy, TA-Lib…)
REQUEST_SECONDS = 10.0
EXIT_SECONDS = 10.0
DEFAULT_SYMBOLS = set(load_settings(environ={}).symbols)


@contextmanager
def baseline(name: str, *flags: str, log: Path) -> Iterator[int]:
    """The baseline running on a free port until the block ends; then SIGTERM, and it
    must exit with 0 within EXIT_SECONDS. Its output goes to ``log`` (shown on failure)."""
    port = free_port()
    with log.open("wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", f"bench.baselines.{name}", "--port", str(port), *flags],
            cwd=ROOT,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        _wait_listening(process, port, log)
        yield port
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=EXIT_SECONDS)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"{name} still running {EXIT_SECONDS} s after SIGTERM") from None
        assert code == 0, f"{name} exited with {code}:\n{log.read_text()}"
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=EXIT_SECONDS)


def _wait_listening(process: subprocess.Popen, port: int, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}:\n{log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"not listening after {START_SECONDS} s:\n{log.read_text()}")


def get_dashboard(port: int) -> tuple[bytes, dict]:
    """One GET of the desktop dashboard: 200, JSON, the 25 default symbols."""
    url = f"http://127.0.0.1:{port}{PATH}"
    with urllib.request.urlopen(url, timeout=REQUEST_SECONDS) as response:
        assert response.status == 200
        assert response.headers.get_content_type() == "application/json"
        body = response.read()
    payload = json.loads(body)
    assert {row["symbol"] for row in payload["symbols"]} == DEFAULT_SYMBOLS
    assert len(payload["symbols"]) == len(DEFAULT_SYMBOLS) == 25
    return body, payload


def memcached_stats(address: str) -> dict[str, int]:
    """The server's integer counters, from the text protocol's ``stats`` command."""
    host, _, port = address.rpartition(":")
    with socket.create_connection((host, int(port)), timeout=REQUEST_SECONDS) as sock:
        sock.sendall(b"stats\r\n")
        data = b""
        while not data.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk, "memcached closed the connection during stats"
            data += chunk
    stats = {}
    for line in data.decode().splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "STAT" and parts[2].isdigit():
            stats[parts[1]] = int(parts[2])
    return stats


def test_ceiling_answers_constant_bytes(tmp_path) -> None:
    with baseline("ceiling", log=tmp_path / "ceiling.log") as port:
        first, payload = get_dashboard(port)
        second, _ = get_dashboard(port)
    assert first == second  # computed once at start
    assert len(first) > 10_000  # the whole desktop view, not a stand-in
    assert payload["overview"] is not None and payload["errors"] == {}


def test_naive_serves_the_second_request_from_memcached(tmp_path, memcached) -> None:
    with baseline("naive", "--memcached", memcached.address, log=tmp_path / "naive.log") as port:
        before = memcached_stats(memcached.address)
        first, _ = get_dashboard(port)
        after_miss = memcached_stats(memcached.address)
        served = time.monotonic()
        second, _ = get_dashboard(port)
        assert time.monotonic() - served < 5  # inside the 5 s TTL
        after_hit = memcached_stats(memcached.address)
    # The first request missed and stored the view; the second was a hit, re-serialized
    # by the same json.dumps (same bytes); each request opened its own connection.
    assert after_miss["get_misses"] - before["get_misses"] == 1
    assert after_miss["cmd_set"] - before["cmd_set"] == 1
    assert after_hit["get_hits"] - after_miss["get_hits"] == 1
    assert after_hit["get_misses"] == after_miss["get_misses"]
    assert after_hit["total_connections"] > after_miss["total_connections"]
    assert first == second


def test_fastapi_cashews_serves_the_second_request_from_redis(tmp_path, redis) -> None:
    url = f"redis://{redis.address}/0"
    with baseline("fastapi_cashews", "--redis", url, log=tmp_path / "cashews.log") as port:
        before = redis_command(redis.address, "INFO", "stats")
        _, first = get_dashboard(port)
        after_miss = redis_command(redis.address, "INFO", "stats")
        _, second = get_dashboard(port)
        after_hit = redis_command(redis.address, "INFO", "stats")
        keys = redis_command(redis.address, "KEYS", "*")
        ttl = redis_command(redis.address, "TTL", keys[0]) if keys else None
    assert len(keys) == 1, keys  # the one view, stored by cashews' decorator
    assert ttl is not None and 0 < ttl <= 20
    assert _stat(after_miss, "keyspace_misses") - _stat(before, "keyspace_misses") >= 1
    assert _stat(after_hit, "keyspace_hits") - _stat(after_miss, "keyspace_hits") >= 1
    assert _stat(after_hit, "keyspace_misses") == _stat(after_miss, "keyspace_misses")
    assert first == second  # the cached dict, serialized again


def redis_command(address: str, *args: str | bytes):
    """One command over RESP2: an int, bytes (a bulk string, also INFO's text), or a list."""
    host, _, port = address.rpartition(":")
    parts = [a.encode() if isinstance(a, str) else a for a in args]
    request = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(a), a) for a in parts)
    with socket.create_connection((host, int(port)), timeout=REQUEST_SECONDS) as sock:
        sock.sendall(request)
        with sock.makefile("rb") as reader:
            return _reply(reader)


def _reply(reader):
    line = reader.readline()
    kind, rest = line[:1], line[1:-2]
    if kind == b"-":
        raise AssertionError(f"redis error: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"+":
        return rest
    if kind == b"$":
        return None if int(rest) < 0 else reader.read(int(rest) + 2)[:-2]
    if kind == b"*":
        return [_reply(reader) for _ in range(int(rest))]
    raise AssertionError(f"unexpected redis reply {line!r}")


def _stat(info: bytes, name: str) -> int:
    for line in info.decode().splitlines():
        key, _, value = line.partition(":")
        if key == name:
            return int(value)
    raise AssertionError(f"{name} not in INFO")
