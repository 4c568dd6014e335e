"""The benchmark load generators (bench/loadgen) against real tiny servers on loopback:
an aiohttp web server for HTTP, a websockets server speaking just enough of /ws."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
import time
import zlib
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from bench.loadgen.http import (
    EtagMemory,
    Request,
    closed_loop,
    open_loop,
    parse_wrk_output,
    run_wrk,
    standard_workload,
    wrk_available,
    zipf_sampler,
)
from bench.loadgen.stats import LatencySummary, cpu_seconds, percentile
from bench.loadgen.ws import _parse, ws_fanout
from tests.support.servers import free_port

# -- an HTTP server -------------------------------------------------------------------------


class HttpServer:
    """``/status/<n>`` answers n, ``/slow`` answers after 200 ms, every other path
    answers 200 with an ETag per path (304 when If-None-Match has it)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, str]]] = []
        self.base_url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append((request.path_qs, dict(request.headers)))
        if request.path.startswith("/status/"):
            return web.Response(status=int(request.path.rsplit("/", 1)[1]))
        if request.path == "/slow":
            await asyncio.sleep(0.2)
            return web.Response(body=b"{}", content_type="application/json")
        etag = f'"{zlib.crc32(request.path_qs.encode()):08x}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=b'{"ok":true}', content_type="application/json", headers={"ETag": etag}
        )


@pytest_asyncio.fixture
async def http_server() -> AsyncIterator[HttpServer]:
    server = HttpServer()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


def fixed(path: str):
    return lambda i: Request(path)


# -- closed loop ----------------------------------------------------------------------------


async def test_closed_loop_sends_exactly_total(http_server: HttpServer) -> None:
    result = await closed_loop(http_server.base_url, fixed("/a"), concurrency=5, total=57)
    assert (result.sent, result.completed, result.errors) == (57, 57, 0)
    assert result.status_counts == {200: 57}
    assert len(result.latencies_ms) == 57 and min(result.latencies_ms) > 0
    assert len(http_server.seen) == 57
    assert result.mode == "closed" and result.concurrency == 5 and result.dropped == 0
    assert result.throughput_rps == pytest.approx(57 / result.duration_s)
    assert result.loadgen_cpu_seconds >= 0
    summary = orjson.loads(orjson.dumps(result.summary()))
    assert summary["status_counts"] == {"200": 57}
    assert summary["latency_ms"]["count"] == 57
    assert "latencies_ms" not in summary


async def test_closed_loop_honours_both_bounds(http_server: HttpServer) -> None:
    by_time = await closed_loop(http_server.base_url, fixed("/a"), concurrency=4, duration_s=0.3)
    assert by_time.sent > 0
    assert by_time.sent == by_time.completed == len(http_server.seen)
    # The count comes first here: 20 requests, not 30 s of them.
    by_count = await closed_loop(
        http_server.base_url, fixed("/a"), concurrency=3, duration_s=30, total=20
    )
    assert by_count.sent == by_count.completed == 20
    with pytest.raises(ValueError):
        await closed_loop(http_server.base_url, fixed("/a"), concurrency=1)


async def test_closed_loop_numbers_requests_in_order(http_server: HttpServer) -> None:
    numbers: list[int] = []

    def next_request(i: int) -> Request:
        numbers.append(i)
        return Request(f"/n/{i}")

    await closed_loop(http_server.base_url, next_request, concurrency=4, total=25)
    assert numbers == list(range(25))


async def test_statuses_and_connection_errors_are_counted(http_server: HttpServer) -> None:
    codes = (200, 404, 503)
    result = await closed_loop(
        http_server.base_url,
        lambda i: Request(f"/status/{codes[i % 3]}"),
        concurrency=3,
        total=30,
    )
    assert result.status_counts == {200: 10, 404: 10, 503: 10}
    assert result.completed == 30 and result.errors == 0

    port = free_port()  # nobody listens on it
    refused = await closed_loop(f"http://127.0.0.1:{port}", fixed("/a"), concurrency=2, total=6)
    assert (refused.sent, refused.completed, refused.errors) == (6, 0, 6)
    assert refused.status_counts == {} and sum(refused.error_kinds.values()) == 6
    assert refused.summary()["latency_ms"]["p50"] is None


