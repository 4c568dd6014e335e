"""The realtime endpoint alone, for the WebSocket fan-out benchmark: the service's
``Broadcaster`` and ``/ws`` route under hypercorn (the service's config, uvloop), and
nothing else — no refresh, no views: the serving process's fan-out path as it is once
the collector runs elsewhere.

    python -m bench.ws_server PORT

``POST /publish?n=10``: publishes ``n`` market updates (symbols ``S0``…), one after
the other as the live-update projection does, and answers their seqs.
``GET /stats``: the broadcaster's counters (connections, sent, direct, coalesced,
server-side latency) and ``trace`` (``Trace``: where a message's time goes).

Environment: ``BENCH_WS_DIRECT_BYTES`` sets ``WsLimits.direct_write_bytes`` (0: every
frame through the per-connection queue and sender, the path before direct writes);
``BENCH_WS_REDIS=redis://…``: the broadcaster listens to that Redis (updates published
there by another process in ``BENCH_KEYSPACE``, as the collector does, reach the
clients);
``BENCH_WS_GC=default``: CPython's collector thresholds, not the serving process's
(``app.main.gc_policy``); ``BENCH_WS_PROFILE=<file>``: cProfile of the whole process,
written at exit (pstats).
"""

from __future__ import annotations

import asyncio
import cProfile
import gc
import os
import signal
import sys
import time
from dataclasses import replace
from typing import Any

import orjson
import uvloop
from hypercorn.asyncio import serve
from quart import Quart, Response, request

from app.backends.connection import connect_redis
from app.backends.keyspace import Keyspace
from app.main.cli import hypercorn_config
from app.main.gc_policy import tune_for_serving
from app.realtime import Broadcaster, WsLimits, register_ws
from bench.loadgen.stats import LatencySummary

# The bench's namespace in Redis (not the service's: the bench's service may listen to
# the same Redis, and pub/sub channels span its databases).
BENCH_KEYSPACE = Keyspace("virtuoso-bench-ws-fanout")

# A market update as the projection publishes it (≈ 300 bytes of JSON).
MARKET = {
    "price": 64123.5,
    "bid": 64123.4,
    "ask": 64123.6,
    "change_24h": 1.234,
    "high_24h": 65000.0,
    "low_24h": 63000.0,
    "volume_24h": 12345.678,
    "turnover_24h": 791234567.0,
    "listing": None,
}


class Trace:
    """Where a message's time goes in the server, measured around the hub: from its
    publish to the start of its fan-out (Redis, the listener, the event loop's queue),
    the fan-out itself (batching or queueing for every client), and the write of the
    loop turn's batches (``Hub.flush``), with the messages per flush."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self.to_fanout_ms: list[float] = []
        self.fanout_ms: list[float] = []
        self.flush_ms: list[float] = []
        self.per_flush: list[int] = []
        self._since_flush = 0
        hub, broker = broadcaster.hub, broadcaster.broker
        deliver, flush = hub.deliver, hub.flush

        def traced_deliver(message: Any, text: str, published_at: float) -> None:
            start = time.time()
            self.to_fanout_ms.append((start - published_at) * 1000)
            deliver(message, text, published_at)
            self.fanout_ms.append((time.time() - start) * 1000)
            self._since_flush += 1

        def traced_flush() -> None:
            start = time.perf_counter()
            flush()
            self.flush_ms.append((time.perf_counter() - start) * 1000)
            self.per_flush.append(self._since_flush)
            self._since_flush = 0

        self.gc_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
        self._gc_start = 0.0

        def on_gc(phase: str, info: dict[str, int]) -> None:
            if phase == "start":
                self._gc_start = time.perf_counter()
            else:
                self.gc_ms[info["generation"]].append((time.perf_counter() - self._gc_start) * 1000)

        gc.callbacks.append(on_gc)
        broker._on_message = traced_deliver  # the broker calls the hub through this
        hub.flush = traced_flush  # type: ignore[method-assign]

    def summary(self) -> dict[str, Any]:
        return {
            "to_fanout_ms": LatencySummary.from_ms(self.to_fanout_ms),
            "fanout_ms": LatencySummary.from_ms(self.fanout_ms),
            "flush_ms": LatencySummary.from_ms(self.flush_ms),
            "messages_per_flush": LatencySummary.from_ms(self.per_flush),
            "objects": len(gc.get_objects()),
            **{f"gc{gen}_ms": LatencySummary.from_ms(ms) for gen, ms in self.gc_ms.items()},
        }


def build_app() -> Quart:
    """The app: ``/ws`` plus the bench's ``/publish`` and ``/stats`` (see the module
    docstring for the environment it reads)."""
    limits = WsLimits(max_connections_per_client=100_000, handshake_burst=0)
    direct = os.environ.get("BENCH_WS_DIRECT_BYTES")
    if direct is not None:
        limits = replace(limits, direct_write_bytes=int(direct))
    redis_url = os.environ.get("BENCH_WS_REDIS")
    redis = connect_redis(redis_url, 2.0) if redis_url else None
    broadcaster = Broadcaster("bench", redis, limits=limits, keyspace=BENCH_KEYSPACE)
    trace = Trace(broadcaster)
    app = Quart(__name__)
    register_ws(app, broadcaster)

    @app.post("/publish")
    async def publish() -> Response:
        n = int(request.args.get("n", "10"))
        at = int(time.time() * 1000)
        seqs = [
            await broadcaster.publish("market", f"S{i}", MARKET | {"price": at % 1000 + i}, at)
            for i in range(n)
        ]
        return Response(orjson.dumps(seqs), content_type="application/json")

    @app.get("/stats")
    async def stats() -> Response:
        body = broadcaster.snapshot() | {"trace": trace.summary()}
        return Response(orjson.dumps(body), content_type="application/json")

    return app


async def main(port: int) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    app = build_app()
    if os.environ.get("BENCH_WS_GC") != "default":
        tune_for_serving()  # as ``virtuoso serve`` does
    await serve(app, hypercorn_config(f"127.0.0.1:{port}"), shutdown_trigger=stop.wait)  # type: ignore[arg-type]


if __name__ == "__main__":
    profile_to = os.environ.get("BENCH_WS_PROFILE")
    profiler = cProfile.Profile() if profile_to else None
    if profiler is not None:
        profiler.enable()
    try:
        uvloop.run(main(int(sys.argv[1])))
    finally:
        if profiler is not None and profile_to:
            profiler.disable()
            profiler.dump_stats(profile_to)
