"""WebSocket fan-out on the realtime endpoint alone (``bench/ws_server.py``): N reading
clients and one stalled client on the market channel, bursts of updates published at a
fixed period, publish → receive latency at every client.

    python -m bench.ws_fanout [--clients 1000] [--burst 10] [--paths direct,queued]
                              [--shards 2] [--seconds 10] [--profile DIR]

The clients are split over ``--shards`` load-generator processes (one Python process
reading 1,000 sockets adds its own queueing to what it measures); their latencies are
pooled. ``--paths``: ``direct`` is the service's default, ``queued`` sends every frame
through the per-connection queue and sender task (``direct_write_bytes=0``, the path
before direct writes), run one after the other on fresh servers. ``--profile DIR``:
the server runs under cProfile and its stats go to ``DIR/<path>.pstats``.
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
import time
from pathlib import Path
from typing import Any

import aiohttp
import uvloop

from bench.loadgen.stats import LatencySummary
from bench.loadgen.ws import ws_fanout
from tools.local_stack import free_port

ROOT = Path(__file__).resolve().parent.parent
PATHS = {"direct": None, "queued": "0"}  # BENCH_WS_DIRECT_BYTES per path
STARTUP_SECONDS = 30.0
SHARD_SLACK_SECONDS = 60.0  # connects + closes of a shard, beyond its window


async def _wait_listening(base: str, session: aiohttp.ClientSession) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS
    while time.monotonic() < deadline:
        try:
            async with session.get(f"{base}/stats") as response:
                if response.status == 200:
                    return
        except aiohttp.ClientError:
            pass
        await asyncio.sleep(0.2)
    raise RuntimeError("the bench WebSocket server did not start")


async def _publisher(
    base: str, session: aiohttp.ClientSession, burst: int, period: float, stop: asyncio.Event
) -> int:
    """Publishes a burst every ``period`` seconds until ``stop``; returns the bursts."""
    bursts = 0
    while not stop.is_set():
        async with session.post(f"{base}/publish", params={"n": str(burst)}) as response:
            await response.read()
        bursts += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), period)
    return bursts


async def _shard(url: str, clients: int, stalled: int, seconds: float) -> dict[str, Any]:
    argv = [sys.executable, "-m", "bench.ws_fanout", "--shard", url, str(clients)]
    argv += [str(stalled), str(seconds)]
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), seconds + SHARD_SLACK_SECONDS)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    result: dict[str, Any] = json.loads(out)
    return result


def _pool(shards: list[dict[str, Any]]) -> dict[str, Any]:
    """One row from the shards' summaries and latencies."""
    latencies = [ms for shard in shards for ms in shard["latencies_ms"]]
    summaries = [shard["summary"] for shard in shards]
    # Each shard opens its window when its own clients are ready: reach per shard.
    received = sum(s["messages_received"] for s in summaries)
    distinct = max((s["distinct_messages"] for s in summaries), default=0)
    connected = sum(s["connected"] for s in summaries)
    expected = sum(s["expected"] for s in summaries)
    stalled_codes: dict[str, int] = {}
    for s in summaries:
        for code, n in s["stalled_close_codes"].items():
            stalled_codes[code] = stalled_codes.get(code, 0) + n
    return {
        "connected": connected,
        "distinct_messages": distinct,
        "reach": round(received / expected, 4) if expected else None,
        "latency_ms": LatencySummary.from_ms(latencies),
        "stalled_close_codes": stalled_codes,
        "stalled_open_at_end": sum(s["stalled_open_at_end"] for s in summaries),
        "loadgen_cpu_share": round(sum(s["loadgen_cpu_share"] or 0 for s in summaries), 3),
    }


def run_path(
    path: str,
    clients: int,
    burst: int,
    period: float,
    seconds: float,
    shards: int,
    profile_dir: Path | None,
) -> dict[str, Any]:
    """One path on a fresh server: the pooled row plus the server's own counters."""
    port = free_port()
    env = {**os.environ}
    direct = PATHS[path]
    if direct is not None:
        env["BENCH_WS_DIRECT_BYTES"] = direct
    if profile_dir is not None:
        env["BENCH_WS_PROFILE"] = str(profile_dir / f"{path}.pstats")
    server = subprocess.Popen(
        [sys.executable, "-m", "bench.ws_server", str(port)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        row = asyncio.run(_measure(port, clients, burst, period, seconds, shards))
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    return {"path": path, **row}


async def _measure(
    port: int, clients: int, burst: int, period: float, seconds: float, shards: int
) -> dict[str, Any]:
    base = f"http://127.0.0.1:{port}"
    async with aiohttp.ClientSession() as session:
        await _wait_listening(base, session)
        stop = asyncio.Event()
        publisher = asyncio.create_task(_publisher(base, session, burst, period, stop))
        per = math.ceil(clients / shards)
        counts = [min(per, clients - i * per) for i in range(shards)]
        url = f"ws://127.0.0.1:{port}/ws"
        results = await asyncio.gather(
            *(_shard(url, n, 1 if i == 0 else 0, seconds) for i, n in enumerate(counts))
        )
        stop.set()
        bursts = await publisher
        async with session.get(f"{base}/stats") as response:
            stats = await response.json()
    return {
        "clients": clients,
        "burst": burst,
        "bursts": bursts,
        **_pool(list(results)),
        "server_latency_s": stats.get("latency_seconds"),
        "server_sent": stats.get("sent"),
        "server_direct": stats.get("direct"),
        "server_coalesced": stats.get("coalesced"),
    }


async def shard_main(url: str, clients: int, stalled: int, seconds: float) -> None:
    result = await ws_fanout(url, clients, ["market"], None, seconds, stalled_clients=stalled)
    out = {"summary": result.summary(), "latencies_ms": result.latencies_ms}
    sys.stdout.write(json.dumps(out))


def table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table."""
    lines = [
        "| path | clients (+1 stalled) | updates per burst | reach | p50 ms | p99 ms | max ms "
        "| server p99 ms | stalled closed with | load generator CPU |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lat, server = r["latency_ms"], r["server_latency_s"] or {}
        lines.append(
            f"| {r['path']} | {r['connected']} | {r['burst']} | {r['reach']:.2%} "
            f"| {lat['p50']:.2f} | {lat['p99']:.2f} | {lat['max']:.2f} "
            f"| {server.get('p99', 0) * 1000:.2f} | {r['stalled_close_codes'] or 'open'} "
            f"| {r['loadgen_cpu_share']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shard", nargs=4, help=argparse.SUPPRESS)
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--burst", type=int, default=10)
    parser.add_argument("--period", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--shards", type=int, default=2)
    parser.add_argument("--paths", default="direct,queued")
    parser.add_argument("--profile", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.shard:
        url, clients, stalled, seconds = args.shard
        uvloop.run(shard_main(url, int(clients), int(stalled), float(seconds)))
        return
    if args.profile is not None:
        args.profile.mkdir(parents=True, exist_ok=True)
    rows = []
    for path in args.paths.split(","):
        row = run_path(
            path, args.clients, args.burst, args.period, args.seconds, args.shards, args.profile
        )
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))
    print(table(rows))


if __name__ == "__main__":
    main()