# -- open loop ------------------------------------------------------------------------------


async def test_open_loop_keeps_its_schedule(http_server: HttpServer) -> None:
    result = await open_loop(http_server.base_url, fixed("/a"), rate_rps=200, duration_s=1.0)
    assert result.sent == 200 and result.dropped == 0
    assert result.completed == 200 and result.status_counts == {200: 200}
    assert result.mode == "open" and result.target_rps == 200
    assert len(http_server.seen) == 200


async def test_open_loop_measures_latency_from_the_schedule(http_server: HttpServer) -> None:
    result = await open_loop(http_server.base_url, fixed("/slow"), rate_rps=20, duration_s=0.5)
    assert result.sent == 10 and result.completed == 10
    assert min(result.latencies_ms) >= 200.0


async def test_open_loop_drops_beyond_max_in_flight(http_server: HttpServer) -> None:
    # 100/s for 0.5 s against 200 ms answers: with 2 in flight most requests find no room.
    result = await open_loop(
        http_server.base_url, fixed("/slow"), rate_rps=100, duration_s=0.5, max_in_flight=2
    )
    assert result.sent + result.dropped == 50
    assert result.dropped > 0 and result.sent >= 2
    assert result.completed == result.sent == len(http_server.seen)
    assert result.summary()["dropped"] == result.dropped


# -- the standard workload ------------------------------------------------------------------

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT", "ADAUSDT"]


def kind_of(path: str) -> str:
    for prefix, kind in (
        ("/api/dashboard/data", "dashboard"),
        ("/api/dashboard/mobile", "mobile"),
        ("/api/confluence/", "confluence"),
        ("/api/market/candles/", "candles"),
        ("/api/market/overview", "overview"),
        ("/api/bitcoin-beta", "beta"),
    ):
        if path.startswith(prefix):
            return kind
    raise AssertionError(f"unexpected path {path}")


def test_standard_workload_mix_and_zipf() -> None:
    workload = standard_workload(SYMBOLS, seed=42, etags=None)
    requests = [workload(i) for i in range(10_000)]
    kinds = Counter(kind_of(r.path) for r in requests)
    weights = {
        "dashboard": 0.30,
        "mobile": 0.25,
        "confluence": 0.25,
        "candles": 0.10,
        "overview": 0.05,
        "beta": 0.05,
    }
    for kind, weight in weights.items():
        assert kinds[kind] / 10_000 == pytest.approx(weight, abs=0.02), kind
    symbols: Counter[str] = Counter()
    for r in requests:
        assert r.method == "GET" and r.body is None
        if r.path.startswith("/api/confluence/"):
            assert "?" not in r.path  # timeframe omitted
            symbols[r.path.rsplit("/", 1)[1]] += 1
        elif r.path.startswith("/api/market/candles/"):
            assert r.path.endswith("?timeframe=1h")
            symbols[r.path.split("/")[4].split("?")[0]] += 1
        if r.path == "/api/dashboard/mobile":
            assert r.headers == {"Accept-Encoding": "zstd"}
        else:
            assert not r.headers
    assert set(symbols) <= set(SYMBOLS)
    ranked = [s for s, _ in symbols.most_common()]
    assert ranked[0] == "BTCUSDT"
    assert symbols["BTCUSDT"] / symbols["ETHUSDT"] == pytest.approx(2**1.1, rel=0.2)
    assert symbols["ETHUSDT"] > symbols["DOGEUSDT"]
    # Deterministic for a seed.
    again = standard_workload(SYMBOLS, seed=42, etags=None)
    assert [again(i).path for i in range(500)] == [r.path for r in requests[:500]]
    other = standard_workload(SYMBOLS, seed=43, etags=None)
    assert [other(i).path for i in range(500)] != [r.path for r in requests[:500]]


