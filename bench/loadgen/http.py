"""HTTP load: closed and open loops over one aiohttp session, the standard dashboard
workload, and ``wrk`` (run as a subprocess, its text output parsed).

Closed loop: ``concurrency`` workers, each sending its next request as soon as the
previous one is answered — throughput at a given concurrency.

Open loop: request *i* is due at ``t0 + i / rate`` whatever happened to the others, and
its latency runs from that scheduled instant to the end of its response body, so a
server (or a load generator) that falls behind shows it in the latency instead of
silently sending fewer requests (coordinated omission corrected). At most
``max_in_flight`` requests are outstanding; a request due while that many are is
counted ``dropped``.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from yarl import URL

from bench.loadgen.stats import (
    LatencySummary,
    children_cpu_seconds,
    cpu_seconds,
    raise_nofile_limit,
)

T = TypeVar("T")

_URL_CACHE_LIMIT = 10_000


@dataclass(slots=True)
class Request:
    path: str  # path and query, e.g. "/api/market/candles/BTCUSDT?timeframe=1h"
    method: str = "GET"
    headers: dict[str, str] | None = None
    body: bytes | None = None


@dataclass
class HttpResult:
    mode: str  # "closed" | "open"
    target_rps: float | None = None  # open loop
    concurrency: int | None = None  # closed loop
    max_in_flight: int | None = None  # open loop
    sent: int = 0
    completed: int = 0  # responses read to the end, whatever their status
    errors: int = 0  # no response: connection errors, timeouts
    dropped: int = 0  # open loop: due while max_in_flight were outstanding, not sent
    status_counts: dict[int, int] = field(default_factory=dict)
    error_kinds: dict[str, int] = field(default_factory=dict)  # exception name → count
    latencies_ms: list[float] = field(default_factory=list)  # completed requests only
    # perf_counter seconds each completed request was due (closed loop: sent), in the
    # order of latencies_ms: latency can be looked at by when it happened
    started_s: list[float] = field(default_factory=list)
    duration_s: float = 0.0  # first send to the last answer (or give-up)
    throughput_rps: float = 0.0  # completed / duration_s
    loadgen_cpu_seconds: float = 0.0  # this process, over the whole run

    def summary(self) -> dict[str, Any]:
        """Everything but the raw latencies, JSON-able (string keys), plus the latency
        summary and ``loadgen_cpu_share`` (CPU seconds per wall second: 1.0 = one core)."""
        return {
            "mode": self.mode,
            "target_rps": self.target_rps,
            "concurrency": self.concurrency,
            "max_in_flight": self.max_in_flight,
            "sent": self.sent,
            "completed": self.completed,
            "errors": self.errors,
            "dropped": self.dropped,
            "status_counts": {str(k): v for k, v in sorted(self.status_counts.items())},
            "error_kinds": dict(self.error_kinds),
            "duration_s": round(self.duration_s, 3),
            "throughput_rps": round(self.throughput_rps, 1),
            "loadgen_cpu_seconds": round(self.loadgen_cpu_seconds, 3),
            "loadgen_cpu_share": (
                round(self.loadgen_cpu_seconds / self.duration_s, 3) if self.duration_s else None
            ),
            "latency_ms": LatencySummary.from_ms(self.latencies_ms),
        }


class EtagMemory:
    """The last ETag seen per request path (path and query)."""

    __slots__ = ("_tags",)

    def __init__(self) -> None:
        self._tags: dict[str, str] = {}

    def get(self, path: str) -> str | None:
        return self._tags.get(path)

    def remember(self, path: str, etag: str) -> None:
        self._tags[path] = etag

    def __len__(self) -> int:
        return len(self._tags)

    def __contains__(self, path: object) -> bool:
        return path in self._tags


# -- the loops ----------------------------------------------------------------------------


class _Run:
    """Counters shared by the requests of one run, and the one session they use."""

    def __init__(
        self,
        base_url: str,
        session: aiohttp.ClientSession,
        etags: EtagMemory | None,
        result: HttpResult,
    ) -> None:
        self.base = base_url.rstrip("/")
        self.session = session
        self.etags = etags
        self.result = result
        self.status: Counter[int] = Counter()
        self.error_kinds: Counter[str] = Counter()
        self.urls: dict[str, URL] = {}

    def url(self, path: str) -> URL:
        url = self.urls.get(path)
        if url is None:
            url = URL(self.base + path)
            if len(self.urls) < _URL_CACHE_LIMIT:
                self.urls[path] = url
        return url

    async def send(self, request: Request, start: float) -> None:
        """One request; its latency runs from ``start`` (perf_counter seconds)."""
        result = self.result
        result.sent += 1
        try:
            async with self.session.request(
                request.method, self.url(request.path), headers=request.headers, data=request.body
            ) as response:
                await response.read()
                status = response.status
                etag = response.headers.get("ETag") if self.etags is not None else None
        except Exception as exc:  # no response: refused, reset, timeout, truncated body…
            result.errors += 1
            self.error_kinds[type(exc).__name__] += 1
            return
        result.latencies_ms.append((time.perf_counter() - start) * 1000.0)
        result.started_s.append(start)
        result.completed += 1
        self.status[status] += 1
        if etag:
            self.etags.remember(request.path, etag)  # type: ignore[union-attr]

    def finish(self, started: float, cpu_before: float) -> HttpResult:
        result = self.result
        result.duration_s = time.perf_counter() - started
        result.throughput_rps = result.completed / result.duration_s if result.duration_s else 0.0
        result.status_counts = dict(self.status)
        result.error_kinds = dict(self.error_kinds)
        result.loadgen_cpu_seconds = cpu_seconds() - cpu_before
        return result


def _session(limit: int, timeout_s: float) -> aiohttp.ClientSession:
    raise_nofile_limit(limit + 256)
    connector = aiohttp.TCPConnector(limit=limit, limit_per_host=0, keepalive_timeout=60)
    return aiohttp.ClientSession(
        connector=connector,
        timeout=aiohttp.ClientTimeout(total=timeout_s),
        auto_decompress=False,
        # The workload says which clients take zstd; aiohttp's own default
        # (gzip, deflate and whatever codecs are installed) would blur that.
        skip_auto_headers=("Accept-Encoding",),
        cookie_jar=aiohttp.DummyCookieJar(),
    )


def _etags_of(next_request: Callable[[int], Request], etags: EtagMemory | None):
    return etags if etags is not None else getattr(next_request, "etags", None)


async def closed_loop(
    base_url: str,
    next_request: Callable[[int], Request],
    concurrency: int,
    duration_s: float | None = None,
    total: int | None = None,
    timeout_s: float = 10,
    *,
    etags: EtagMemory | None = None,
) -> HttpResult:
    """``concurrency`` workers sending back to back until ``duration_s`` has passed or
    ``total`` requests were sent (whichever comes first; at least one must be given).

    Request ``i`` is ``next_request(i)``, i = 0, 1, … in sending order. Requests under
    way at the deadline are answered (each bounded by ``timeout_s``). ETags are
    remembered in ``etags``, or in ``next_request.etags`` (see :func:`standard_workload`).
    """
    if duration_s is None and total is None:
        raise ValueError("give duration_s, total or both")
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    result = HttpResult(mode="closed", concurrency=concurrency)
    cpu_before = cpu_seconds()
    async with _session(concurrency, timeout_s) as session:
        run = _Run(base_url, session, _etags_of(next_request, etags), result)
        started = time.perf_counter()
        deadline = started + duration_s if duration_s is not None else float("inf")
        limit = total if total is not None else float("inf")
        counter = itertools.count()  # shared: request numbers in sending order

        async def worker() -> None:
            for i in counter:
                if i >= limit:
                    return
                now = time.perf_counter()
                if now >= deadline:
                    return
                await run.send(next_request(i), now)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return run.finish(started, cpu_before)


async def open_loop(
    base_url: str,
    next_request: Callable[[int], Request],
    rate_rps: float,
    duration_s: float,
    timeout_s: float = 10,
    max_in_flight: int = 2000,
    *,
    etags: EtagMemory | None = None,
) -> HttpResult:
    """Request ``i`` (``next_request(i)``) is due at ``t0 + i / rate_rps`` for every
    ``i / rate_rps < duration_s``; latency is measured from that due time.

    A request due while ``max_in_flight`` are outstanding is counted ``dropped`` (its
    ``next_request(i)`` is still drawn, so the sequence does not depend on drops).
    After the schedule, outstanding requests are awaited, at most ``timeout_s`` (+1 s;
    the ones still open then are cancelled and counted as errors).
    """
    if rate_rps <= 0 or duration_s <= 0:
        raise ValueError("rate_rps and duration_s must be positive")
    if max_in_flight < 1:
        raise ValueError("max_in_flight must be at least 1")
    result = HttpResult(mode="open", target_rps=rate_rps, max_in_flight=max_in_flight)
    cpu_before = cpu_seconds()
    async with _session(max_in_flight, timeout_s) as session:
        run = _Run(base_url, session, _etags_of(next_request, etags), result)
        tasks: set[asyncio.Task[None]] = set()
        interval = 1.0 / rate_rps
        scheduled = rate_rps * duration_s  # requests i with i < scheduled
        t0 = time.perf_counter()
        i = 0
        while i < scheduled:
            now = time.perf_counter()
            due = t0 + i * interval
            if due > now:
                await asyncio.sleep(due - now)
                continue
            # Everything due by now goes out at once: a late wake-up shows as latency.
            while i < scheduled and due <= now:
                request = next_request(i)
                if len(tasks) >= max_in_flight:
                    result.dropped += 1
                else:
                    task = asyncio.create_task(run.send(request, due))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                i += 1
                due = t0 + i * interval
        if tasks:
            _, pending = await asyncio.wait(set(tasks), timeout=timeout_s + 1)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1)
                result.errors += len(pending)
                run.error_kinds["CancelledAtEnd"] += len(pending)
        return run.finish(t0, cpu_before)


# -- the standard workload ----------------------------------------------------------------


def zipf_sampler(items: Sequence[T], exponent: float, rng: random.Random) -> Callable[[], T]:
    """Draws ``items[k]`` with probability ∝ 1 / (k + 1) ** exponent (the first is the
    most popular), from ``rng``."""
    if not items:
        raise ValueError("zipf_sampler needs at least one item")
    pool = list(items)
    cumulative = list(itertools.accumulate(1.0 / (k + 1) ** exponent for k in range(len(pool))))
    total = cumulative[-1]
    last = len(pool) - 1
    draw = rng.random

    def sample() -> T:
        return pool[min(bisect.bisect_right(cumulative, draw() * total), last)]

    return sample


# (weight %, kind) of the standard mix
STANDARD_MIX: tuple[tuple[int, str], ...] = (
    (30, "dashboard"),
    (25, "mobile"),
    (25, "confluence"),
    (10, "candles"),
    (5, "overview"),
    (5, "beta"),
)
_MOBILE_HEADERS = {"Accept-Encoding": "zstd"}


class Workload:
    """``next_request`` of the standard mix; ``etags`` is the memory the loops feed."""

    def __init__(self, symbols: Sequence[str], seed: int, etags: EtagMemory | None) -> None:
        if not symbols:
            raise ValueError("the standard workload needs at least one symbol")
        self.etags = etags
        self._rng = random.Random(seed)
        self._symbol = zipf_sampler(symbols, 1.1, self._rng)
        self._cumulative = list(itertools.accumulate(w for w, _ in STANDARD_MIX))
        self._kinds = [kind for _, kind in STANDARD_MIX]

    def __call__(self, i: int) -> Request:
        """The next request (the sequence, not ``i``, is what the seed fixes)."""
        rng = self._rng
        kind = self._kinds[
            bisect.bisect_right(self._cumulative, rng.random() * self._cumulative[-1])
        ]
        base_headers: dict[str, str] | None = None
        if kind == "dashboard":
            path = "/api/dashboard/data"
        elif kind == "mobile":
            path = "/api/dashboard/mobile"
            base_headers = _MOBILE_HEADERS
        elif kind == "confluence":
            path = "/api/confluence/" + self._symbol()
        elif kind == "candles":
            path = "/api/market/candles/" + self._symbol() + "?timeframe=1h"
        elif kind == "overview":
            path = "/api/market/overview"
        else:
            path = "/api/bitcoin-beta"
        revalidate = rng.random() < 0.5  # drawn always: the sequence ignores responses
        if revalidate and self.etags is not None:
            etag = self.etags.get(path)
            if etag is not None:
                headers = dict(base_headers) if base_headers else {}
                headers["If-None-Match"] = etag
                return Request(path, headers=headers)
        return Request(path, headers=dict(base_headers) if base_headers else None)


def standard_workload(symbols: list[str], seed: int, etags: EtagMemory | None = None) -> Workload:
    """The standard mix of desktop and mobile dashboard clients (see STANDARD_MIX):

    30 % ``/api/dashboard/data``, 25 % ``/api/dashboard/mobile`` (``Accept-Encoding:
    zstd``), 25 % ``/api/confluence/<symbol>``, 10 % ``/api/market/candles/<symbol>?
    timeframe=1h``, 5 % ``/api/market/overview``, 5 % ``/api/bitcoin-beta``; symbols
    drawn with Zipf popularity (exponent 1.1) in the order given. With ``etags``, half
    the requests to a path carry ``If-None-Match`` with the last ETag seen for it (the
    loops remember ETags in ``workload.etags``). Deterministic for a seed.
    """
    return Workload(symbols, seed, etags)


# -- wrk ------------------------------------------------------------------------------------

_TIME_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60_000.0, "h": 3_600_000.0}
_TIME = r"([0-9.]+)(us|ms|s|m|h)"
_LATENCY_LINE = re.compile(r"^\s*Latency\s+" + _TIME + r"\s+" + _TIME + r"\s+" + _TIME, re.M)
_DISTRIBUTION = re.compile(r"^\s*(50|75|90|99)(?:\.0+)?%\s+" + _TIME + r"\s*$", re.M)
_REQUESTS = re.compile(r"^\s*(\d+) requests in " + _TIME, re.M)
_RPS = re.compile(r"^Requests/sec:\s+([0-9.]+)", re.M)
_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def _ms(number: str, unit: str) -> float:
    return float(number) * _TIME_UNITS_MS[unit]


def parse_wrk_output(text: str) -> dict[str, Any]:
    """The figures of ``wrk --latency`` output (times in ms whatever wrk's unit).

    ``errors`` is the total of the socket errors (connect + read + write + timeout,
    detailed in ``socket_errors``); ``non_2xx`` is wrk's "Non-2xx or 3xx responses".
    Raises ValueError when the text has no ``Requests/sec`` line.
    """
    rps = _RPS.search(text)
    if rps is None:
        raise ValueError("not wrk output (no Requests/sec line):\n" + text[-2000:])
    out: dict[str, Any] = {"requests_per_s": float(rps.group(1))}
    distribution = {m.group(1): _ms(m.group(2), m.group(3)) for m in _DISTRIBUTION.finditer(text)}
    for q in ("50", "75", "90", "99"):
        out[f"p{q}_ms"] = distribution.get(q)
    latency = _LATENCY_LINE.search(text)
    out["mean_ms"] = _ms(latency.group(1), latency.group(2)) if latency else None
    out["max_ms"] = _ms(latency.group(5), latency.group(6)) if latency else None
    requests = _REQUESTS.search(text)
    out["requests"] = int(requests.group(1)) if requests else None
    out["duration_s"] = _ms(requests.group(2), requests.group(3)) / 1000 if requests else None
    errors = _SOCKET_ERRORS.search(text)
    kinds = ("connect", "read", "write", "timeout")
    counts = [int(g) for g in errors.groups()] if errors else [0, 0, 0, 0]
    out["socket_errors"] = dict(zip(kinds, counts, strict=True))
    out["errors"] = sum(counts)
    non_2xx = _NON_2XX.search(text)
    out["non_2xx"] = int(non_2xx.group(1)) if non_2xx else 0
    return out


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def run_wrk(
    url: str,
    connections: int,
    duration_s: int,
    threads: int = 1,
    headers: dict[str, str] | None = None,
    *,
    timeout_s: int | None = None,
) -> dict[str, Any]:
    """Runs ``wrk --latency -t{threads} -c{connections} -d{duration_s}s [-H …] url``
    (killed after duration_s + 30 s) and returns :func:`parse_wrk_output` of it plus
    ``loadgen_cpu_seconds``: wrk's own CPU time (the children's CPU delta — run nothing
    else as a child that ends meanwhile) and ``command``. ``timeout_s`` is wrk's
    ``--timeout`` (its default: 2 s; slower responses count as timeout errors).

    Blocking: from async code call it through ``asyncio.to_thread``.
    """
    command = ["wrk", "--latency", f"-t{threads}", f"-c{connections}", f"-d{duration_s}s"]
    if timeout_s is not None:
        command.append(f"--timeout={timeout_s}s")
    for name, value in (headers or {}).items():
        command += ["-H", f"{name}: {value}"]
    command.append(url)
    raise_nofile_limit(connections + 256)  # inherited by wrk
    before = children_cpu_seconds()
    done = subprocess.run(
        command, capture_output=True, text=True, timeout=duration_s + 30, check=False
    )
    cpu = children_cpu_seconds() - before
    if done.returncode != 0:
        raise RuntimeError(f"wrk exited with {done.returncode}: {done.stderr.strip()[-2000:]}")
    out = parse_wrk_output(done.stdout)
    out["loadgen_cpu_seconds"] = round(cpu, 3)
    out["command"] = command
    return out
