"""Exchange → client latency: the fake Bybit's stream moves every symbol's price at a
realistic tick rate, the service reads the stream as users run it, and 1,000 WebSocket
clients subscribed to the market channel (every symbol) measure how long a tick took
from the exchange to them.

The service: ``virtuoso serve`` as users run it — its default collector *child*
process (``VIRTUOSO_COLLECTOR=child``, over Redis as with the shared tiers), streams on
(the default), ``VIRTUOSO_EXCHANGE_URL`` / ``VIRTUOSO_EXCHANGE_WS_URL`` on the fake
(REST and ``/v5/public/spot`` on one port), the 25 default symbols. The bench's own
service is stopped meanwhile (its REST polling would count on the same fake exchange
and its CPU would share the cores) and started again afterwards.

The ticks: each symbol ticks at a rate of its own drawn uniformly from ``TICK_HZ``
(1–2 ticks a second), at a random phase, so about 37 ticker messages a second arrive
for the 25 symbols, spread out rather than in bursts. A tick moves the price by at
most 0.05 % (at least one price tick), so every tick changes the market update of its
symbol. That is a moderate market: Bybit's spot ticker stream pushes a busy pair up to
every 50 ms, so ``BENCH_TICK_HZ="lo,hi"`` sets another range (e.g. ``4,8``: ~150
ticks a second, where coalescing to ``TARGET_RATE`` per symbol engages).

Per received market update: latency = receipt time − ``generated_at``, the exchange's
event time of the ticker (the Bybit message's ``ts``: ccxt.pro's bybit
``handle_ticker`` sets the ticker's ``timestamp`` from it, ``ticker_from_ccxt`` carries
it into ``Ticker.timestamp_ms`` and the live update is stamped with it). The fake
stamps ``ts`` just before it writes the message, so it is the fake's send time (to
the millisecond, truncated: up to 1 ms more latency than there was). That chain is
checked on every run: the updates of one client per client process (symbol, price,
``generated_at``) are matched against the fake's own log of what it sent
(``check``). Split: exchange → published (``published_at`` − ``generated_at``: ccxt,
the collector, coalescing) and published → received (the fan-out and the client
harness).

Also measured: the rate per (channel, symbol) as published (the most updates of one
symbol in any 1 s, from each distinct update's ``published_at``: the coalescing bound)
and as a client sees it (delivery jitter included), the REST calls the fake exchange
received per path during the steady window and before it (start-up and backfill), the
data age of ``/api/dashboard/data`` sampled twice a second, the CPU of the server, its
collector child, the fake and the client harness, and the harness's own event-loop lag
(a 10 ms timer's overshoot in each client process, in the window): what of the latency
is the measuring side's.

    python -m bench.run --only exchange_latency [--quick]
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import sys
import time
from collections import Counter, deque
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson
import psutil
import uvloop

from bench import procs, ws_fanout
from bench.loadgen.stats import cpu_seconds
from bench.loadgen.ws import _parse
from bench.loadgen.ws_raw import RawClient, raw_fanout
from bench.metrics import calls_between, exchange_counts
from bench.symbols import SYMBOLS
from tools.fake_bybit_derivatives import (
    ACCOUNT_RATIO_PATH,
    FUNDING_HISTORY_PATH,
    OPEN_INTEREST_PATH,
)
from tools.local_stack import Process
from tools.ports import free_port

if TYPE_CHECKING:
    from bench.scenarios import Bench

CLIENTS = 1000
SHARDS = 2  # client processes (as bench/ws_fanout.py)
TICK_HZ = (1.0, 2.0)  # each symbol's tick rate, drawn uniformly (BENCH_TICK_HZ="lo,hi")
TICK_SEED = 18
REDIS_DB = 3  # the service's Redis database, away from the bench's own service
TARGET_P99_MS = 250.0
TARGET_AGE_S = 2.0
TARGET_RATE = 4  # messages per (channel, symbol) per second, at most
REST_STEADY_PER_MIN = 1.0  # "≈ 0": at most this many REST calls a minute in steady state
AGE_EVERY_S = 0.5
LAG_EVERY_S = 0.01
BIN_PER_MS = 10  # histogram bins: 0.1 ms
RATE_KEEP = 8  # receipt times kept per (client, symbol) for the 1 s rate
SAMPLE_MAX = 5000  # updates of the sampled client kept for the check against the fake
STREAMS_LIVE_S = 60.0
READY_S = 90.0
GRACE_S = 3.0  # after a client's window: updates of ticks inside it still arrive
DESKTOP = "/api/dashboard/data"
TICKERS = "/v5/market/tickers"
DERIVATIVES_PATHS = frozenset({FUNDING_HISTORY_PATH, OPEN_INTEREST_PATH, ACCOUNT_RATIO_PATH})


@dataclass(frozen=True)
class LatencyProfile:
    warmup_seconds: float  # ticking before the window: start-up, backfill, first refreshes
    steady_seconds: float  # the measured window


PROFILES = {
    "full": LatencyProfile(warmup_seconds=25, steady_seconds=60),
    "quick": LatencyProfile(warmup_seconds=20, steady_seconds=30),
}


# --- histograms ----------------------------------------------------------------------------


def _bin(ms: float) -> int:
    return math.floor(ms * BIN_PER_MS)


def summary(hist: dict[int, int]) -> dict[str, float | int | None]:
    """``{count, p50, p90, p99, max}`` (ms, 0.1 ms bins: each figure is its bin's upper
    edge) of a histogram of ``_bin`` values."""
    count = sum(hist.values())
    if not count:
        return {"count": 0, "p50": None, "p90": None, "p99": None, "max": None}
    ordered = sorted(hist.items())
    out: dict[str, float | int | None] = {"count": count}
    for name, q in (("p50", 50), ("p90", 90), ("p99", 99)):
        rank, seen = max(1, math.ceil(count * q / 100)), 0
        for value, n in ordered:
            seen += n
            if seen >= rank:
                out[name] = round((value + 1) / BIN_PER_MS, 1)
                break
    out["max"] = round((ordered[-1][0] + 1) / BIN_PER_MS, 1)
    return out


def merge(hists: Iterable[dict[Any, int]]) -> dict[int, int]:
    """Histograms added up (keys may come as JSON strings)."""
    total: Counter[int] = Counter()
    for hist in hists:
        for key, n in hist.items():
            total[int(key)] += n
    return dict(total)


# --- the clients (one process per shard) ----------------------------------------------------


class Tally:
    """What one shard's clients measured (see the module docstring)."""

    def __init__(self) -> None:
        self.latency: Counter[int] = Counter()  # receipt − generated_at
        self.delivery: Counter[int] = Counter()  # receipt − published_at
        # per message: (generated_at epoch ms, published_at epoch s)
        self.messages: dict[tuple[str, int], tuple[int, float]] = {}
        self.first: dict[tuple[str, int], float] = {}  # per message: its first client's latency
        self.received = 0
        self.negative = 0  # receipt before generated_at (clock disagreement): none expected
        self.max_in_second = 0  # most messages of one symbol in 1 s at one client
        self.min_gap_ms = math.inf  # smallest gap between two messages of one symbol
        self.over_rate = 0  # messages beyond TARGET_RATE within 1 s of one symbol
        self.per_key: Counter[tuple[int, str]] = Counter()  # (client, symbol) → messages
        self.sample: list[tuple[str, float | None, int]] = []  # (symbol, price, generated_at)
        self.sampler: int | None = None  # the client whose updates are sampled
        self.lag: Counter[int] = Counter()  # the event loop's overshoot of a 10 ms timer
        self.clients = 0