def test_zipf_sampler_probabilities() -> None:
    import random

    sample = zipf_sampler(["a", "b", "c"], 1.1, random.Random(3))
    counts = Counter(sample() for _ in range(30_000))
    norm = 1 + 2**-1.1 + 3**-1.1
    for k, item in enumerate("abc"):
        assert counts[item] / 30_000 == pytest.approx((k + 1) ** -1.1 / norm, abs=0.015)


async def test_etag_memory_sends_if_none_match(http_server: HttpServer) -> None:
    etags = EtagMemory()
    workload = standard_workload(SYMBOLS[:2], seed=7, etags=etags)
    result = await closed_loop(http_server.base_url, workload, concurrency=4, total=400)
    assert result.errors == 0 and result.completed == 400
    assert len(etags) > 0 and etags.get("/api/dashboard/data") is not None
    revalidating = [(p, h) for p, h in http_server.seen if "If-None-Match" in h]
    assert revalidating, "no request carried If-None-Match"
    for path, headers in revalidating:
        assert headers["If-None-Match"] == f'"{zlib.crc32(path.encode()):08x}"'
    assert result.status_counts.get(304, 0) == len(revalidating)
    # About half of the requests to a path already seen revalidate.
    assert 0.3 < len(revalidating) / 400 < 0.6
    for path, headers in http_server.seen:
        encoding = headers.get("Accept-Encoding")
        assert encoding == ("zstd" if path == "/api/dashboard/mobile" else None), path

    http_server.seen.clear()
    plain = standard_workload(SYMBOLS[:2], seed=7, etags=None)
    await closed_loop(http_server.base_url, plain, concurrency=4, total=100)
    assert not any("If-None-Match" in h for _, h in http_server.seen)


# -- stats ----------------------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = list(range(1, 11))
    assert [percentile(values, q) for q in (0, 10, 50, 90, 91, 99, 100)] == [
        1,
        1,
        5,
        9,
        10,
        10,
        10,
    ]
    assert percentile([7.0], 99) == 7.0
    with pytest.raises(ValueError):
        percentile([], 50)
    summary = LatencySummary.from_ms([3.0, 1.0, 2.0, 4.12345])
    assert summary == {
        "count": 4,
        "p50": 2.0,
        "p90": 4.123,
        "p99": 4.123,
        "max": 4.123,
        "mean": 2.531,
    }
    assert LatencySummary.from_ms([])["count"] == 0
    before = cpu_seconds()
    sum(i * i for i in range(200_000))
    assert cpu_seconds() >= before


# -- wrk ------------------------------------------------------------------------------------

WRK_SAMPLE = """\
Running 10s test @ http://127.0.0.1:8000/api/market/overview
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency    13.71ms    4.02ms   1.02s    91.37%
    Req/Sec     4.69k   412.33     5.21k    82.00%
  Latency Distribution
     50%   12.98ms
     75%   14.62ms
     90%  816.00us
     99%    1.50s
  46685 requests in 10.01s, 61.73MB read
  Socket errors: connect 0, read 12, write 0, timeout 3
  Non-2xx or 3xx responses: 17
Requests/sec:   4664.12
Transfer/sec:      6.17MB
"""


