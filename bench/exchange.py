"""The loopback fake Bybit (tools/fake_bybit.py) as a process for the benchmark, with
a control port: request counts, failing on demand, and prices that move every second
(so live updates flow).

Streams (``/v5/public/spot`` on the same port): ``POST /streams/ticking`` makes every
symbol tick on the stream at its own rate (``min_hz``–``max_hz``, drawn per symbol, at a
random phase) until ``POST /streams/stop``; each tick is a price move published to the
ticker subscribers at once (``BybitStreams.tick``) and logged as (symbol, price, the
message's ``ts``) — ``GET /streams/sent`` returns that log, ``GET /streams/status`` the
open connections and subscribed topics. While ticking, the once-a-second REST-only
mover pauses (a price must not change without a stream message).

    python -m bench.exchange        # prints {"exchange": url, "control": url}, then serves
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter
from typing import Any

import orjson
from aiohttp import web

from bench.symbols import SYMBOLS
from tools.fake_bybit import FakeBybit, RecordedRequest

MOVE_EVERY_SECONDS = 1.0


class StreamTicks:
    """Every symbol ticking on the stream at a rate of its own (see the module
    docstring); ``log``: (symbol, price, ts epoch ms) of each ticker message sent."""

    def __init__(self, fake: FakeBybit) -> None:
        self.fake = fake
        self.log: list[tuple[str, float, int]] = []
        self.rates: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def ticking(self) -> bool:
        return bool(self._tasks)

    def start(self, min_hz: float, max_hz: float, seed: int) -> dict[str, float]:
        """Starts ticking (after stopping a previous run); returns each symbol's rate."""
        self.stop()
        rng = random.Random(seed)
        self.rates = {s: rng.uniform(min_hz, max_hz) for s in self.fake.symbols}
        self._tasks = [
            asyncio.create_task(self._loop(symbol, 1 / hz, rng.uniform(0, 1 / hz)))
            for symbol, hz in self.rates.items()
        ]
        return self.rates

    def stop(self) -> int:
        """Stops ticking; returns the ticks logged so far."""
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        return len(self.log)

    async def _loop(self, symbol: str, period: float, phase: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + phase
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            await self.fake.streams.tick([symbol])
            self._record(symbol)
            due += period
            if due < loop.time():  # fell behind: no burst to catch up
                due = loop.time() + period

    def _record(self, symbol: str) -> None:
        topic = f"tickers.{symbol}"
        for message in reversed(self.fake.streams.sent):
            if message.get("topic") == topic:
                price = float(message["data"]["lastPrice"])
                self.log.append((symbol, price, int(message["ts"])))
                return


def streams_app(app: web.Application, fake: FakeBybit, ticks: StreamTicks) -> None:
    """The control routes of the streams (see the module docstring)."""

    async def start(request: web.Request) -> web.Response:
        query = request.query
        rates = ticks.start(
            float(query.get("min_hz", 1)), float(query.get("max_hz", 2)), int(query.get("seed", 7))
        )
        return web.json_response({"ticking": True, "rates": rates})

    async def stop(_request: web.Request) -> web.Response:
        return web.json_response({"ticking": False, "ticks": ticks.stop()})

    async def sent(request: web.Request) -> web.Response:
        since = int(request.query.get("since_ms", 0))
        rows: list[Any] = [row for row in ticks.log if row[2] >= since]
        return web.Response(body=orjson.dumps(rows), content_type="application/json")

    async def status(_request: web.Request) -> web.Response:
        streams = fake.streams
        return web.json_response(
            {
                "connections": streams.connections,
                "connections_opened": streams.connections_opened,
                "topics": sorted(streams.subscribed()),
                "ticking": ticks.ticking,
                "ticks": len(ticks.log),
            }
        )

    app.router.add_post("/streams/ticking", start)
    app.router.add_post("/streams/stop", stop)
    app.router.add_get("/streams/sent", sent)
    app.router.add_get("/streams/status", status)


def counted_path(request: RecordedRequest) -> str:
    """The name a request is counted under: its path, and for the linear perpetuals'
    market endpoints (``category=linear``) the path with ``?category=linear``, so the
    derivatives' reads are told apart from the spot market's."""
    if request.query.get("category") == "linear":
        return f"{request.path}?category=linear"
    return request.path


def control_app(fake: FakeBybit, ticks: StreamTicks | None = None) -> web.Application:
    async def counts(_request: web.Request) -> web.Response:
        return web.json_response(dict(Counter(counted_path(r) for r in fake.requests)))

    async def fail(_request: web.Request) -> web.Response:
        fake.error_rate(1.0)  # every request: HTTP 503 with a gateway page
        return web.json_response({"failing": True})

    async def recover(_request: web.Request) -> web.Response:
        fake.clear_faults()
        return web.json_response({"failing": False})

    app = web.Application()
    app.router.add_get("/counts", counts)
    app.router.add_post("/fail", fail)
    app.router.add_post("/recover", recover)
    streams_app(app, fake, ticks or StreamTicks(fake))
    return app


async def move_prices(fake: FakeBybit, rng: random.Random, ticks: StreamTicks) -> None:
    while True:
        await asyncio.sleep(MOVE_EVERY_SECONDS)
        if ticks.ticking:
            continue
        for ticker in fake.tickers.values():
            price = float(ticker["lastPrice"]) * (1 + rng.gauss(0, 0.0005))
            ticker["lastPrice"] = f"{price:.8g}"


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeBybit(symbols=SYMBOLS) as fake:  # the service's 25 default symbols
        ticks = StreamTicks(fake)
        runner = web.AppRunner(control_app(fake, ticks), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        sys.stdout.write(
            orjson.dumps({"exchange": fake.base_url, "control": f"http://{host}:{port}"}).decode()
            + "\n"
        )
        sys.stdout.flush()
        mover = asyncio.create_task(move_prices(fake, random.Random(7), ticks))
        await stop.wait()
        mover.cancel()
        ticks.stop()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
