"""The two roles side by side: the embedded single process (`virtuoso serve`, collector
inside) against `virtuoso serve` with VIRTUOSO_COLLECTOR=external plus a separate
`virtuoso collect`, in one run, on tiers of their own (a fresh Memcached and Redis) and
a short refresh interval, so that several refreshes fall inside every window.

Measured for each: the polling load (200 clients, 800 req/s, open loop) with the
latency split into the seconds around each refresh and the rest, the same load on the
bare Quart route (the p99 ratio), throughput against the bare route (the side-by-side
method: wrk, or the asyncio closed loop without it), memory (the serving process, its
whole process tree, the collector) idle and with 1,000 WebSocket clients, and the
exchange calls with 1, 2 and 4 serving replicas behind one collector.

A refresh is seen from outside: the fake exchange's request counts are polled every
``WATCH_EVERY_S``; requests less than ``GAP_S`` apart make one refresh, and its window
runs from ``BEFORE_S`` before its first request to ``AFTER_S`` after its last (the
parsing, the analysis and the publishing follow the last request).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import psutil

from bench import procs
from bench.loadgen.http import HttpResult, Request, open_loop, standard_workload
from bench.loadgen.stats import LatencySummary
from bench.loadgen.ws import ws_fanout
from bench.metrics import calls_between, exchange_counts, scrape
from bench.scenarios import TICKERS, Bench, throughput
from bench.symbols import SYMBOLS
from tools.local_stack import Process

DESKTOP = "/api/dashboard/data"
REFRESH_SECONDS = 5.0  # short: several refreshes in every measured window
POLLING_RPS, POLLING_CLIENTS = 800, 200
WATCH_EVERY_S = 0.1
GAP_S = 1.0  # exchange requests closer than this belong to one refresh
BEFORE_S, AFTER_S = 1.0, 2.0  # the window around a refresh's exchange requests
REPLICAS = (1, 2, 4)
REPLICA_RPS = 400  # the standard workload, split evenly over the replicas
WS_CLIENTS = 1000
RSS_EVERY_S = 0.25


@dataclass(frozen=True)
class RolesProfile:
    polling_seconds: float
    ws_seconds: float
    replica_seconds: float  # per replica count


ROLES_PROFILES = {
    "full": RolesProfile(polling_seconds=45, ws_seconds=15, replica_seconds=40),
    "quick": RolesProfile(polling_seconds=20, ws_seconds=8, replica_seconds=20),
}


def _desktop(_: int) -> Request:
    return Request(DESKTOP)


# --- seeing refreshes from outside ---------------------------------------------------------


class ExchangeWatch:
    """Polls the fake exchange's request counts; ``activity`` holds (from, to)
    perf_counter intervals in which the exchange received requests."""

    def __init__(self, session: aiohttp.ClientSession, control: str) -> None:
        self.session = session
        self.control = control
        self.activity: list[tuple[float, float]] = []
        self._stop = asyncio.Event()

    async def run(self) -> None:
        last_t, last_total = time.perf_counter(), await self._total()
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), WATCH_EVERY_S)
            now, total = time.perf_counter(), await self._total()
            if total > last_total:
                self.activity.append((last_t, now))
            last_t, last_total = now, total

    def stop(self) -> None:
        self._stop.set()

    async def _total(self) -> int:
        return sum((await exchange_counts(self.session, self.control)).values())

    def refreshes(self) -> list[tuple[float, float]]:
        """The activity merged into refreshes: (first request, last request)."""
        merged: list[tuple[float, float]] = []
        for start, end in self.activity:
            if merged and start - merged[-1][1] < GAP_S:
                merged[-1] = (merged[-1][0], end)
            else:
                merged.append((start, end))
        return merged


def split_by_refresh(result: HttpResult, refreshes: list[tuple[float, float]]) -> dict[str, Any]:
    """Latency of the requests due inside a refresh's window (``BEFORE_S`` before its
    first exchange request to ``AFTER_S`` after its last), per window and in all, and
    of the requests due outside every window."""
    windows = [(start - BEFORE_S, end + AFTER_S) for start, end in refreshes]
    inside: list[list[float]] = [[] for _ in windows]
    outside: list[float] = []
    for due, latency in zip(result.started_s, result.latencies_ms, strict=True):
        for index, (start, end) in enumerate(windows):
            if start <= due <= end:
                inside[index].append(latency)
                break
        else:
            outside.append(latency)
    first = min(result.started_s, default=0.0)
    per_window = [
        {
            "from_s": round(start - first, 2),
            "to_s": round(end - first, 2),
            "exchange_s": round(refresh[1] - refresh[0], 2),
            "latency_ms": LatencySummary.from_ms(values),
        }
        for (start, end), refresh, values in zip(windows, refreshes, inside, strict=True)
        if values
    ]
    by_second: dict[int, list[float]] = {}
    for due, latency in zip(result.started_s, result.latencies_ms, strict=True):
        by_second.setdefault(int(due - first), []).append(latency)
    return {
        "p99_by_second_ms": [
            round(LatencySummary.from_ms(by_second[s])["p99"], 2) for s in sorted(by_second)
        ],
        "refresh_windows": per_window,
        "around_refreshes": LatencySummary.from_ms([v for w in inside for v in w]),
        "between_refreshes": LatencySummary.from_ms(outside),
    }


async def polling(bench: Bench, base: str, seconds: float) -> dict[str, Any]:
    """200 polling clients (800 req/s, open loop) on the desktop view while the exchange
    is watched; the latency in all and split around the refreshes."""
    watch = ExchangeWatch(bench.session, bench.exchange.control)
    watcher = asyncio.create_task(watch.run())
    try:
        result = await open_loop(
            base, _desktop, POLLING_RPS, seconds, max_in_flight=POLLING_CLIENTS
        )
    finally:
        watch.stop()
        await watcher
    refreshes = [r for r in watch.refreshes() if r[1] >= min(result.started_s, default=0.0)]
    return {
        "http": result.summary(),
        "refreshes": len(refreshes),
        **split_by_refresh(result, refreshes),
    }


# --- memory --------------------------------------------------------------------------------


def _mb(value: int) -> float:
    return round(value / 2**20, 1)


def rss_of(server: Process, collector: Process | None) -> dict[str, float]:
    """The serving process, its whole tree (children included), and the collector's
    tree (0 when the collector runs inside the server)."""
    return {
        "server_mb": _mb(procs.usage(server).rss_bytes),
        "server_tree_mb": _mb(procs.tree_rss(server)),
        "collector_mb": _mb(procs.tree_rss(collector)) if collector else 0.0,
    }


async def peak_rss_while(
    server: Process, collector: Process | None, work: Any
) -> tuple[Any, dict[str, float]]:
    """Awaits ``work`` while sampling rss_of every ``RSS_EVERY_S``; returns its result
    and the peak of each figure."""
    peak = rss_of(server, collector)
    done = asyncio.Event()

    async def sample() -> None:
        while not done.is_set():
            for name, value in rss_of(server, collector).items():
                peak[name] = max(peak[name], value)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), RSS_EVERY_S)

    sampler = asyncio.create_task(sample())
    try:
        result = await work
    finally:
        done.set()
        await sampler
    return result, peak


# --- one setup, measured --------------------------------------------------------------------


def _cpu(process: Process | None) -> float:
    if process is None or process.popen is None:
        return 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(process.popen.pid)
        total = 0.0
        for member in [root, *root.children(recursive=True)]:
            times = member.cpu_times()
            total += times.user + times.system
        return total
    return 0.0


async def measure_setup(
    bench: Bench, server: Process, collector: Process | None, profile: RolesProfile
) -> dict[str, Any]:
    """Idle memory, the polling load (split around refreshes), throughput, memory with
    WS_CLIENTS WebSocket clients; CPU of the server and the collector during the polling."""
    base = f"http://127.0.0.1:{server.port}"
    await asyncio.sleep(3)  # past start-up work: idle means idle
    out: dict[str, Any] = {"rss_idle": rss_of(server, collector)}
    cpu_before = (_cpu(server), _cpu(collector))
    started = time.monotonic()
    out["polling"] = await polling(bench, base, profile.polling_seconds)
    elapsed = time.monotonic() - started
    out["polling"]["server_cpu_percent"] = round(100 * (_cpu(server) - cpu_before[0]) / elapsed, 1)
    out["polling"]["collector_cpu_percent"] = round(
        100 * (_cpu(collector) - cpu_before[1]) / elapsed, 1
    )
    out["throughput"] = await throughput(bench, base)
    ws_url = base.replace("http", "ws") + "/ws"
    fanout = ws_fanout(ws_url, WS_CLIENTS, ["market", "dashboard"], ["BTCUSDT"], profile.ws_seconds)
    ws, peak = await peak_rss_while(server, collector, fanout)
    ws_summary = ws.summary()
    out["ws"] = {
        "clients": WS_CLIENTS,
        "connected": ws_summary["connected"],
        "reach": ws_summary["reach"],
        "latency_ms": ws_summary["latency_ms"],
        "rss_peak": peak,
    }
    await asyncio.sleep(1)  # let the server release the connections
    return out


async def ready(session: aiohttp.ClientSession, base: str, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/health/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError(f"{base} did not become ready")


async def bare_route(bench: Bench, seconds: float) -> dict[str, Any]:
    """The bare Quart route (bench/baselines/ceiling) at the polling rate, and its
    throughput by the side-by-side method."""
    ceiling = procs.baseline(bench.logs, "ceiling")
    try:
        base = f"http://127.0.0.1:{ceiling.port}"
        result = await open_loop(
            base, _desktop, POLLING_RPS, seconds, max_in_flight=POLLING_CLIENTS
        )
        return {"polling": {"http": result.summary()}, "throughput": await throughput(bench, base)}
    finally:
        ceiling.stop()


# --- replicas --------------------------------------------------------------------------------


async def replicas(
    bench: Bench, env: dict[str, str], collector: Process, first: Process, seconds: float
) -> list[dict[str, Any]]:
    """1, 2 and 4 serving replicas behind the one collector, the standard workload
    (REPLICA_RPS split evenly) on all of them: the exchange's calls (counted by the fake
    exchange, which only this collector uses now) and the collector's refreshes."""
    servers = [first]
    monitoring = f"http://127.0.0.1:{collector.port}"
    rows = []
    try:
        warm = standard_workload(SYMBOLS, seed=5)  # the cold reads happen before counting
        await open_loop(f"http://127.0.0.1:{first.port}", warm, 100, 3)
        for count in REPLICAS:
            while len(servers) < count:
                name = f"roles-server-{len(servers) + 1}"
                servers.append(procs.external_server(bench.logs, name, env))
                await ready(bench.session, f"http://127.0.0.1:{servers[-1].port}")
            calls_before = await exchange_counts(bench.session, bench.exchange.control)
            metrics_before = await scrape(bench.session, monitoring)
            started = time.monotonic()
            results = await asyncio.gather(
                *(
                    open_loop(
                        f"http://127.0.0.1:{s.port}",
                        standard_workload(SYMBOLS, seed=i),
                        REPLICA_RPS / count,
                        seconds,
                    )
                    for i, s in enumerate(servers)
                )
            )
            elapsed = time.monotonic() - started
            calls = calls_between(
                calls_before, await exchange_counts(bench.session, bench.exchange.control)
            )
            metrics_after = await scrape(bench.session, monitoring)
            refreshes = metrics_after.sum(
                "virtuoso_pipeline_refresh_duration_seconds_count", outcome="ok"
            ) - metrics_before.sum("virtuoso_pipeline_refresh_duration_seconds_count", outcome="ok")
            total = sum(calls.values())
            statuses: dict[str, int] = {}
            for result in results:
                for code, n in result.summary()["status_counts"].items():
                    statuses[code] = statuses.get(code, 0) + n
            rows.append(
                {
                    "replicas": count,
                    "seconds": round(elapsed, 1),
                    "requests": sum(r.completed for r in results),
                    "statuses": statuses,
                    "exchange_calls": total,
                    "exchange_calls_per_minute": round(total * 60 / elapsed, 1),
                    "ticker_calls": calls.get(TICKERS, 0),
                    "refreshes": refreshes,
                    "calls_per_refresh": round(total / refreshes, 1) if refreshes else None,
                }
            )
    finally:
        for server in servers[1:]:
            server.stop()
    return rows


