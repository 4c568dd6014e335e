"""WebSocket fan-out on the realtime endpoint alone (``bench/ws_server.py``): N reading
clients and one stalled client on the market channel, bursts of updates (one per
moving symbol) published at a fixed period, publish → receive latency at every client,
and the serving process's CPU per client and frame — for the service's direct writes
and for the queued path before them, side by side in one run.

    python -m bench.ws_fanout [--clients 1000] [--burst 10] [--period 1] [--seconds 10]
                              [--paths direct,queued] [--shards 2]
                              [--servers 1] [--publisher redis|http] [--redis URL]
                              [--profile DIR]

``--paths`` (``PATHS``): ``direct`` is the service as it is, ``direct-gc-default`` the
same with CPython's collector thresholds instead of the serving process's
(``app.main.gc_policy``), ``queued`` the path before both: every frame through the
per-connection queue and sender task (``direct_write_bytes=0``); each runs on a fresh
server. ``--publisher redis`` (the default)
publishes from this process into Redis with the service's broker, as the collector
does, and the server hands what its listener receives to its clients; ``http`` asks
the server to publish in-process. Without ``--redis`` a redis-server is started.
``--servers 2``: two serving processes share the clients (shard i on server i mod 2),
both listening to Redis, as two replicas behind the proxy would. ``--profile DIR``: the
servers run under cProfile (slower) and their stats go to ``DIR/<path>-<n>.pstats``.

The readers are lean raw-socket clients (``bench/loadgen/ws_raw.py``) split over
``--shards`` processes; the stalled client (``bench/loadgen/ws.py``: a 4 KiB receive
buffer, stops reading 0.5 s after subscribing) is in the first shard. Publishing
starts once every shard's readers are subscribed and the server counts every
connection, and lasts ``--seconds``. Per path the row has: reach, the latency of
every (message, client), per message the latency to its *first* client and its
*spread* (last − first client), and ``server_us_per_frame``: the server's CPU seconds
from the first publish to the end of the window (its own count, psutil) ÷ the update
frames it sent meanwhile — what one client costs per message.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import uvloop
from redis.asyncio import Redis

from app.realtime import protocol
from app.realtime.broker import Broker
from app.realtime.connection import RealtimeStats
from bench import procs
from bench.loadgen.stats import LatencySummary, cpu_seconds
from bench.loadgen.ws import ws_fanout
from bench.loadgen.ws_raw import raw_fanout
from bench.ws_server import BENCH_KEYSPACE, MARKET
from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
# The server's environment per path (bench/ws_server.py): the service as it is; the same
# with CPython's collector thresholds; the path before direct writes, as it was landed
# (every frame through the connection's queue and sender task, CPython's thresholds).
PATHS: dict[str, dict[str, str]] = {
    "direct": {},
    "direct-gc-default": {"BENCH_WS_GC": "default"},
    "queued": {"BENCH_WS_DIRECT_BYTES": "0", "BENCH_WS_GC": "default"},
}
STARTUP_SECONDS = 30.0
READY_SECONDS = 60.0  # every shard's clients connected and subscribed
WINDOW_SLACK_SECONDS = 3.0  # a shard's window beyond the publishing time
GRACE_SECONDS = 1.5  # after the last publish: the last frames travel
SHARD_SLACK_SECONDS = 60.0  # connects + closes of a shard, beyond its window
READY_LINE = b"ready\n"

Publish = Callable[[int], Awaitable[None]]


async def _wait_listening(base: str, session: aiohttp.ClientSession, redis: bool) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/stats") as response:
                if response.status == 200:
                    stats = await response.json()
                    if not redis or (stats.get("redis") or {}).get("listening"):
                        return
        await asyncio.sleep(0.2)
    raise RuntimeError("the bench WebSocket server did not start (or listen to Redis)")


async def _stats(base: str, session: aiohttp.ClientSession) -> dict[str, Any]:
    async with session.get(f"{base}/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


def http_publisher(base: str, session: aiohttp.ClientSession) -> Publish:
    """A burst published by the server itself (``POST /publish``)."""

    async def publish(burst: int) -> None:
        async with session.post(f"{base}/publish", params={"n": str(burst)}) as response:
            await response.read()

    return publish


def redis_publisher(broker: Broker) -> Publish:
    """A burst published into Redis by the service's broker, one update after the
    other (as the collector announces them), stamped with this process's clock."""

    async def publish(burst: int) -> None:
        at_ms = int(time.time() * 1000)
        for i in range(burst):
            published_at = time.time()
            data = MARKET | {"price": at_ms % 1000 + i}
            head, tail = protocol.update_parts("market", f"S{i}", at_ms, data, published_at)
            await broker.publish("market", head, tail, published_at)

    return publish


