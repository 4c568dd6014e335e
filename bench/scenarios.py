"""The benchmark's scenarios. Each takes the running bench (servers, session, profile)
and returns plain JSON-able results; bench/run.py runs them in order and bench/report.py
turns them into the report."""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import psutil
from redis.asyncio import Redis

from bench import procs
from bench import ws_fanout as fanout
from bench.loadgen.http import (
    EtagMemory,
    Request,
    closed_loop,
    open_loop,
    run_wrk,
    standard_workload,
    wrk_available,
)
from bench.loadgen.ws import ws_fanout
from bench.metrics import (
    calls_between,
    exchange_counts,
    hit_ratios,
    memcached_flush,
    memcached_stats,
    scrape,
)
from bench.symbols import SYMBOLS
from tools.local_stack import Process

DESKTOP = "/api/dashboard/data"
TICKERS = "/v5/market/tickers"


@dataclass(frozen=True)
class Profile:
    name: str
    steady_seconds: float
    steady_rps: float
    steady_ws_clients: int
    herd_clients: int
    scale_levels: tuple[int, ...]
    scale_seconds: float
    ws_levels: tuple[int, ...]
    ws_seconds: float
    memcached_outage_seconds: float
    exchange_outage_seconds: float  # longer than the views' TTL (20 s) shows stale serving
    outage_rps: float
    page_loads: int
    side_seconds: float
    side_connections: int
    ablation_seconds: float
    fanout_seconds: float  # publishing time of each path of the fan-out comparison


# WebSocket windows are longer than a refresh cycle (10 s interval + the refresh itself,
# 3–5 s with 25 symbols through ccxt's rate limiter): updates come once per refresh.
FULL = Profile("full", 45, 300, 100, 500, (1, 10, 100, 200, 1000), 8, (100, 1000, 2000), 22,
               15, 45, 200, 5, 10, 64, 6, 10)  # fmt: skip
QUICK = Profile("quick", 16, 200, 50, 200, (1, 10, 100, 200), 2, (100, 500), 16,
                9, 12, 150, 2, 3, 64, 3, 6)  # fmt: skip


@dataclass
class Bench:
    profile: Profile
    logs: Path
    memcached: Process
    redis: Process
    exchange: procs.Exchange
    session: aiohttp.ClientSession
    app: Process | None = None
    refresh_seconds: float = 10.0
    notes: list[str] = field(default_factory=list)

    @property
    def base(self) -> str:
        assert self.app is not None
        return f"http://127.0.0.1:{self.app.port}"

    @property
    def memcached_address(self) -> str:
        return f"127.0.0.1:{self.memcached.port}"

    @property
    def redis_address(self) -> str:
        return f"127.0.0.1:{self.redis.port}"

    def start_app(self, name: str = "virtuoso", **env: str) -> Process:
        self.app = procs.service(
            self.logs, name, self.exchange.url, self.memcached_address, self.redis_address, env
        )
        return self.app

    async def wait_ready(self, seconds: float = 60) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            with contextlib.suppress(aiohttp.ClientError):
                async with self.session.get(f"{self.base}/health/ready") as response:
                    if response.status == 200:
                        return
            await asyncio.sleep(0.2)
        raise RuntimeError("the service did not become ready")

    async def flush_caches(self) -> None:
        await memcached_flush(self.memcached_address)
        redis = Redis.from_url(f"redis://{self.redis_address}/0")
        await redis.flushdb()
        await redis.aclose()

    async def invalidate(self, family: str) -> None:
        headers = {"Authorization": f"Bearer {procs.ADMIN_TOKEN}"}
        url = f"{self.base}/api/cache/invalidate"
        async with self.session.post(url, json={"family": family}, headers=headers) as response:
            response.raise_for_status()


async def exchange_calls_since(bench: Bench, before: dict[str, int]) -> dict[str, int]:
    return calls_between(before, await exchange_counts(bench.session, bench.exchange.control))


def desktop(_: int) -> Request:
    return Request(DESKTOP)