TALLY = Tally()


class LatencyClient(RawClient):
    """A lean reader measuring exchange → client latency of market updates."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.number = TALLY.clients
        TALLY.clients += 1
        if TALLY.sampler is None:
            TALLY.sampler = self.number
        self.recent: dict[str, deque[float]] = {}

    def _message(self, raw: bytes, now: float) -> None:
        run = self.run
        if not raw.startswith(b'{"type":"update"'):
            super()._message(raw, now)
            return
        if run.win_start == math.inf:
            return
        head = _parse(raw)
        if head.get("channel") != "market" or head.get("symbol") is None:
            return
        symbol, seq = head["symbol"], int(head["seq"])
        generated, published = head.get("generated_at"), head.get("published_at")
        # an update belongs to the window by its tick's time, so every client counts the
        # same ones (the grace after the window lets the last ones arrive)
        if generated is None or not run.win_start * 1000 <= generated < run.win_end * 1000:
            return
        tally = TALLY
        tally.received += 1
        ms = now * 1000.0 - generated
        if ms < 0:
            tally.negative += 1
        tally.latency[_bin(ms)] += 1
        key = (symbol, seq)
        if ms < tally.first.get(key, math.inf):
            tally.first[key] = ms
        if published is not None:
            tally.delivery[_bin((now - published) * 1000.0)] += 1
            if key not in tally.messages:
                tally.messages[key] = (int(generated), float(published))
        self._rate(symbol, now)
        if self.number == tally.sampler and len(tally.sample) < SAMPLE_MAX:
            data = orjson.loads(raw).get("data") or {}
            tally.sample.append((symbol, data.get("price"), int(generated)))

    def _rate(self, symbol: str, now: float) -> None:
        tally = TALLY
        tally.per_key[(self.number, symbol)] += 1
        recent = self.recent.get(symbol)
        if recent is None:
            recent = self.recent[symbol] = deque(maxlen=RATE_KEEP)
        elif recent:
            tally.min_gap_ms = min(tally.min_gap_ms, (now - recent[-1]) * 1000.0)
        recent.append(now)
        within = sum(1 for at in recent if now - at < 1.0)
        tally.max_in_second = max(tally.max_in_second, within)
        if within > TARGET_RATE:
            tally.over_rate += 1


async def _loop_lag(run_window: dict[str, float], stop: asyncio.Event) -> None:
    """The overshoot of a ``LAG_EVERY_S`` timer, counted while the window is open."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        await asyncio.sleep(LAG_EVERY_S)
        if run_window["open"]:
            TALLY.lag[_bin((loop.time() - started - LAG_EVERY_S) * 1000.0)] += 1


