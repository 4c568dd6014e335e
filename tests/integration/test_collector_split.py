"""The two roles as real processes: ``virtuoso collect`` and ``virtuoso serve`` with
``VIRTUOSO_COLLECTOR=external``, on one Redis and one Memcached.

The server serves what the collector publishes, asks it for cold reads, never loads the
market machinery; it keeps answering (stale-marked, readiness degraded) while no
collector runs and recovers by itself; of two collectors one leads and the other takes
over when the leader is killed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis as redis_sync

from app.backends.local_channel import connect
from app.cache.policy import load_policy
from app.settings import DEFAULT_CACHE_POLICY
from tests.support.serve import alive, get_json, start_serve, stop, wait_until_ready
from tests.support.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
COLLECT = [sys.executable, "-m", "app", "collect"]
WAIT_SECONDS = 90.0  # bounds every wait below: generous for a busy machine
NAMESPACE = load_policy(DEFAULT_CACHE_POLICY).namespace
STATUS_KEY = f"{NAMESPACE}:collector:status"
REQUESTS_CHANNEL = f"{NAMESPACE}:collector:requests"
LEASE_KEY = f"{NAMESPACE}:lock:leader:collector"
# The collectors' leader lease (5 s in production): a standby, or the child restarted after
# a kill, waits it out. 3 s leaves a leader 1.4 s of event-loop stall before it loses the
# lead (it renews every second and stops acting 0.6 s before the lease runs out).
LEASE_SECONDS = "3"
# The market of every process here: the symbols the tests read, not the default 25 (each
# collector refreshes every 2 s, and its refresh's work grows with the symbols).
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def wait_for(what: str, check: Callable[[], Any], seconds: float = WAIT_SECONDS) -> Any:
    """Polls ``check`` until it returns something truthy; fails naming ``what``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds:.0f} s: {what}")


@pytest.fixture
def shared(redis, memcached, tmp_path) -> dict[str, str]:
    """The variables both roles share: the tiers, a short refresh and lease, a data
    directory."""
    return {
        "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
        "VIRTUOSO_MEMCACHED_URL": memcached.address,
        "VIRTUOSO_REFRESH_SECONDS": "2",
        "VIRTUOSO_COLLECTOR_LEASE_SECONDS": LEASE_SECONDS,
        "VIRTUOSO_SYMBOLS": SYMBOLS,
        "VIRTUOSO_REDIS_TIMEOUT_SECONDS": "5",
        "VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS": "5",
        "VIRTUOSO_DATA_DIR": str(tmp_path),
    }


