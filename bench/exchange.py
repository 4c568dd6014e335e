"""The loopback fake Bybit (tools/fake_bybit.py) as a process for the benchmark, with
a control port: request counts, failing on demand, and prices that move every second
(so live updates flow).

    python -m bench.exchange        # prints {"exchange": url, "control": url}, then serves
"""

from __future__ import annotations

import asyncio
import random
import signal
import sys
from collections import Counter

import orjson
from aiohttp import web

from bench.symbols import SYMBOLS
from tools.fake_bybit import FakeBybit

MOVE_EVERY_SECONDS = 1.0


def control_app(fake: FakeBybit) -> web.Application:
    async def counts(_request: web.Request) -> web.Response:
        return web.json_response(dict(Counter(r.path for r in fake.requests)))

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
    return app


async def move_prices(fake: FakeBybit, rng: random.Random) -> None:
    while True:
        await asyncio.sleep(MOVE_EVERY_SECONDS)
        for ticker in fake.tickers.values():
            price = float(ticker["lastPrice"]) * (1 + rng.gauss(0, 0.0005))
            ticker["lastPrice"] = f"{price:.8g}"


async def main() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with FakeBybit(symbols=SYMBOLS) as fake:  # the service's 25 default symbols
        runner = web.AppRunner(control_app(fake), access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        host, port = runner.addresses[0][:2]
        sys.stdout.write(
            orjson.dumps({"exchange": fake.base_url, "control": f"http://{host}:{port}"}).decode()
            + "\n"
        )
        sys.stdout.flush()
        mover = asyncio.create_task(move_prices(fake, random.Random(7)))
        await stop.wait()
        mover.cancel()
        await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
