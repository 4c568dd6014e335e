"""The processes a benchmark run starts — Memcached, Redis, the fake exchange, our
service and the servers it is compared with — on free loopback ports, and their CPU
and memory as the operating system counts them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psutil

from tools.local_stack import Process
from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
RATE_LIMITS_OFF = ROOT / "config" / "ratelimits-off.yaml"
ADMIN_TOKEN = "bench-admin-token-0123456789"
STARTUP_SECONDS = 60.0


@dataclass
class Usage:
    """CPU seconds and resident memory of one process at one moment."""

    cpu_seconds: float
    rss_bytes: int


def usage(process: Process | Exchange) -> Usage:
    assert process.popen is not None
    ps = psutil.Process(process.popen.pid)
    times = ps.cpu_times()
    return Usage(times.user + times.system, ps.memory_info().rss)


def start(process: Process, log_dir: Path) -> Process:
    process.start(log_dir)
    process.wait_listening(time.monotonic() + STARTUP_SECONDS)
    return process


def memcached(log_dir: Path, memory_mb: int = 256) -> Process:
    port = free_port()
    argv = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-m", str(memory_mb), "-U", "0"]
    argv += ["-c", "8192"] + (["-u", "root"] if os.geteuid() == 0 else [])
    return start(Process("memcached", argv, port), log_dir)


def redis(log_dir: Path) -> Process:
    port = free_port()
    argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    argv += ["--appendonly", "no", "--maxmemory", "512mb", "--maxmemory-policy", "volatile-lru"]
    argv += ["--dir", str(log_dir)]
    return start(Process("redis", argv, port), log_dir)


@dataclass
class Exchange:
    popen: subprocess.Popen
    url: str
    control: str

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()


def exchange() -> Exchange:
    """The fake Bybit in its own process (so it does not share the load generator's CPU)."""
    popen = subprocess.Popen(
        [sys.executable, "-m", "bench.exchange"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert popen.stdout is not None
    urls = json.loads(popen.stdout.readline())
    return Exchange(popen, urls["exchange"], urls["control"])


def service(
    log_dir: Path,
    name: str,
    exchange_url: str,
    memcached_address: str,
    redis_address: str,
    extra_env: dict[str, str] | None = None,
) -> Process:
    """`virtuoso serve` on ccxt → the fake exchange, with both shared tiers, its collector
    in the same process (``embedded``: the scenarios read the exchange and refresh
    counters from this one process; ``roles`` compares it with the split)."""
    port = free_port()
    env = {
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_COLLECTOR": "embedded",
        "VIRTUOSO_EXCHANGE": "bybit",
        "VIRTUOSO_EXCHANGE_URL": exchange_url,
        "VIRTUOSO_MEMCACHED_URL": memcached_address,
        "VIRTUOSO_REDIS_URL": f"redis://{redis_address}/0",
        "VIRTUOSO_RATE_LIMITS": str(RATE_LIMITS_OFF),
        "VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN,
        "VIRTUOSO_SECRET_KEY": "bench-secret-key-0123456789abcdef",
        "VIRTUOSO_DATA_DIR": str(log_dir / f"{name}-data"),
        "VIRTUOSO_REPLICA_ID": name,
    } | (extra_env or {})
    virtuoso = str(Path(sys.executable).with_name("virtuoso"))
    return start(Process(name, [virtuoso, "serve"], port, env), log_dir)


def baseline(log_dir: Path, module: str, *flags: str) -> Process:
    """One of bench/baselines (ceiling, naive, fastapi_cashews) on a free port."""
    port = free_port()
    argv = [sys.executable, "-m", f"bench.baselines.{module}", "--port", str(port), *flags]
    process = Process(module, argv, port)
    process.env = {"PYTHONPATH": str(ROOT)}
    return start(process, log_dir)


def tier_env(memcached_address: str, redis_address: str, redis_db: int = 0) -> dict[str, str]:
    """The variables every role shares: the tiers, the limits off, secrets for the bench."""
    return {
        "VIRTUOSO_MEMCACHED_URL": memcached_address,
        "VIRTUOSO_REDIS_URL": f"redis://{redis_address}/{redis_db}",
        "VIRTUOSO_RATE_LIMITS": str(RATE_LIMITS_OFF),
        "VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN,
        "VIRTUOSO_SECRET_KEY": "bench-secret-key-0123456789abcdef",
    }


def collector(log_dir: Path, name: str, exchange_url: str, env: dict[str, str]) -> Process:
    """`virtuoso collect` on ccxt → the fake exchange, its Prometheus metrics on a free
    port (``Process.port``: started once that port listens). ``env``: see tier_env."""
    port = free_port()
    environ = env | {
        "VIRTUOSO_EXCHANGE": "bybit",
        "VIRTUOSO_EXCHANGE_URL": exchange_url,
        "VIRTUOSO_DATA_DIR": str(log_dir / f"{name}-data"),
        "VIRTUOSO_REPLICA_ID": name,
    }
    argv = [sys.executable, "-m", "app", "collect", "--monitoring-bind", f"127.0.0.1:{port}"]
    process = Process(name, argv, port, environ)
    return start(process, log_dir)


def external_server(
    log_dir: Path, name: str, env: dict[str, str], argv_prefix: tuple[str, ...] = ()
) -> Process:
    """`virtuoso serve` with VIRTUOSO_COLLECTOR=external: serving only, from the tiers a
    separate `virtuoso collect` fills. ``argv_prefix`` runs it under e.g. cProfile
    (``python -m cProfile -o FILE``; the module ``app`` is appended)."""
    port = free_port()
    environ = env | {
        "VIRTUOSO_COLLECTOR": "external",
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_DATA_DIR": str(log_dir / f"{name}-data"),
        "VIRTUOSO_REPLICA_ID": name,
    }
    prefix = list(argv_prefix) or [sys.executable]
    argv = [*prefix, "-m", "app", "serve"]
    return start(Process(name, argv, port, environ), log_dir)


def tree_rss(process: Process) -> int:
    """Resident bytes of ``process`` and all its descendants (memory cannot hide in a
    child); 0 for a process that is gone."""
    assert process.popen is not None
    try:
        root = psutil.Process(process.popen.pid)
        members = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for member in members:
        try:
            total += member.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total