async def shard_main(url: str, clients: int, seconds: float) -> None:
    """A shard: ``clients`` latency readers; prints ``ws_fanout.READY_LINE`` when its window
    opens, then its tally as one JSON document."""
    window = {"open": 0.0}

    def announce() -> None:
        window["open"] = time.time()
        sys.stdout.buffer.write(ws_fanout.READY_LINE)
        sys.stdout.buffer.flush()

    stop = asyncio.Event()
    lag = asyncio.create_task(_loop_lag(window, stop))
    cpu_start = cpu_seconds()
    raw = await raw_fanout(
        url, clients, ["market"], seconds, grace_s=GRACE_S, on_window=announce, client=LatencyClient
    )
    window["open"] = 0.0
    stop.set()
    await lag
    tally = TALLY
    rates = [n / seconds for n in tally.per_key.values()]
    out = {
        "connected": raw.connected,
        "failed": raw.failed,
        "close_codes": {str(code): n for code, n in raw.close_codes.items()},
        "received": tally.received,
        "negative": tally.negative,
        "latency": tally.latency,
        "delivery": tally.delivery,
        "messages_seen": [[s, q, g, p] for (s, q), (g, p) in tally.messages.items()],
        "first": list(tally.first.values()),
        "messages": len(tally.first),
        "max_in_second": tally.max_in_second,
        "min_gap_ms": None if tally.min_gap_ms == math.inf else round(tally.min_gap_ms, 1),
        "over_rate": tally.over_rate,
        "max_mean_rate": round(max(rates), 3) if rates else None,
        "mean_rate": round(sum(rates) / len(rates), 3) if rates else None,
        "keys": len(tally.per_key),
        "sample": tally.sample,
        "lag": tally.lag,
        "cpu_seconds": round(cpu_seconds() - cpu_start, 3),
    }
    sys.stdout.buffer.write(orjson.dumps(out, option=orjson.OPT_NON_STR_KEYS))


class Shard(ws_fanout.Shard):
    """One client process (``--shard``): announces its window, then its tally."""

    def __init__(self, url: str, clients: int, seconds: float) -> None:
        super().__init__("bench.exchange_latency", [url, str(clients), str(seconds)], seconds)

    def cpu(self) -> float:
        return _tree_cpu(self.proc.pid if self.proc else None)


