"""Memory of a real ``virtuoso serve`` under one hostile WebSocket client: RSS before,
the peak during, and after the client leaves.

    .venv/bin/python -m tests.support.ws_hostile_memory [--mode loop|noread|resync|ping]
        [--seconds 10] [--rate-limits FILE] [--app-dir DIR]

The server runs the simulated market (refresh every second) on a free loopback port.
A well-behaved client subscribes to every channel for the whole run; after a warm-up
the hostile client runs for ``--seconds`` (reconnecting whenever it is closed, as an
attacker would), then leaves; RSS is sampled every 0.2 s. ``--app-dir`` runs another
checkout of the service (e.g. an export of an older commit) to compare. ``--rate-limits``:
a rate-limit file (e.g. one with a huge ``websocket.message_rate``, to measure the queue
bounds alone). Prints one JSON object (megabytes, counts). Not a test: numbers for the
report; nothing here asserts a time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
import psutil
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.support.serve import start_serve, stop, wait_until_ready
from tests.support.servers import free_port

CHANNELS = ["market", "confluence", "signals", "beta", "alerts", "dashboard"]
SUBSCRIBE = orjson.dumps({"type": "subscribe", "channels": CHANNELS}).decode()
UNSUBSCRIBE = orjson.dumps({"type": "unsubscribe", "channels": CHANNELS}).decode()
RESYNC = orjson.dumps({"type": "resync", "channels": CHANNELS}).decode()
PING = orjson.dumps({"type": "ping"}).decode()
MB = 1024 * 1024


def start_server(app_dir: Path, rate_limits: str | None, data_dir: str) -> tuple[str, Any]:
    port = free_port()
    environ = {
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_REFRESH_SECONDS": "1",
        "VIRTUOSO_DATA_DIR": data_dir,
        "PYTHONPATH": str(app_dir),
    }
    if rate_limits:
        environ["VIRTUOSO_RATE_LIMITS"] = rate_limits
    process = start_serve(environ, args=("--log-level", "WARNING"), cwd=app_dir)
    base = f"127.0.0.1:{port}"
    wait_until_ready(f"http://{base}", process, timeout=60)
    return base, process


class Sampler:
    """RSS of one process every ``every`` seconds (MB)."""

    def __init__(self, pid: int, every: float = 0.2) -> None:
        self.process = psutil.Process(pid)
        self.every = every
        self.samples: list[tuple[float, float]] = []

    def rss(self) -> float:
        return self.process.memory_info().rss / MB

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append((time.monotonic(), self.rss()))
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.every)


async def good_client(url: str, received: list[int], stop: asyncio.Event) -> None:
    """Subscribes to everything, answers heartbeats, counts updates."""
    async with connect(url, ping_interval=None, max_size=None) as ws:
        await ws.send(SUBSCRIBE)
        while not stop.is_set():
            try:
                raw = await asyncio.wait_for(ws.recv(), 0.5)
            except TimeoutError:
                continue
            message = orjson.loads(raw)
            if message["type"] == "heartbeat":
                await ws.send(orjson.dumps({"type": "pong", "nonce": message["nonce"]}).decode())
            elif message["type"] in ("update", "alert"):
                received[0] += 1


async def hostile_session(url: str, mode: str, counts: dict[str, Any], until: float) -> None:
    """One connection of the attacker, to its close or ``until``."""
    kwargs: dict[str, Any] = {"ping_interval": None, "max_size": None, "close_timeout": 1}
    if mode == "noread":
        kwargs["max_queue"] = 1  # and a small window: the server's sends block
    async with connect(url, **kwargs) as ws:
        reader = None if mode == "noread" else asyncio.create_task(drain(ws, counts))
        try:
            await ws.send(SUBSCRIBE)
            while time.monotonic() < until:
                if mode == "loop":
                    await ws.send(UNSUBSCRIBE)
                    await ws.send(SUBSCRIBE)
                elif mode == "resync":
                    await ws.send(RESYNC)
                elif mode == "ping":
                    await ws.send(PING)
                else:  # noread: sends without ever reading
                    await ws.send(UNSUBSCRIBE)
                    await ws.send(SUBSCRIBE)
                counts["sent"] += 1
                await asyncio.sleep(0)
        finally:
            if reader is not None:
                reader.cancel()
        await ws.close()
    counts["close_codes"].append(ws.close_code)


async def drain(ws: Any, counts: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            counts["received_bytes"] += len(raw)


async def hostile(url: str, mode: str, seconds: float, counts: dict[str, Any]) -> None:
    until = time.monotonic() + seconds
    while time.monotonic() < until:
        try:
            await hostile_session(url, mode, counts, until)
        except ConnectionClosed as closed:
            counts["close_codes"].append(closed.rcvd.code if closed.rcvd else None)
        except InvalidStatus as refused:
            counts["refused"][str(refused.response.status_code)] = (
                counts["refused"].get(str(refused.response.status_code), 0) + 1
            )
            await asyncio.sleep(0.2)
        except OSError:
            counts["errors"] += 1
            await asyncio.sleep(0.2)


def phase(samples: list[tuple[float, float]], start: float, end: float) -> list[float]:
    return [rss for at, rss in samples if start <= at < end]


async def measure(base: str, pid: int, mode: str, seconds: float) -> dict[str, Any]:
    url = f"ws://{base}/ws"
    sampler, stop = Sampler(pid), asyncio.Event()
    received = [0]
    good_stop = asyncio.Event()
    tasks = [
        asyncio.create_task(sampler.run(stop)),
        asyncio.create_task(good_client(url, received, good_stop)),
    ]
    await asyncio.sleep(8)  # warm-up: a few refreshes, the good client settled
    before_start = time.monotonic()
    await asyncio.sleep(2)
    counts: dict[str, Any] = {
        "sent": 0,
        "received_bytes": 0,
        "close_codes": [],
        "refused": {},
        "errors": 0,
    }
    good_before = received[0]
    attack_start = time.monotonic()
    await hostile(url, mode, seconds, counts)
    attack_end = time.monotonic()
    good_during = received[0] - good_before
    await asyncio.sleep(10)  # the attacker has left
    after_start = time.monotonic()
    await asyncio.sleep(2)
    end = time.monotonic()
    good_stop.set()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    before = phase(sampler.samples, before_start, attack_start)
    during = phase(sampler.samples, attack_start, attack_end)
    after = phase(sampler.samples, after_start, end)
    codes: dict[str, int] = {}
    for code in counts.pop("close_codes"):
        codes[str(code)] = codes.get(str(code), 0) + 1
    return {
        "mode": mode,
        "seconds": seconds,
        "rss_mb": {
            "before": round(max(before), 1),
            "peak_during": round(max(during), 1),
            "after_10s": round(max(after), 1),
        },
        "hostile": counts | {"close_codes": codes},
        "good_client_updates_during_attack": good_during,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=["loop", "noread", "resync", "ping"], default="loop")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate-limits", default=None)
    parser.add_argument("--app-dir", default=str(Path(__file__).resolve().parents[2]))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="virtuoso-mem-") as data_dir:
        base, process = start_server(Path(args.app_dir), args.rate_limits, data_dir)
        try:
            result = asyncio.run(measure(base, process.pid, args.mode, min(args.seconds, 120)))
        finally:
            stop(process)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