def test_parse_wrk_output() -> None:
    out = parse_wrk_output(WRK_SAMPLE)
    assert out["requests_per_s"] == 4664.12
    assert out["p50_ms"] == pytest.approx(12.98)
    assert out["p75_ms"] == pytest.approx(14.62)
    assert out["p90_ms"] == pytest.approx(0.816)  # us
    assert out["p99_ms"] == pytest.approx(1500.0)  # s
    assert out["max_ms"] == pytest.approx(1020.0)
    assert out["mean_ms"] == pytest.approx(13.71)
    assert out["requests"] == 46685
    assert out["duration_s"] == pytest.approx(10.01)
    assert out["errors"] == 15
    assert out["socket_errors"] == {"connect": 0, "read": 12, "write": 0, "timeout": 3}
    assert out["non_2xx"] == 17

    clean = "\n".join(
        line for line in WRK_SAMPLE.splitlines() if "errors" not in line and "Non-2xx" not in line
    )
    assert parse_wrk_output(clean)["errors"] == 0
    assert parse_wrk_output(clean)["non_2xx"] == 0
    with pytest.raises(ValueError):
        parse_wrk_output("wrk: connection refused\n")


def test_run_wrk_with_a_stand_in(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "sample.txt").write_text(WRK_SAMPLE)
    script = tmp_path / "wrk"
    script.write_text(
        f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path}/args\ncat {tmp_path}/sample.txt\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ.get('PATH', '')}")
    assert wrk_available()
    out = run_wrk("http://127.0.0.1:1/x", 64, 3, headers={"Accept-Encoding": "zstd"})
    assert (tmp_path / "args").read_text().splitlines() == [
        "--latency",
        "-t1",
        "-c64",
        "-d3s",
        "-H",
        "Accept-Encoding: zstd",
        "http://127.0.0.1:1/x",
    ]
    assert out["requests_per_s"] == 4664.12 and out["loadgen_cpu_seconds"] >= 0
    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    assert wrk_available() is False


# -- WebSockets -----------------------------------------------------------------------------


class WsServer:
    """subscribe → one snapshot per channel; then every 50 ms an update per channel
    (16 KB of data; "dashboard" puts published_at after data), a heartbeat every 200 ms;
    a client whose send takes longer than 0.5 s is closed with 1013."""

    PAD = "x" * 16_000

    def __init__(self) -> None:
        self.queues: dict[ServerConnection, asyncio.Queue[str | None]] = {}
        self.seq: Counter[str] = Counter()
        self.pongs = 0
        self.closed_slow = 0
        self.url = ""

    def message(self, channel: str) -> str:
        self.seq[channel] += 1
        head = {"type": "update", "channel": channel, "symbol": None, "seq": self.seq[channel]}
        head["generated_at"] = int(time.time() * 1000)
        data = {"pad": self.PAD, "published_at": 1}  # a decoy inside data
        if channel == "dashboard":
            return orjson.dumps(head | {"data": data, "published_at": time.time()}).decode()
        return orjson.dumps(head | {"published_at": time.time(), "data": data}).decode()

    async def publish(self) -> None:
        nonce = 0
        for tick in range(10**9):
            await asyncio.sleep(0.05)
            texts = [self.message(c) for c in ("market", "dashboard")]
            if tick % 4 == 3:
                nonce += 1
                texts.append(orjson.dumps({"type": "heartbeat", "nonce": nonce}).decode())
            for queue in self.queues.values():
                for text in texts:
                    queue.put_nowait(text)

    async def read_pongs(self, ws: ServerConnection, queue: asyncio.Queue[str | None]) -> None:
        try:
            async for raw in ws:
                if orjson.loads(raw).get("type") == "pong":
                    self.pongs += 1
        finally:
            queue.put_nowait(None)  # closed: the sender stops too

    async def handler(self, ws: ServerConnection) -> None:
        subscribe = orjson.loads(await ws.recv())
        assert subscribe["type"] == "subscribe"
        for channel in subscribe["channels"]:
            await ws.send(orjson.dumps({"type": "snapshot", "channel": channel, "items": []}))
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        self.queues[ws] = queue
        pongs = asyncio.create_task(self.read_pongs(ws, queue))
        try:
            while True:
                text = await queue.get()
                if text is None:
                    return
                try:
                    await asyncio.wait_for(ws.send(text), 0.5)
                except TimeoutError:
                    self.closed_slow += 1
                    del self.queues[ws]
                    await ws.close(1013, "too slow")
                    return
        except ConnectionClosed:
            return
        finally:
            self.queues.pop(ws, None)
            pongs.cancel()