# --- the service and the exchange -------------------------------------------------------------


def derivatives_calls(calls: dict[str, int]) -> dict[str, int]:
    """The calls (by counted path) that read the linear perpetuals: funding, open
    interest, account ratio and linear tickers — REST by design, on their own cadence."""
    return {path: n for path, n in calls.items() if _is_derivatives(path)}


def spot_calls(calls: dict[str, int]) -> dict[str, int]:
    """The calls for the spot market (prices, candles, books): what the streams replace."""
    return {path: n for path, n in calls.items() if not _is_derivatives(path)}


def _is_derivatives(path: str) -> bool:
    return path.endswith("?category=linear") or path in DERIVATIVES_PATHS


def service(bench: Bench) -> Process:
    """``virtuoso serve`` with its default collector child, streams on, on the fake."""
    port = free_port()
    ws_url = bench.exchange.url.replace("http://", "ws://")
    env = procs.tier_env(bench.memcached_address, bench.redis_address, REDIS_DB) | {
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_COLLECTOR": "child",
        "VIRTUOSO_STREAMS": "on",
        "VIRTUOSO_EXCHANGE": "bybit",
        "VIRTUOSO_EXCHANGE_URL": bench.exchange.url,
        "VIRTUOSO_EXCHANGE_WS_URL": ws_url,
        "VIRTUOSO_DATA_DIR": str(bench.logs / "exchange-latency-data"),
        "VIRTUOSO_REPLICA_ID": "exchange-latency",
    }
    virtuoso = str(Path(sys.executable).with_name("virtuoso"))
    return procs.start(Process("exchange-latency", [virtuoso, "serve"], port, env), bench.logs)


def _tree_cpu(pid: int | None, *, children: bool = True) -> float:
    """CPU seconds of ``pid`` and (``children``) its descendants; 0 when gone."""
    if pid is None:
        return 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        root = psutil.Process(pid)
        total = 0.0
        for member in [root, *(root.children(recursive=True) if children else [])]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = member.cpu_times()
                total += times.user + times.system
        return total
    return 0.0


async def _json(session: aiohttp.ClientSession, method: str, url: str) -> Any:
    async with session.request(method, url) as response:
        response.raise_for_status()
        return await response.json()


async def ready(session: aiohttp.ClientSession, base: str) -> None:
    deadline = time.monotonic() + READY_S
    while time.monotonic() < deadline:
        with contextlib.suppress(aiohttp.ClientError):
            async with session.get(f"{base}/health/ready") as response:
                if response.status == 200:
                    return
        await asyncio.sleep(0.2)
    raise RuntimeError("the streaming service did not become ready")


async def streams_live(session: aiohttp.ClientSession, control: str) -> dict[str, Any]:
    """Waits until the fake holds a ticker subscription for every symbol."""
    wanted = {f"tickers.{symbol}" for symbol in SYMBOLS}
    deadline = time.monotonic() + STREAMS_LIVE_S
    while time.monotonic() < deadline:
        status = await _json(session, "GET", f"{control}/streams/status")
        if wanted <= set(status["topics"]):
            result: dict[str, Any] = status
            return result
        await asyncio.sleep(0.2)
    raise RuntimeError("the service did not subscribe to every symbol's ticker stream")


async def sample_age(
    session: aiohttp.ClientSession, base: str, stop: asyncio.Event
) -> list[dict[str, Any]]:
    """``/api/dashboard/data`` every ``AGE_EVERY_S``: its ``age_ms`` (the server's count)
    and now − its ``generated_at`` (this side's clock, after the body arrived)."""
    samples = []
    while not stop.is_set():
        with contextlib.suppress(aiohttp.ClientError, ValueError, TimeoutError):
            async with session.get(base + DESKTOP) as response:
                body = await response.read()
                now_ms = time.time() * 1000
            data = orjson.loads(body)
            generated = data.get("generated_at")
            samples.append(
                {
                    "status": response.status,
                    "age_ms": data.get("age_ms"),
                    "stale": data.get("stale"),
                    "seen_age_ms": None if generated is None else round(now_ms - generated, 1),
                }
            )
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), AGE_EVERY_S)
    return samples


