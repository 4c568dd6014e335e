"""The ceiling: a bare Quart app on hypercorn whose ``GET /api/dashboard/data`` answers
constant bytes (the desktop view, computed once at start): what no cache on this stack
can beat. Also the hypercorn set-up the Quart baselines share: the service's (one
worker, uvloop, access log off).

``python -m bench.baselines.ceiling --port P [--symbols A,B]``
"""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

import orjson
import uvloop
from hypercorn.asyncio import serve as hypercorn_serve
from hypercorn.config import Config
from quart import Quart, Response

from bench.baselines.views import (
    PATH,
    baseline_settings,
    compute_desktop_view,
    make_market,
    parser,
)

# Hypercorn waits this long for open connections at shutdown: exits well under 5 s.
GRACEFUL_SECONDS = 2.0


def hypercorn_config(port: int) -> Config:
    """The service's hypercorn configuration (app.main.cli.serve), bound to 127.0.0.1:port."""
    config = Config()
    config.bind = [f"127.0.0.1:{port}"]
    config.workers = 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")
    config.graceful_timeout = GRACEFUL_SECONDS
    return config


def run_quart(port: int, build: Callable[[], Awaitable[Quart | None]]) -> int:
    """Runs ``build()`` (the app, or None to give up) then serves it with hypercorn on
    uvloop until SIGTERM or SIGINT (a signal during ``build`` stops before serving)."""
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(message)s")

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        building = asyncio.ensure_future(build())
        stopping = asyncio.ensure_future(stop.wait())
        await asyncio.wait({building, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if stop.is_set():
            building.cancel()
            await asyncio.gather(building, return_exceptions=True)
            return 0
        app = building.result()
        if app is None:
            stopping.cancel()
            return 1
        await hypercorn_serve(app, hypercorn_config(port), shutdown_trigger=stop.wait)
        stopping.cancel()
        return 0

    return uvloop.run(main())


def create_app(body: bytes) -> Quart:
    app = Quart(__name__)

    @app.get(PATH)
    async def dashboard_data() -> Response:
        return Response(body, status=200, content_type="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__).parse_args(argv)
    settings = baseline_settings(args.symbols)

    async def build() -> Quart:
        market = make_market(settings)
        body = orjson.dumps(await compute_desktop_view(settings, market))
        return create_app(body)

    return run_quart(args.port, build)


if __name__ == "__main__":
    sys.exit(main())