async def measured(bench: Bench, run) -> dict[str, Any]:
    """Runs ``run()`` and adds what the server did meanwhile: CPU, RSS, exchange calls,
    cache hit ratios; and the CPU the exchange simulator took from the same cores."""
    assert bench.app is not None
    before = await scrape(bench.session, bench.base)
    calls_before = await exchange_counts(bench.session, bench.exchange.control)
    server_before, exchange_before = procs.usage(bench.app), procs.usage(bench.exchange)
    started = time.monotonic()
    result = await run()
    elapsed = time.monotonic() - started
    server_after, exchange_after = procs.usage(bench.app), procs.usage(bench.exchange)
    after = await scrape(bench.session, bench.base)
    calls = await exchange_calls_since(bench, calls_before)

    def cpu_percent(start: procs.Usage, end: procs.Usage) -> float:
        return round(100 * (end.cpu_seconds - start.cpu_seconds) / elapsed, 1)

    return {
        **result,
        "server_cpu_percent": cpu_percent(server_before, server_after),
        "exchange_simulator_cpu_percent": cpu_percent(exchange_before, exchange_after),
        "server_rss_mb": round(server_after.rss_bytes / 2**20, 1),
        "exchange_calls": calls,
        "exchange_calls_per_minute": round(sum(calls.values()) * 60 / elapsed, 1),
        "ticker_calls_per_minute": round(calls.get(TICKERS, 0) * 60 / elapsed, 1),
        "hit_ratio": hit_ratios(before, after),
        "seconds": round(elapsed, 2),
    }


# --- 1. steady state -----------------------------------------------------------------------


async def steady(bench: Bench) -> dict[str, Any]:
    profile = bench.profile
    workload = standard_workload(SYMBOLS, seed=7, etags=EtagMemory())
    ws_url = bench.base.replace("http", "ws") + "/ws"

    async def run() -> dict[str, Any]:
        http, ws = await asyncio.gather(
            open_loop(bench.base, workload, profile.steady_rps, profile.steady_seconds),
            ws_fanout(ws_url, profile.steady_ws_clients, ["market", "dashboard"], ["BTCUSDT"],
                      profile.steady_seconds),
        )  # fmt: skip
        return {"http": http.summary(), "ws": ws.summary()}

    return await measured(bench, run)


# --- 2. thundering herd ----------------------------------------------------------------------


async def herd(bench: Bench, clients: int | None = None) -> dict[str, Any]:
    """Every cached view dropped, then ``clients`` concurrent cold requests."""
    clients = clients or bench.profile.herd_clients
    before = await scrape(bench.session, bench.base)
    calls_before = await exchange_counts(bench.session, bench.exchange.control)
    await bench.invalidate("market")  # cascades to every view built from market data
    result = await closed_loop(bench.base, desktop, concurrency=clients, total=clients)
    after = await scrape(bench.session, bench.base)
    calls = calls_between(
        calls_before, await exchange_counts(bench.session, bench.exchange.control)
    )
    summary = result.summary()
    return {
        "clients": clients,
        "http": summary,
        "statuses": summary["status_counts"],
        "ticker_calls": calls.get(TICKERS, 0),
        "exchange_calls": calls,
        "refreshes": after.sum("virtuoso_pipeline_refreshes_total", outcome="ok")
        - before.sum("virtuoso_pipeline_refreshes_total", outcome="ok"),
        "first_byte_ms": round(min(result.latencies_ms), 3) if result.latencies_ms else None,
    }


# --- 3. scale ------------------------------------------------------------------------------