# --- the scenario -------------------------------------------------------------------------


async def exchange_latency(bench: Bench) -> dict[str, Any]:
    """The scenario (module docstring); the bench's own service is stopped meanwhile
    and started again afterwards."""
    profile = PROFILES.get(bench.profile.name, PROFILES["quick"])
    low, high = tick_hz()
    if bench.app is not None:
        bench.app.stop()
    try:
        return await _measure(bench, profile, (low, high))
    finally:
        await bench.flush_caches()
        bench.start_app()
        await bench.wait_ready()


def tick_hz() -> tuple[float, float]:
    """The per-symbol tick rate range: ``TICK_HZ``, or ``BENCH_TICK_HZ`` ("lo,hi")."""
    override = os.environ.get("BENCH_TICK_HZ")
    if not override:
        return TICK_HZ
    low, high = (float(part) for part in override.split(","))
    if not 0 < low <= high:
        raise ValueError(f"BENCH_TICK_HZ must be lo,hi with 0 < lo <= hi, not {override!r}")
    return low, high


async def _measure(
    bench: Bench, profile: LatencyProfile, hz: tuple[float, float]
) -> dict[str, Any]:
    session, control = bench.session, bench.exchange.control
    load_before = os.getloadavg()
    calls_start = await exchange_counts(session, control)
    opened_before = (await _json(session, "GET", f"{control}/streams/status"))["connections_opened"]
    ticking = await _json(
        session,
        "POST",
        f"{control}/streams/ticking?min_hz={hz[0]}&max_hz={hz[1]}&seed={TICK_SEED}",
    )
    server: Process | None = None
    shards: list[Shard] = []
    try:
        started = time.monotonic()
        server = service(bench)
        base = f"http://127.0.0.1:{server.port}"
        await ready(session, base)
        await streams_live(session, control)
        ready_s = time.monotonic() - started
        await asyncio.sleep(profile.warmup_seconds)
        per = math.ceil(CLIENTS / SHARDS)
        url = f"ws://127.0.0.1:{server.port}/ws"
        shards = [
            Shard(url, min(per, CLIENTS - i * per), profile.steady_seconds) for i in range(SHARDS)
        ]
        for shard in shards:
            await shard.start()
        async with asyncio.timeout(READY_S):
            await asyncio.gather(*(shard.ready() for shard in shards))
        calls_before = await exchange_counts(session, control)
        cpu_before = _cpus(server, bench, shards)
        window_started, window_from_ms = time.monotonic(), time.time() * 1000
        stop = asyncio.Event()
        ages = asyncio.create_task(sample_age(session, base, stop))
        await asyncio.sleep(profile.steady_seconds)
        stop.set()
        elapsed, window_to_ms = time.monotonic() - window_started, time.time() * 1000
        calls_after = await exchange_counts(session, control)
        cpu_after = _cpus(server, bench, shards)
        age_samples = await ages
        results = list(await asyncio.gather(*(shard.result() for shard in shards)))
        sent = await _json(session, "GET", f"{control}/streams/sent")
        status = await _json(session, "GET", f"{control}/streams/status")
    finally:
        for shard in shards:
            await shard.kill()
        with contextlib.suppress(aiohttp.ClientError):
            await _json(session, "POST", f"{control}/streams/stop")
        if server is not None:
            server.stop()
    steady = calls_between(calls_before, calls_after)
    startup = calls_between(calls_start, calls_before)
    cpu = {
        name: round(100 * (cpu_after[name] - cpu_before[name]) / elapsed, 1) for name in cpu_before
    }
    return {
        "clients": CLIENTS,
        "shards": SHARDS,
        "tick_hz": list(hz),
        "tick_rates": ticking["rates"],
        "ticks_per_second": round(sum(ticking["rates"].values()), 1),
        "warmup_seconds": profile.warmup_seconds,
        "ready_seconds": round(ready_s, 1),
        "seconds": round(elapsed, 1),
        "service": "virtuoso serve, collector child (over Redis), streams on",
        **pool(results, profile.steady_seconds),
        "check": check(results, sent),
        "exchange_ticks_sent": len(sent),
        "exchange_ticks_in_window": sum(
            1 for row in sent if window_from_ms <= row[2] < window_to_ms
        ),
        "stream_connections_opened": status["connections_opened"] - opened_before,
        "rest_steady": spot_calls(steady),
        "rest_steady_per_minute": round(sum(spot_calls(steady).values()) * 60 / elapsed, 1),
        "rest_steady_tickers_per_minute": round(steady.get(TICKERS, 0) * 60 / elapsed, 1),
        "rest_derivatives": derivatives_calls(steady),
        "rest_derivatives_per_minute": round(
            sum(derivatives_calls(steady).values()) * 60 / elapsed, 1
        ),
        "rest_before_window": startup,
        "data_age": ages_summary(age_samples),
        "cpu_percent": cpu,
        "load_average": {
            "before": [round(x, 2) for x in load_before],
            "after": [round(x, 2) for x in os.getloadavg()],
        },
    }