async def _publish_for(publish: Publish, burst: int, period: float, seconds: float) -> int:
    """A burst every ``period`` seconds for ``seconds``; returns the bursts."""
    bursts = 0
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        await publish(burst)
        bursts += 1
        next_at = started + bursts * period
        await asyncio.sleep(max(0.0, next_at - time.monotonic()))
    return bursts


class Shard:
    """One load-generator process (``python -m <module> --shard <args>``): it prints
    ``READY_LINE`` when its window starts, then its result as JSON, within
    ``seconds`` + ``SHARD_SLACK_SECONDS``."""

    def __init__(self, module: str, args: list[str], seconds: float) -> None:
        self.argv = [sys.executable, "-m", module, "--shard", *args]
        self.seconds = seconds
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            *self.argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
        )

    async def ready(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        line = await self.proc.stdout.readline()
        if line != READY_LINE:
            raise RuntimeError(f"a load-generator shard failed before its window: {line!r}")

    async def result(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            async with asyncio.timeout(self.seconds + SHARD_SLACK_SECONDS):
                out = await self.proc.stdout.read()
                await self.proc.wait()
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
            raise
        result: dict[str, Any] = json.loads(out)
        return result

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


def fanout_shard(url: str, readers: int, stalled: bool, seconds: float) -> Shard:
    """A shard of this scenario: ``readers`` clients of ``url`` (and one that never
    reads when ``stalled``) for ``seconds``."""
    return Shard("bench.ws_fanout", [url, str(readers), str(int(stalled)), str(seconds)], seconds)


def pool(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the shards' results."""
    latencies = [ms for shard in shards for ms in shard["latencies_ms"]]
    first: dict[str, float] = {}
    last: dict[str, float] = {}
    for shard in shards:
        for key, ms in shard["first_ms"].items():
            first[key] = min(ms, first.get(key, math.inf))
        for key, ms in shard["last_ms"].items():
            last[key] = max(ms, last.get(key, -math.inf))
    received = sum(s["received"] for s in shards)
    connected = sum(s["connected"] for s in shards)
    distinct = len(first)
    expected = distinct * connected
    stalled_codes: dict[str, int] = {}
    for shard in shards:
        for code, n in shard["stalled_close_codes"].items():
            stalled_codes[code] = stalled_codes.get(code, 0) + n
    return {
        "connected": connected,
        "failed": sum(s["failed"] for s in shards),
        "distinct_messages": distinct,
        "reach": round(received / expected, 4) if expected else None,
        "latency_ms": LatencySummary.from_ms(latencies),
        "first_client_ms": LatencySummary.from_ms(first.values()),
        "spread_ms": LatencySummary.from_ms(last[k] - first[k] for k in first),
        "stalled_close_codes": stalled_codes,
        "stalled_open_at_end": sum(s["stalled_open_at_end"] for s in shards),
        "loadgen_cpu_seconds": round(sum(s["cpu_seconds"] for s in shards), 3),
    }


async def run_path(
    path: str,
    *,
    clients: int = 1000,
    burst: int = 10,
    period: float = 1.0,
    seconds: float = 10.0,
    shards: int = 2,
    servers: int = 1,
    redis_url: str | None = None,
    profile_dir: Path | None = None,
) -> dict[str, Any]:
    """One path (``PATHS``) on fresh servers: the pooled row and the servers' CPU per
    frame. ``servers`` > 1: that many serving processes, shard i's clients on server
    i mod ``servers`` (needs ``redis_url``). ``redis_url``: publish through that Redis
    (None: the server publishes)."""
    if servers > 1 and redis_url is None:
        raise ValueError("several servers hear the publisher through Redis only")
    env = dict(PATHS[path])
    if redis_url is not None:
        env["BENCH_WS_REDIS"] = redis_url
    ports = [free_port() for _ in range(servers)]
    procs_: list[asyncio.subprocess.Process] = []
    try:
        for n, port in enumerate(ports):
            if profile_dir is not None:  # main() creates it
                env["BENCH_WS_PROFILE"] = str(profile_dir / f"{path}-{n}.pstats")
            procs_.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    "-m",
                    "bench.ws_server",
                    str(port),
                    cwd=ROOT,
                    env={**os.environ, **env},
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        targets = [(port, proc.pid) for port, proc in zip(ports, procs_, strict=True)]
        row = await _measure(targets, clients, burst, period, seconds, shards, redis_url)
    finally:
        for proc in procs_:
            await _stop(proc)
    publisher = "redis" if redis_url else "http"
    return {"path": path, "publisher": publisher, "servers": servers, **row}


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.terminate()
        try:
            async with asyncio.timeout(20):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


async def _measure(
    targets: list[tuple[int, int]],
    clients: int,
    burst: int,
    period: float,
    seconds: float,
    shard_count: int,
    redis_url: str | None,
) -> dict[str, Any]:
    """``targets``: (port, pid) of each server."""
    bases = [f"http://127.0.0.1:{port}" for port, _ in targets]
    redis = Redis.from_url(redis_url) if redis_url else None
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
        for base in bases:
            await _wait_listening(base, session, redis is not None)
        if redis is not None:
            broker = Broker(lambda *_: None, RealtimeStats(), redis, keyspace=BENCH_KEYSPACE)
            publish = redis_publisher(broker)
        else:
            publish = http_publisher(bases[0], session)
        per = math.ceil(clients / shard_count)
        counts = [min(per, clients - i * per) for i in range(shard_count)]
        window = seconds + WINDOW_SLACK_SECONDS
        shards = [
            fanout_shard(f"ws://127.0.0.1:{targets[i % len(targets)][0]}/ws", n, i == 0, window)
            for i, n in enumerate(counts)
        ]
        servers = [psutil.Process(pid) for _, pid in targets]

        async def all_stats() -> list[dict[str, Any]]:
            return [await _stats(base, session) for base in bases]

        try:
            for shard in shards:
                await shard.start()
            async with asyncio.timeout(READY_SECONDS):
                await asyncio.gather(*(shard.ready() for shard in shards))
                while sum(s["connections"] for s in await all_stats()) < clients + 1:  # noqa: ASYNC110 (other processes' counts)
                    await asyncio.sleep(0.1)
            before, cpu_before = await all_stats(), sum(map(_cpu, servers))
            bursts = await _publish_for(publish, burst, period, seconds)
            await asyncio.sleep(GRACE_SECONDS)
            after, cpu_after = await all_stats(), sum(map(_cpu, servers))
            results = await asyncio.gather(*(shard.result() for shard in shards))
        finally:
            for shard in shards:
                await shard.kill()
            if redis is not None:
                await redis.aclose()
    frames = _total(after, "sent") - _total(before, "sent")
    direct = _total(after, "direct") - _total(before, "direct")
    cpu = cpu_after - cpu_before
    latencies = [s["latency_seconds"] for s in after if s.get("latency_seconds")]
    return {
        "clients": clients,
        "burst": burst,
        "bursts": bursts,
        **pool(list(results)),
        "server_cpu_seconds": round(cpu, 3),
        "server_frames": frames,
        "server_direct": direct,
        "server_us_per_frame": round(cpu / frames * 1e6, 2) if frames else None,
        "server_latency_s": max(latencies, key=lambda s: s["p99"]) if latencies else None,
        "server_coalesced": [s.get("coalesced") for s in after],
        "server_trace": [s.get("trace") for s in after],
    }


def _total(stats: list[dict[str, Any]], counter: str) -> int:
    """The market channel's ``counter`` summed over the servers."""
    return sum(int(s[counter].get("market", 0)) for s in stats)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


async def compare(
    paths: list[str], redis_url: str | None = None, **options: Any
) -> list[dict[str, Any]]:
    """``run_path`` for each path in turn (fresh servers, same settings)."""
    return [await run_path(path, redis_url=redis_url, **options) for path in paths]


async def shard_main(url: str, readers: int, stalled: int, seconds: float) -> None:
    """A shard: ``readers`` raw readers (+ ``stalled`` stalled clients), prints
    ``READY_LINE`` when its window opens, then its result as one JSON document."""

    def announce() -> None:
        sys.stdout.buffer.write(READY_LINE)
        sys.stdout.buffer.flush()

    cpu_start = cpu_seconds()
    raw_task = raw_fanout(url, readers, ["market"], seconds, on_window=announce)
    if stalled:
        stall_task = ws_fanout(url, 0, ["market"], None, seconds, stalled_clients=stalled)
        raw, stall = await asyncio.gather(raw_task, stall_task)
        stall_summary = stall.summary()
    else:
        raw, stall_summary = await raw_task, {}
    out = {
        "connected": raw.connected,
        "failed": raw.failed,
        "received": raw.received,
        "latencies_ms": raw.latencies_ms,
        "first_ms": {f"{c}:{s}": ms for (c, s), ms in raw.first_ms.items()},
        "last_ms": {f"{c}:{s}": ms for (c, s), ms in raw.last_ms.items()},
        "stalled_close_codes": stall_summary.get("stalled_close_codes", {}),
        "stalled_open_at_end": stall_summary.get("stalled_open_at_end", 0),
        "cpu_seconds": cpu_seconds() - cpu_start,
    }
    sys.stdout.write(json.dumps(out))


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| path | clients (+1 stalled) | updates per burst | reach | p50 ms | p99 ms "
        "| first client p99 ms | spread p99 ms | server p99 ms | server µs per client and frame "
        "| stalled closed with |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat, first, spread = r["latency_ms"], r["first_client_ms"], r["spread_ms"]
        reach = f"{r['reach']:.2%}" if r["reach"] is not None else "–"
        lines.append(
            f"| {_label(r)} | {r['connected']} | {r['burst']} | {reach} "
            f"| {_ms(lat['p50'])} | {_ms(lat['p99'])} | {_ms(first['p99'])} "
            f"| {_ms(spread['p99'])} | {_server_p99(r)} | {r['server_us_per_frame']} "
            f"| {r['stalled_close_codes'] or 'open'} |"
        )
    return "\n".join(lines)


def _label(row: dict[str, Any]) -> str:
    servers = row.get("servers", 1)
    return row["path"] if servers == 1 else f"{row['path']}, {servers} servers"


def _server_p99(row: dict[str, Any]) -> str:
    """The server's own publish → written p99 (``RealtimeStats`` latencies), in ms."""
    latency = row.get("server_latency_s") or {}
    return _ms(latency["p99"] * 1000 if "p99" in latency else None)


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--shard", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--servers", type=int, default=1)
    parser.add_argument("--paths", default=",".join(PATHS))
    parser.add_argument("--publisher", choices=("redis", "http"), default="redis")
    parser.add_argument("--redis", help="redis://host:port (default: start a redis-server)")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.shard:
        url, readers, stalled, seconds = args.shard
        uvloop.run(shard_main(url, int(readers), int(stalled), float(seconds)))
        return
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    redis_server = None
    redis_url = args.redis
    if args.publisher == "redis" and redis_url is None:
        redis_server = procs.redis(Path(tempfile.mkdtemp(prefix="virtuoso-ws-fanout-")))
        redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    try:
        rows = asyncio.run(
            compare(
                args.paths.split(","),
                redis_url if args.publisher == "redis" else None,
                clients=args.clients,
                burst=args.burst,
                period=args.period,
                seconds=args.seconds,
                shards=args.shards,
                servers=args.servers,
                profile_dir=args.profile,
            )
        )
    finally:
        if redis_server is not None:
            redis_server.stop()
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