async def scale_http(bench: Bench) -> dict[str, Any]:
    """Closed loop (each client sends back to back) at every level, the exchange calls
    over the whole run; and 200 clients polling at a fixed rate (open loop)."""
    calls_before, started = (
        await exchange_counts(bench.session, bench.exchange.control),
        time.monotonic(),
    )
    rows = []
    for level in bench.profile.scale_levels:
        seconds = bench.profile.scale_seconds

        async def run(level: int = level, seconds: float = seconds) -> dict[str, Any]:
            result = await closed_loop(bench.base, desktop, concurrency=level, duration_s=seconds)
            return {"concurrency": level, "http": result.summary()}

        rows.append(await measured(bench, run))

    async def polling() -> dict[str, Any]:
        # 200 clients each asking every 0.25 s: 800 req/s, below the saturation above.
        result = await open_loop(bench.base, desktop, 800, bench.profile.scale_seconds * 2,
                                 max_in_flight=200)  # fmt: skip
        return {"clients": 200, "http": result.summary()}

    polled = await measured(bench, polling)
    seconds = time.monotonic() - started
    calls = await exchange_calls_since(bench, calls_before)
    return {
        "closed_loop": rows,
        "polling_200": polled,
        "seconds": round(seconds, 1),
        "ticker_calls": calls.get(TICKERS, 0),
        "refresh_intervals": round(seconds / bench.refresh_seconds, 1),
    }


async def scale_ws(bench: Bench) -> list[dict[str, Any]]:
    """Fan-out to N clients (one more that never reads): delivery latency and memory."""
    assert bench.app is not None
    ws_url = bench.base.replace("http", "ws") + "/ws"
    rows = []
    for clients in bench.profile.ws_levels:
        idle_rss = procs.usage(bench.app).rss_bytes
        peak = {"rss": idle_rss}
        stop = asyncio.Event()

        async def sample_rss(peak: dict = peak, stop: asyncio.Event = stop) -> None:
            while not stop.is_set():
                peak["rss"] = max(peak["rss"], procs.usage(bench.app).rss_bytes)
                await asyncio.sleep(0.25)

        sampler = asyncio.create_task(sample_rss())
        result = await ws_fanout(
            ws_url,
            clients,
            ["market", "dashboard"],
            ["BTCUSDT"],
            bench.profile.ws_seconds,
            stalled_clients=1,
        )
        stop.set()
        await sampler
        rows.append(
            {
                "clients": clients,
                "ws": result.summary(),
                "rss_idle_mb": round(idle_rss / 2**20, 1),
                "rss_peak_mb": round(peak["rss"] / 2**20, 1),
                "rss_kb_per_connection": round((peak["rss"] - idle_rss) / 1024 / clients, 1),
            }
        )
        await asyncio.sleep(1)  # let the server release the connections
    return rows


FANOUT_CLIENTS = 1000
FANOUT_SYMBOLS = 10  # symbols moving: one update each per burst, a burst a second
FANOUT_REDIS_DB = 2  # the seq counters of the comparison's broker, away from the service


async def ws_fanout_paths(bench: Bench) -> list[dict[str, Any]]:
    """The serving process's fan-out path alone (``bench/ws_fanout.py``): 1,000 clients
    + 1 stalled, 10 symbols moving, updates published through Redis as the collector
    publishes them; the direct writes and the queued path before them, one after the
    other on fresh servers."""
    return await fanout.compare(
        list(fanout.PATHS),
        f"redis://{bench.redis_address}/{FANOUT_REDIS_DB}",
        clients=FANOUT_CLIENTS,
        burst=FANOUT_SYMBOLS,
        seconds=bench.profile.fanout_seconds,
    )


# --- 4. outages ----------------------------------------------------------------------------


async def probe(bench: Bench, seconds: float, every: float = 0.1) -> list[dict[str, Any]]:
    """The desktop view every ``every`` s: status and whether it was served stale."""
    timeline = []
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        entry: dict[str, Any] = {"t": round(elapsed, 2)}
        try:
            async with bench.session.get(f"{bench.base}{DESKTOP}") as response:
                entry["status"] = response.status
                entry["stale"] = "stale" in response.headers.get("X-Cache", "")
        except aiohttp.ClientError as error:
            entry["status"], entry["error"] = None, type(error).__name__
        timeline.append(entry)
        await asyncio.sleep(every)
    return timeline