def _cpus(server: Process, bench: Bench, shards: list[Shard]) -> dict[str, float]:
    """CPU seconds so far: the serving process, its collector child (its descendants),
    the fake exchange, the client shards."""
    assert server.popen is not None
    whole = _tree_cpu(server.popen.pid)
    alone = _tree_cpu(server.popen.pid, children=False)
    return {
        "server": alone,
        "collector": whole - alone,
        "exchange": _tree_cpu(bench.exchange.popen.pid),
        "clients": sum(shard.cpu() for shard in shards),
    }


def pool(results: list[dict[str, Any]], seconds: float) -> dict[str, Any]:
    """The shards' tallies as one row."""
    connected = sum(r["connected"] for r in results)
    first = [ms for r in results for ms in r["first"]]
    published: dict[tuple[str, int], tuple[int, float]] = {}
    for r in results:
        for symbol, seq, generated, at in r["messages_seen"]:
            published[(symbol, seq)] = (generated, at)
    collector = [at * 1000.0 - generated for generated, at in published.values()]
    messages = len(first)  # per shard: the same message counts in each, so…
    distinct = max((r["messages"] for r in results), default=0)  # …take one shard's
    received = sum(r["received"] for r in results)
    expected = sum(r["messages"] * r["connected"] for r in results)
    return {
        "connected": connected,
        "failed": sum(r["failed"] for r in results),
        "close_codes": merge(r["close_codes"] for r in results),
        "updates_received": received,
        "distinct_updates": distinct,
        "reach": round(received / expected, 4) if expected else None,
        "negative_latencies": sum(r["negative"] for r in results),
        "latency_ms": summary(merge(r["latency"] for r in results)),
        "published_to_client_ms": summary(merge(r["delivery"] for r in results)),
        "exchange_to_published_ms": summary(merge([Counter(map(_bin, collector))])),
        "first_client_ms": summary(merge([Counter(map(_bin, first))])),
        "first_counted": messages,
        "published_rate": publish_rate(published),
        "slowest_published": slowest(published),
        "rate": {
            "max_in_any_second": max((r["max_in_second"] for r in results), default=0),
            "over_limit": sum(r["over_rate"] for r in results),
            "min_gap_ms": min(
                (r["min_gap_ms"] for r in results if r["min_gap_ms"] is not None), default=None
            ),
            "max_mean_per_second": max((r["max_mean_rate"] or 0 for r in results), default=0),
            "mean_per_second": round(
                sum(r["mean_rate"] or 0 for r in results) / max(1, len(results)), 3
            ),
            "window_seconds": seconds,
        },
        "harness": {
            "loop_lag_ms": summary(merge(r["lag"] for r in results)),
            "cpu_seconds": round(sum(r["cpu_seconds"] for r in results), 1),
        },
    }