class Processes:
    """Collectors and servers started by one test, all stopped at its end."""

    def __init__(self, shared: dict[str, str]) -> None:
        self.shared = shared
        self.started: list[subprocess.Popen] = []

    def collector(self, replica: str) -> subprocess.Popen:
        environ = os.environ | self.shared | {"VIRTUOSO_REPLICA_ID": replica}
        process = subprocess.Popen(COLLECT, env=environ, cwd=ROOT, stderr=subprocess.DEVNULL)
        self.started.append(process)
        return process

    def server(self) -> tuple[str, subprocess.Popen]:
        port = free_port()
        environ = self.shared | {
            "VIRTUOSO_COLLECTOR": "external",
            "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        }
        process = start_serve(environ, cwd=ROOT)
        self.started.append(process)
        base = f"http://127.0.0.1:{port}"
        wait_until_ready(base, process, timeout=WAIT_SECONDS)
        return base, process

    def stop_all(self) -> None:
        """SIGTERM to every one at once (they stop side by side), then each awaited by
        ``stop`` (its SIGTERM again changes nothing; SIGKILL after the grace)."""
        for process in self.started:
            if process.poll() is None:
                process.terminate()
        for process in self.started:
            stop(process)


@pytest.fixture
def processes(shared) -> Iterator[Processes]:
    started = Processes(shared)
    try:
        yield started
    finally:
        started.stop_all()


def loaded_libraries(pid: int) -> str:
    """The shared objects mapped into process ``pid`` (its /proc maps)."""
    return Path(f"/proc/{pid}/maps").read_text()


def collector_report(redis) -> dict[str, Any] | None:
    client = redis_sync.Redis.from_url(f"redis://{redis.address}/0")
    try:
        raw = client.get(STATUS_KEY)
    finally:
        client.close()
    return None if raw is None else orjson.loads(raw)


def test_the_server_serves_what_the_collector_publishes(processes, redis) -> None:
    collector = processes.collector("collector-a")
    base, server = processes.server()
    status, body = get_json(f"{base}/api/dashboard/data")
    assert status == 200 and body["source"] == "simulated" and not body["stale"]
    # A timeframe nobody read yet: the server asks the collector for it.
    status, candles = get_json(f"{base}/api/market/candles/ETHUSDT?timeframe=30m")
    assert status == 200 and len(candles["candles"]) > 10
    status, health = get_json(f"{base}/health/ready")
    assert status == 200 and health["status"] == "ok", health
    # The server never loaded numpy (nor TA-Lib); the collector did (the check sees it).
    assert "numpy" not in loaded_libraries(server.pid)
    assert "numpy" in loaded_libraries(collector.pid)
    report = collector_report(redis)
    assert report is not None and report["collector_id"] == "collector-a"


def test_without_a_collector_the_server_serves_stale_and_recovers(processes, shared) -> None:
    # Gone after 3 s without a report (5 s in production); a report is due every second.
    shared["VIRTUOSO_COLLECTOR_SILENCE_SECONDS"] = "3"
    first = processes.collector("collector-a")
    base, _ = processes.server()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=10)

    def degraded() -> dict | None:
        status, health = get_json(f"{base}/health/ready")
        assert status == 200, health  # data can still be served
        gone = any("collector not heard from" in r for r in health.get("reasons", []))
        return health if health["status"] == "degraded" and gone else None

    wait_for("readiness degraded naming the silent collector", degraded)
    # Marked stale as soon as the collector is known gone, not only past the TTL (30 s).
    for view in ("market/overview", "dashboard/data", "market/movers"):
        status, body = get_json(f"{base}/api/{view}")
        assert status == 200 and body["stale"] is True, (view, body.get("age_ms"))

    def stale_but_served() -> bool:
        status, body = get_json(f"{base}/api/dashboard/data")
        assert status == 200, body  # never a 5xx while a copy exists
        return bool(body["stale"])

    wait_for("the dashboard marked stale", stale_but_served)
    processes.collector("collector-b")

    def fresh_again() -> bool:
        status, health = get_json(f"{base}/health/ready")
        _, body = get_json(f"{base}/api/dashboard/data")
        return status == 200 and health["status"] == "ok" and not body["stale"]

    wait_for("fresh data and readiness ok after a collector returned", fresh_again)


def test_warm_without_a_collector_answers_with_the_copies_not_a_500(processes, shared) -> None:
    """POST /api/cache/warm starts with a refresh the collector must do: with the
    collector gone, the copies in the tiers are warmed (named stale), never a 500."""
    token = "warm-admin-token-0123456789"
    shared["VIRTUOSO_ADMIN_TOKEN"] = token
    collector = processes.collector("collector-a")
    base, _ = processes.server()
    collector.send_signal(signal.SIGKILL)
    collector.wait(timeout=10)
    wait_for("no collector listening", lambda: not collector_listening(shared))
    status, report = post_json(f"{base}/api/cache/warm", {}, token)
    assert status == 200, report
    assert "dashboard:desktop" in report["warmed"]


def collector_listening(shared: dict[str, str]) -> bool:
    client = redis_sync.Redis.from_url(shared["VIRTUOSO_REDIS_URL"])
    try:
        listeners = client.pubsub_numsub(REQUESTS_CHANNEL)
    finally:
        client.close()
    return bool(listeners and listeners[0][1])