async def outage(bench: Bench, what: str) -> dict[str, Any]:
    """Load at a fixed rate; ``what`` (memcached | exchange) fails at 1/6 of the window
    and comes back at 5/6."""
    profile = bench.profile
    seconds = getattr(profile, f"{what}_outage_seconds")
    rps = profile.outage_rps
    workload = standard_workload(SYMBOLS, seed=11, etags=None)
    marks: dict[str, float] = {}
    started = time.monotonic()

    async def inject() -> None:
        await asyncio.sleep(seconds / 6)
        marks["down"] = time.monotonic() - started
        if what == "memcached":
            bench.memcached.popen.kill()  # type: ignore[union-attr]
        else:
            await bench.session.post(f"{bench.exchange.control}/fail")
        await asyncio.sleep(seconds * 4 / 6)
        marks["up"] = time.monotonic() - started
        if what == "memcached":
            procs.start(bench.memcached, bench.logs)
            marks["tier_back"] = marks["up"] + await tier_back(bench, "memcached")
        else:
            await bench.session.post(f"{bench.exchange.control}/recover")

    load, timeline, _ = await asyncio.gather(
        open_loop(bench.base, workload, rps, seconds),
        probe(bench, seconds + (5 if what == "memcached" else RECOVERY_WATCH_SECONDS)),
        inject(),
    )
    summary = load.summary()
    statuses = summary["status_counts"]
    answered = sum(n for code, n in statuses.items() if int(code) < 500)
    errors_5xx = sum(n for code, n in statuses.items() if int(code) >= 500)
    return {
        "what": what,
        "http": summary,
        "answered_ratio": round(answered / summary["sent"], 5) if summary["sent"] else None,
        "http_5xx": errors_5xx,
        "connection_errors": summary["errors"],
        "stale_ratio_during": stale_ratio(timeline, marks["down"], marks["up"]),
        "recovery_seconds": (
            round(marks["tier_back"] - marks["up"], 2)
            if "tier_back" in marks
            else recovery_seconds(timeline, marks["up"])
        ),
        "marks": marks,
        "timeline": timeline,
    }


# How long the probe keeps watching after the exchange comes back: its breakers wait
# out their back-off, then one refresh brings fresh data.
RECOVERY_WATCH_SECONDS = 30


def stale_ratio(timeline: list[dict], start: float, end: float) -> float | None:
    window = [e for e in timeline if start <= e["t"] <= end and e.get("status") == 200]
    return round(sum(e["stale"] for e in window) / len(window), 3) if window else None


def recovery_seconds(timeline: list[dict], up: float) -> float | None:
    """From the exchange's return until the probe sees fresh data again."""
    for entry in timeline:
        if entry["t"] >= up and entry.get("status") == 200 and not entry["stale"]:
            return round(entry["t"] - up, 2)
    return None