@pytest_asyncio.fixture
async def ws_server() -> AsyncIterator[WsServer]:
    server = WsServer()
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # accepted ones inherit it
    listener.bind(("127.0.0.1", 0))
    listener.listen(128)
    server.url = f"ws://127.0.0.1:{listener.getsockname()[1]}/ws"
    publisher = asyncio.create_task(server.publish())
    # close_timeout: the 1013 of a stalled client waits behind unread data until the
    # client reads again; websockets counts that wait against the close timeout.
    ws = await serve(server.handler, sock=listener, compression=None, close_timeout=10)
    try:
        yield server
    finally:
        publisher.cancel()
        ws.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ws.wait_closed(), 5)


def test_ws_parse_reads_the_header_only_when_it_can() -> None:
    data = {"pad": "y" * 100, "published_at": 1}
    head = {"type": "update", "channel": "market", "symbol": None, "seq": 4}
    last = orjson.dumps(head | {"published_at": 12.5, "data": data})
    assert _parse(last) == head | {"published_at": 12.5}
    after = orjson.dumps(head | {"data": data, "published_at": 13.5})
    assert _parse(after) == head | {"published_at": 13.5}
    without = orjson.dumps(head | {"data": {"pad": "z"}})
    assert _parse(without) == head
    decoy = _parse(orjson.dumps(head | {"data": data}))  # parsed whole: a nested key
    assert decoy["seq"] == 4 and "published_at" not in decoy
    beat = orjson.dumps({"type": "heartbeat", "nonce": 3, "server_time": 1.0})
    assert _parse(beat)["nonce"] == 3


async def test_ws_fanout_reach_latency_and_a_stalled_client(ws_server: WsServer) -> None:
    result = await ws_fanout(
        ws_server.url,
        clients=5,
        channels=["market", "dashboard"],
        symbols=None,
        duration_s=2.0,
        connect_concurrency=2,
        stalled_clients=1,
        stall_after_s=0.3,
        grace_s=0.3,
    )
    assert (result.connected, result.failed_to_connect) == (5, 0)
    assert result.stalled_connected == 1
    assert result.snapshots_received == 10
    assert result.distinct_messages >= 20  # 2 channels × 20/s × 2 s, give or take
    assert result.expected == result.distinct_messages * 5
    assert result.reach is not None and result.reach >= 0.95
    assert len(result.latencies_ms) == result.messages_received  # both layouts parsed
    assert min(result.latencies_ms) >= 0
    assert result.close_codes == {}  # the readers kept up
    assert result.pongs_sent > 0 and ws_server.pongs > 0
    # The stalled client stopped reading; the server noticed and closed it with 1013.
    assert ws_server.closed_slow == 1
    assert result.stalled_close_codes == {1013: 1}
    assert result.stalled_open_at_end == 0
    assert result.stalled_messages_received < result.messages_received / 5
    summary = orjson.loads(orjson.dumps(result.summary()))
    assert summary["stalled_close_codes"] == {"1013": 1}
    assert summary["latency_ms"]["count"] == result.messages_received
    assert "latencies_ms" not in summary
    assert result.loadgen_cpu_seconds >= 0 and result.duration_s > 0


async def test_ws_fanout_counts_failed_connects() -> None:
    port = free_port()  # nobody listens on it
    result = await ws_fanout(
        f"ws://127.0.0.1:{port}/ws",
        clients=3,
        channels=["market"],
        symbols=["BTCUSDT"],
        duration_s=0.1,
        stalled_clients=1,
        grace_s=0,
    )
    assert (result.connected, result.failed_to_connect) == (0, 3)
    assert result.stalled_connected == 0
    assert sum(result.connect_errors.values()) == 4
    assert result.reach is None and result.expected == 0