class ReportWatch(threading.Thread):
    """Reads the collectors' status report every 50 ms until stopped; ``seen`` holds
    each distinct report as ``(collector_id, heartbeat_ms)``, in order."""

    def __init__(self, redis) -> None:
        super().__init__(name="report-watch", daemon=True)
        self.redis = redis
        self.seen: list[tuple[str, int]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            report = collector_report(self.redis)
            if report is not None:
                seen = (report["collector_id"], report["heartbeat_ms"])
                if seen not in self.seen:
                    self.seen.append(seen)
            self.done.wait(0.05)

    def stop(self) -> list[tuple[str, int]]:
        self.done.set()
        self.join(timeout=10)
        return self.seen


def test_a_standby_collector_takes_over_when_the_leader_dies(processes, redis) -> None:
    watch = ReportWatch(redis)
    watch.start()
    try:
        collectors = {name: processes.collector(name) for name in ("collector-a", "collector-b")}
        base, _ = processes.server()
        # several reports (the server's start-up spans a few): the standby must not be
        # writing them meanwhile
        wait_for("several status reports", lambda: len(watch.seen) >= 3)
    finally:
        reports = watch.stop()
    leader = reports[0][0]
    assert [name for name, _ in reports] == [leader] * len(reports), reports
    standby = next(name for name in collectors if name != leader)
    client = redis_sync.Redis.from_url(f"redis://{redis.address}/0")
    try:  # the lease the standby waits out is the configured one
        assert 0 < client.pttl(LEASE_KEY) <= float(LEASE_SECONDS) * 1000
    finally:
        client.close()
    collectors[leader].send_signal(signal.SIGKILL)
    collectors[leader].wait(timeout=10)
    killed_at_ms = time.time() * 1000

    def standby_leads() -> bool:
        report = collector_report(redis)
        return report is not None and report["collector_id"] == standby

    wait_for("the standby's status reports", standby_leads)

    def data_after_the_kill() -> bool:
        _, body = get_json(f"{base}/api/dashboard/data")
        return body["generated_at"] > killed_at_ms and not body["stale"]

    wait_for("data generated after the leader died", data_after_the_kill)


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children."""
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(child) for child in text.split()]


def stops(what: str, pid: int, seconds: float = WAIT_SECONDS) -> None:
    """Waits until process ``pid`` is gone; failing that, kills it (a collector left
    running would write into the next tests' Redis and Memcached) and fails."""
    try:
        wait_for(what, lambda: not alive(pid), seconds)
    except AssertionError:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        raise


def test_a_server_keeps_its_collector_child_running_and_stops_it(shared) -> None:
    port = free_port()
    environ = shared | {"VIRTUOSO_COLLECTOR": "child", "VIRTUOSO_BIND": f"127.0.0.1:{port}"}
    server = start_serve(environ, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server, timeout=WAIT_SECONDS)
        (first,) = wait_for("the collector child", lambda: children(server.pid))
        assert "numpy" in loaded_libraries(first)
        assert "numpy" not in loaded_libraries(server.pid)
        os.kill(first, signal.SIGKILL)
        killed_at_ms = time.time() * 1000
        (second,) = wait_for(
            "a new collector child", lambda: [c for c in children(server.pid) if c != first]
        )

        def data_after_the_kill() -> bool:
            status, body = get_json(f"{base}/api/dashboard/data")
            assert status == 200, body
            return body["generated_at"] > killed_at_ms and not body["stale"]

        wait_for("data the restarted child generated", data_after_the_kill)
    finally:
        assert stop(server) == 0
    # stopped with its server: the server waits for it, and the kernel signals it when
    # the server is gone (PR_SET_PDEATHSIG) should the server's own stop be cut short
    stops("the collector child stopped with its server", second, 15)


def test_a_killed_servers_collector_child_stops_too(shared) -> None:
    port = free_port()
    environ = shared | {"VIRTUOSO_COLLECTOR": "child", "VIRTUOSO_BIND": f"127.0.0.1:{port}"}
    server = start_serve(environ, cwd=ROOT)
    try:
        (child,) = wait_for(
            "the collector child", lambda: alive(server.pid) and children(server.pid)
        )
    finally:
        server.kill()
        server.wait(timeout=10)
    stops("the orphaned child to stop", child)


def test_a_killed_servers_child_removes_the_local_channels_socket(tmp_path) -> None:
    """No Redis: the server killed (it cannot clean up), its child stops and removes the
    socket and its private directory rather than leaving them in the temp directory."""
    port = free_port()
    environ = {
        "VIRTUOSO_COLLECTOR": "child",
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_DATA_DIR": str(tmp_path),
        "VIRTUOSO_SYMBOLS": SYMBOLS,
    }
    server = start_serve(environ, cwd=ROOT)
    try:
        wait_until_ready(f"http://127.0.0.1:{port}", server, timeout=WAIT_SECONDS)
        (child,) = children(server.pid)
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        socket = Path(argv[argv.index(b"--channel") + 1].decode())
        wait_for("the channel's socket", socket.exists)
    finally:
        server.kill()
        server.wait(timeout=10)
    stops("the orphaned child to stop", child)
    assert not socket.exists()
    assert not socket.parent.exists()


def post_json(url: str, body: dict, token: str) -> tuple[int, Any]:
    request = urllib.request.Request(
        url,
        data=orjson.dumps(body),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, orjson.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, orjson.loads(error.read())


async def refused_at_once(path: str) -> bool:
    """True when the server closes a channel this process opens to its socket."""
    channel = await connect(path)
    try:
        async with asyncio.timeout(WAIT_SECONDS):
            await channel.closed.wait()
        return True
    finally:
        await channel.close()


def test_without_redis_the_child_works_over_a_local_channel(tmp_path) -> None:
    """No Redis: the child's views land in the server's in-process tier, its alerts come
    from the server's store (a file the server alone writes), and a killed child is
    restarted and reconnects."""
    port, token, metrics_port = free_port(), "channel-test-token-0123456789", free_port()
    environ = {
        "VIRTUOSO_COLLECTOR": "child",
        "VIRTUOSO_COLLECTOR_MONITORING_BIND": f"127.0.0.1:{metrics_port}",
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_REFRESH_SECONDS": "2",
        "VIRTUOSO_DATA_DIR": str(tmp_path),
        "VIRTUOSO_API_TOKEN": token,
        "VIRTUOSO_SYMBOLS": SYMBOLS,
    }
    server = start_serve(environ, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, server, timeout=WAIT_SECONDS)
        status, body = get_json(f"{base}/api/dashboard/data")
        assert status == 200 and body["source"] == "simulated"
        status, candles = get_json(f"{base}/api/market/candles/SOLUSDT?timeframe=30m")
        assert status == 200 and candles["candles"]
        rule = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 1, "level": "info"}
        status, created = post_json(f"{base}/api/alerts/rules", rule, token)
        assert status == 201, created

        def fired() -> list:
            _, page = get_json(f"{base}/api/alerts?limit=5")
            return [a for a in page["alerts"] if a["rule_id"] == created["rule"]["id"]]

        wait_for("the child's evaluation firing the server's rule", fired)
        # Another process of the same user finds the socket: refused, the child unharmed.
        (child,) = children(server.pid)
        argv = Path(f"/proc/{child}/cmdline").read_bytes().split(b"\0")
        socket_path = argv[argv.index(b"--channel") + 1].decode()
        assert asyncio.run(refused_at_once(socket_path))
        assert (tmp_path / "alerts.json").exists()
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as r:
            scraped = r.read().decode()
        assert 'virtuoso_pipeline_refresh_duration_seconds_count{outcome="ok"}' in scraped
        assert "virtuoso_collector_leading 1.0" in scraped  # a child leads from the start
        assert "# TYPE virtuoso_exchange_data_quality_total counter" in scraped
        (first,) = children(server.pid)
        os.kill(first, signal.SIGKILL)
        killed_at_ms = time.time() * 1000

        def fresh_from_a_new_child() -> bool:
            _, body = get_json(f"{base}/api/dashboard/data")
            return body["generated_at"] > killed_at_ms and first not in children(server.pid)

        wait_for("data from the restarted child", fresh_from_a_new_child)
    finally:
        assert stop(server) == 0


def test_a_child_that_keeps_exiting_is_named_in_readiness(tmp_path) -> None:
    """A child that cannot start (its metrics port is taken) is restarted with back-off,
    and readiness says so rather than only "first snapshot in progress"."""
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = free_port()
    environ = {
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_DATA_DIR": str(tmp_path),
        "VIRTUOSO_COLLECTOR_MONITORING_BIND": f"127.0.0.1:{taken.getsockname()[1]}",
    }
    server = start_serve(environ, cwd=ROOT)
    base = f"http://127.0.0.1:{port}"
    try:

        def named() -> list[str]:
            try:
                status, health = get_json(f"{base}/health/ready")
            except (urllib.error.URLError, ConnectionError):
                return []
            assert status == 503, health
            return [r for r in health["reasons"] if "collector child exited" in r]

        (reason,) = wait_for("readiness naming the crash loop", named)
        assert "times in a row" in reason
    finally:
        stop(server)
        taken.close()
