"""The real thing: `virtuoso serve` on hypercorn, on a free loopback port, stopped by SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.serve import SERVE, get_json, start_serve, wait_until_ready
from tests.support.servers import free_port


@pytest.fixture
def server() -> Iterator[tuple[str, subprocess.Popen]]:
    port = free_port()
    environ = {"VIRTUOSO_BIND": f"127.0.0.1:{port}", "VIRTUOSO_REFRESH_SECONDS": "2"}
    process = start_serve(environ, stderr=subprocess.PIPE)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until_ready(base, process)
        yield base, process
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_serves_the_api_and_stops_on_sigterm(server: tuple[str, subprocess.Popen]) -> None:
    base, process = server
    status, health = get_json(f"{base}/health")
    assert status == 200 and health["simulated"] is True
    status, desktop = get_json(f"{base}/api/dashboard/data")
    assert status == 200 and len(desktop["symbols"]) == 25
    status, error = get_json(f"{base}/api/confluence/NOPE")
    assert status == 404 and error["error"] == "unknown_symbol"
    first_version = desktop["version"]
    deadline = time.monotonic() + 15
    while get_json(f"{base}/api/dashboard/data")[1]["version"] == first_version:
        assert time.monotonic() < deadline, "no refresh within 15 s at a 2 s interval"
        time.sleep(0.2)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=15) == 0
    assert "SIMULATED" in process.stderr.read()


def test_an_inconsistent_cache_policy_stops_start_up(tmp_path) -> None:
    policy = tmp_path / "cache.yaml"
    shipped = (Path(__file__).parents[2] / "config" / "cache.yaml").read_text()
    policy.write_text(
        shipped.replace(
            "  signals:            # dashboard:signals\n    ttl: 30",
            "  signals:            # dashboard:signals\n    ttl: 90",
        )
    )
    env = os.environ | {"VIRTUOSO_CACHE_POLICY": str(policy)}
    result = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "signals ttl 90 s outlives confluence ttl 30 s" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_refresh_interval_the_policy_does_not_fit_stops_a_child_servers_start_up() -> None:
    """The collector child would refuse it and be restarted forever while the server
    reported only "first snapshot in progress": the server refuses it first."""
    env = os.environ | {"VIRTUOSO_COLLECTOR": "child", "VIRTUOSO_REFRESH_SECONDS": "120"}
    result = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "min_ttl 30 s is under 1.5 × refresh_seconds (180 s)" in result.stderr
    assert "Traceback" not in result.stderr


def test_invalid_configuration_stops_start_up_with_one_message() -> None:
    env = os.environ | {"VIRTUOSO_EXCHANGE": "nowhere"}
    result = subprocess.run(SERVE, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("virtuoso: invalid configuration: VIRTUOSO_EXCHANGE='nowhere'")
    assert "bybit" in lines[0]
