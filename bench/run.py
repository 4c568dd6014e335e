"""`make bench`: starts everything on loopback (Memcached, Redis, the fake exchange, the
service), runs the scenarios and the side-by-side comparisons, stops everything and
writes bench/results/<date>/report.md, results.json and the plots.

    python -m bench.run [--quick] [--out DIR]

Full: about 10 minutes on 2 cores; --quick: about 3.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

from bench import procs, report
from bench.exchange_latency import exchange_latency
from bench.loadgen.http import wrk_available
from bench.pages import page_loads
from bench.roles import roles
from bench.scenarios import (
    FULL,
    QUICK,
    Bench,
    Profile,
    ablation,
    herd,
    machine,
    outage,
    scale_http,
    scale_ws,
    side_by_side,
    steady,
    ws_fanout_paths,
)

RESULTS = Path(__file__).resolve().parent / "results"
REFRESH_SECONDS = 10.0  # the service's default


def versions() -> str:
    def first_line(*command: str) -> str:
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            result = subprocess.run(command, capture_output=True, text=True, timeout=10)
            return (result.stdout or result.stderr).strip().splitlines()[0]
        return f"{command[0]}: unavailable"

    return "; ".join(
        [
            f"Python {platform.python_version()} on {platform.platform(terse=True)}",
            first_line("memcached", "-V"),
            first_line("redis-server", "--version").split(" sha=")[0],
            first_line("chromium", "--version"),
            "wrk " + ("present" if wrk_available() else "absent (asyncio load generator)"),
        ]
    )


async def run(profile: Profile, out: Path, only: set[str] | None = None) -> Path:
    logs = Path(tempfile.mkdtemp(prefix="virtuoso-bench-"))
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "profile": profile.name,
        "machine": machine(),
        "versions": versions(),
        "refresh_seconds": REFRESH_SECONDS,
        "logs": str(logs),
    }
    exchange = procs.exchange()
    memcached = procs.memcached(logs)
    redis = procs.redis(logs)
    timeout = aiohttp.ClientTimeout(total=30)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as session:
            bench = Bench(profile, logs, memcached, redis, exchange, session)
            bench.start_app()
            await bench.wait_ready()
            await scenarios(bench, results, only)
            results["notes"] = bench.notes
    finally:
        for process in (bench.app if "bench" in locals() else None, redis, memcached):
            if process is not None:
                process.stop()
        exchange.stop()
    return report.write(results, out)


async def scenarios(bench: Bench, results: dict[str, Any], only: set[str] | None = None) -> None:
    """Each scenario in turn (those in ``only`` when given); one that fails is reported,
    the others still run."""
    steps = [
        ("steady", steady),
        ("herd", herd),
        ("scale_http", scale_http),
        ("scale_ws", scale_ws),
        ("ws_fanout", ws_fanout_paths),
        ("pages", lambda b: page_loads(b.base, b.profile.page_loads)),
        ("side_by_side", side_by_side),
        ("outages", lambda b: both_outages(b)),
        ("exchange_latency", exchange_latency),  # its own streaming service; restarts ours
        ("ablation", ablation),  # restarts the service
        ("roles", roles),  # last: stops the service, runs the two roles on tiers of their own
    ]
    for name, step in steps:
        if only is not None and name not in only:
            continue
        started = time.monotonic()
        print(f"bench: {name} …", flush=True)
        try:
            results[name] = await step(bench)
        except Exception as error:  # report it, keep going
            bench.notes.append(f"{name} failed: {type(error).__name__}: {error}")
            print(f"bench: {name} failed: {error!r}", file=sys.stderr, flush=True)
        print(f"bench: {name} done in {time.monotonic() - started:.0f} s", flush=True)


async def both_outages(bench: Bench) -> list[dict[str, Any]]:
    rows = []
    for what in ("memcached", "exchange"):
        rows.append(await outage(bench, what))
        await asyncio.sleep(2)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="about 3 minutes")
    parser.add_argument("--out", type=Path, help="default: bench/results/<date>")
    parser.add_argument("--only", help="comma-separated scenarios to run (default: all)")
    parser.add_argument(
        "--report-from", type=Path, metavar="DIR", help="rewrite DIR's report from its results.json"
    )
    args = parser.parse_args(argv)
    if args.report_from:
        results = json.loads((args.report_from / "results.json").read_text())
        print(f"bench: report in {report.write(results, args.report_from)}")
        return 0
    for tool in ("memcached", "redis-server", "chromium"):
        if shutil.which(tool) is None:
            parser.error(f"{tool} not found: `make bench` installs it")
    profile = QUICK if args.quick else FULL
    out = args.out or RESULTS / datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d-%H%M")
    started = time.monotonic()
    only = set(args.only.split(",")) if args.only else None
    report_path = asyncio.run(run(profile, out, only))
    print(f"bench: report in {report_path} ({time.monotonic() - started:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