def publish_rate(published: dict[tuple[str, int], tuple[int, float]]) -> dict[str, Any]:
    """Per symbol, the market updates in the order the collector published them (by
    ``seq``; ``published_at`` of each distinct update): the most in any 1 s, the smallest
    gap — the coalescing bound itself, free of the delivery's jitter — the closest pairs
    (symbol, UTC time, gap ms), and ``older_after_newer``: updates whose tick is older
    than the one published before them for that symbol (a price going back on screen)."""
    series: dict[str, list[tuple[int, int, float]]] = {}
    for (symbol, seq), (generated, at) in published.items():
        series.setdefault(symbol, []).append((seq, generated, at))
    most, gaps, older = 0, [], []
    for symbol, updates in series.items():
        updates.sort()
        start = 0
        for end, (_seq, generated, at) in enumerate(updates):
            while at - updates[start][2] >= 1.0:
                start += 1
            most = max(most, end - start + 1)
            if end:
                gaps.append((at - updates[end - 1][2], symbol, at))
                if generated < updates[end - 1][1]:
                    older.append([symbol, _utc(at * 1000), updates[end - 1][1] - generated])
    gaps.sort()
    return {
        "symbols": len(series),
        "max_in_any_second": most,
        "min_gap_ms": round(gaps[0][0] * 1000, 1) if gaps else None,
        "under_interval": sum(1 for gap, _, _ in gaps if gap < 1.0 / TARGET_RATE - 0.002),
        "closest": [
            [symbol, _utc(at * 1000), round(gap * 1000, 1)] for gap, symbol, at in gaps[:6]
        ],
        "older_after_newer": len(older),
        "older_examples": older[:6],  # symbol, published (UTC), ms older than the one before
    }


def _utc(epoch_ms: float) -> str:
    whole = int(epoch_ms)
    return time.strftime("%H:%M:%S", time.gmtime(whole / 1000)) + f".{whole % 1000:03d}"


def slowest(published: dict[tuple[str, int], tuple[int, float]], n: int = 12) -> list[Any]:
    """The ``n`` updates slowest from the exchange to their publishing: (symbol, UTC time
    of the tick, ms) — when they cluster (e.g. every refresh), the cause shows."""
    rows = sorted(
        (
            (at * 1000.0 - generated, symbol, generated)
            for (symbol, _), (generated, at) in published.items()
        ),
        reverse=True,
    )[:n]
    return [
        [
            symbol,
            time.strftime("%H:%M:%S", time.gmtime(generated / 1000)) + f".{generated % 1000:03d}",
            round(ms, 1),
        ]
        for ms, symbol, generated in rows
    ]


def check(results: list[dict[str, Any]], sent: list[list[Any]]) -> dict[str, Any]:
    """Matches the sampled client's updates (symbol, price, generated_at) with the fake's
    log of ticker messages (symbol, price, ts): ``matched`` — generated_at is the ts of a
    message the fake sent for that symbol; ``price_matched`` — and with that price."""
    by_key = {(symbol, int(ts)): float(price) for symbol, price, ts in sent}
    sample = [row for r in results for row in r["sample"]][:SAMPLE_MAX]
    matched = priced = 0
    for symbol, price, generated in sample:
        sent_price = by_key.get((symbol, int(generated)))
        if sent_price is not None:
            matched += 1
            priced += price is not None and math.isclose(sent_price, price, rel_tol=1e-9)
    return {
        "sampled": len(sample),
        "matched": matched,
        "price_matched": priced,
        "matched_ratio": round(matched / len(sample), 4) if sample else None,
    }


def ages_summary(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Seconds: p50 and max of the served ``age_ms`` and of the age seen by this side."""

    def stats(values: list[float]) -> dict[str, float | None]:
        ordered = sorted(values)
        if not ordered:
            return {"p50": None, "max": None}
        return {
            "p50": round(ordered[(len(ordered) - 1) // 2] / 1000, 3),
            "max": round(ordered[-1] / 1000, 3),
        }

    ok = [s for s in samples if s["status"] == 200]
    return {
        "samples": len(samples),
        "ok": len(ok),
        "stale": sum(1 for s in ok if s["stale"]),
        "served_age_s": stats([s["age_ms"] for s in ok if s["age_ms"] is not None]),
        "seen_age_s": stats([s["seen_age_ms"] for s in ok if s["seen_age_ms"] is not None]),
    }


def main() -> None:
    """``--shard URL CLIENTS SECONDS``: one client process (the scenario starts them)."""
    if len(sys.argv) == 5 and sys.argv[1] == "--shard":
        url, clients, seconds = sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
        uvloop.run(shard_main(url, clients, seconds))
        return
    print(json.dumps({"usage": "python -m bench.run --only exchange_latency"}))


if __name__ == "__main__":
    main()