async def tier_back(bench: Bench, tier: str, seconds: float = 60) -> float:
    """Seconds until readiness stops reporting ``tier`` down (the service uses it again)."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        async with bench.session.get(f"{bench.base}/health/ready") as response:
            reasons = (await response.json()).get("reasons", [])
        if not any(tier in reason for reason in reasons):
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    return float("nan")


# --- side by side: the ceiling, the audit's baseline, a typical alternative ---------------


async def throughput(bench: Bench, base: str) -> dict[str, Any]:
    """The desktop view at `side_connections` concurrent connections."""
    seconds, connections = bench.profile.side_seconds, bench.profile.side_connections
    if wrk_available():
        result = await asyncio.to_thread(run_wrk, base + DESKTOP, connections, int(seconds))
        return {"tool": "wrk", **result}
    http = await closed_loop(base, desktop, concurrency=connections, duration_s=seconds)
    summary = http.summary()
    latency = summary["latency_ms"]
    return {
        "tool": "asyncio",
        "requests_per_s": summary["throughput_rps"],
        "p50_ms": latency["p50"],
        "p99_ms": latency["p99"],
        "errors": summary["errors"],
        "non_2xx": sum(n for code, n in summary["status_counts"].items() if int(code) >= 300),
        "loadgen_cpu_seconds": summary["loadgen_cpu_seconds"],
    }


async def side_by_side(bench: Bench) -> dict[str, Any]:
    results: dict[str, Any] = {"ours": await throughput(bench, bench.base)}
    for name, flags in (
        ("ceiling", ()),
        ("naive", ("--memcached", bench.memcached_address)),
        ("fastapi_cashews", ("--redis", f"redis://{bench.redis_address}/1")),
    ):
        server = procs.baseline(bench.logs, name, *flags)
        try:
            await warm(bench.session, f"http://127.0.0.1:{server.port}")
            before = await memcached_stats(bench.memcached_address)
            redis_before = await redis_hits(bench.redis_address)
            results[name] = await throughput(bench, f"http://127.0.0.1:{server.port}")
            after = await memcached_stats(bench.memcached_address)
            redis_after = await redis_hits(bench.redis_address)
            results[name]["hit_ratio"] = _ratio(name, before, after, redis_before, redis_after)
        finally:
            server.stop()
    ours = results["ours"]["requests_per_s"]
    for name in ("ceiling", "naive", "fastapi_cashews"):
        theirs = results[name]["requests_per_s"]
        results[name]["ours_to_theirs"] = round(ours / theirs, 3) if theirs else None
    return results


async def warm(session: aiohttp.ClientSession, base: str) -> None:
    async with session.get(base + DESKTOP) as response:
        await response.read()


async def redis_hits(address: str) -> tuple[int, int]:
    redis = Redis.from_url(f"redis://{address}/0")
    stats = await redis.info("stats")
    await redis.aclose()
    return int(stats["keyspace_hits"]), int(stats["keyspace_misses"])


def _ratio(name: str, before: dict, after: dict, rb: tuple, ra: tuple) -> float | None:
    if name == "naive":
        hits = after.get("get_hits", 0) - before.get("get_hits", 0)
        misses = after.get("get_misses", 0) - before.get("get_misses", 0)
    elif name == "fastapi_cashews":
        hits, misses = ra[0] - rb[0], ra[1] - rb[1]
    else:
        return None
    return round(hits / (hits + misses), 4) if hits + misses else None


# --- ablation --------------------------------------------------------------------------------


ABLATIONS = ("none", "l1", "single_flight", "serialize_once", "compression", "refresh_ahead")


async def ablation(bench: Bench) -> list[dict[str, Any]]:
    """Our service restarted with one optimisation off at a time ("none": all on)."""
    rows = []
    for switched_off in ABLATIONS:
        if bench.app is not None:
            bench.app.stop()
        await bench.flush_caches()
        env = {} if switched_off == "none" else {"VIRTUOSO_OPTIMIZATIONS_OFF": switched_off}
        bench.start_app(f"ablation-{switched_off}", **env)
        await bench.wait_ready()
        workload = standard_workload(SYMBOLS, seed=3, etags=None)

        async def run(workload=workload) -> dict[str, Any]:
            http = await closed_loop(
                bench.base, workload, concurrency=32, duration_s=bench.profile.ablation_seconds
            )
            return {"http": http.summary()}

        row = await measured(bench, run)
        row["herd"] = await herd(bench, clients=20)
        row["mobile_bytes"] = await mobile_bytes(bench)
        rows.append({"off": switched_off, **row})
    return rows


async def mobile_bytes(bench: Bench) -> int:
    """Bytes on the wire of the mobile view for a client accepting zstd."""
    headers = {"Accept-Encoding": "zstd"}
    async with bench.session.get(
        f"{bench.base}/api/dashboard/mobile", headers=headers, auto_decompress=False
    ) as response:
        return len(await response.read())


def machine() -> dict[str, Any]:
    memory = psutil.virtual_memory().total
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"cpu": model, "cores": psutil.cpu_count(), "memory_gb": round(memory / 2**30, 1)}