# --- the scenario ------------------------------------------------------------------------------


async def _part(out: dict[str, Any], name: str, work: Any) -> None:
    """``out[name]`` = the result of ``work``; a failure is noted in ``out["failed"]``
    and the scenario goes on (the parts measured so far stay in the report)."""
    try:
        out[name] = await work
    except Exception as error:  # report it, keep going
        out.setdefault("failed", []).append(f"{name}: {type(error).__name__}: {error}")


async def roles(bench: Bench) -> dict[str, Any]:
    """Embedded vs split, one after the other on fresh tiers of their own; the bench's
    own service is stopped first (its refreshes would share the exchange and the CPU)."""
    profile = ROLES_PROFILES.get(bench.profile.name, ROLES_PROFILES["quick"])
    if bench.app is not None:
        bench.app.stop()
    memcached, redis = procs.memcached(bench.logs), procs.redis(bench.logs)
    memcached_address, redis_address = f"127.0.0.1:{memcached.port}", f"127.0.0.1:{redis.port}"
    refresh = {"VIRTUOSO_REFRESH_SECONDS": f"{REFRESH_SECONDS:g}"}
    env = procs.tier_env(memcached_address, redis_address) | refresh
    started: list[Process] = [memcached, redis]
    out: dict[str, Any] = {"refresh_seconds": REFRESH_SECONDS, "window_s": [BEFORE_S, AFTER_S]}
    try:
        embedded = procs.service(
            bench.logs,
            "roles-embedded",
            bench.exchange.url,
            memcached_address,
            redis_address,
            refresh,
        )
        started.append(embedded)
        await ready(bench.session, f"http://127.0.0.1:{embedded.port}")
        out["embedded"] = await measure_setup(bench, embedded, None, profile)
        embedded.stop()

        collector = procs.collector(bench.logs, "roles-collector", bench.exchange.url, env)
        server = procs.external_server(bench.logs, "roles-server-1", env)
        started += [collector, server]
        await ready(bench.session, f"http://127.0.0.1:{server.port}")
        out["external"] = await measure_setup(bench, server, collector, profile)
        await _part(out, "bare", bare_route(bench, profile.polling_seconds))
        await _part(
            out, "replicas", replicas(bench, env, collector, server, profile.replica_seconds)
        )
        out["machine_load"] = [round(x, 2) for x in psutil.getloadavg()]
    finally:
        for process in reversed(started):
            process.stop()
    return out
