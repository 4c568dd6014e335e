"""What a user would pick instead: FastAPI on uvicorn (one worker, uvloop, access log
off) with cashews caching on Redis. ``GET /api/dashboard/data`` is decorated with
cashews' cache decorator (20 s, the service's TTL for this view, cashews' defaults
otherwise) and returns the dict, which FastAPI serializes on every request.

``python -m bench.baselines.fastapi_cashews --port P --redis redis://HOST:PORT/0
[--symbols A,B]``
"""

from __future__ import annotations

import signal
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import uvicorn
from cashews import cache
from fastapi import FastAPI

from app.settings import Settings
from bench.baselines.views import (
    PATH,
    baseline_settings,
    compute_desktop_view,
    make_market,
    parser,
    start_market,
)

TTL = "20s"  # config/cache.yaml: dashboard:desktop
GRACEFUL_SECONDS = 2  # uvicorn waits this long for open connections at shutdown


def create_app(settings: Settings, redis_url: str) -> FastAPI:
    market = make_market(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        cache.setup(redis_url)
        await cache.init()
        await start_market(market)  # the history, once: misses then cost the view only
        try:
            yield
        finally:
            await cache.close()

    app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)

    @app.get(PATH)
    @cache(ttl=TTL)
    async def dashboard_data():
        return await compute_desktop_view(settings, market)

    return app


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__)
    arguments.add_argument("--redis", required=True, help="redis://host:port/db")
    args = arguments.parse_args(argv)
    if not args.redis.startswith(("redis://", "rediss://", "unix://")):
        arguments.error("--redis must be a redis://, rediss:// or unix:// URL")
    settings = baseline_settings(args.symbols)
    config = uvicorn.Config(
        create_app(settings, args.redis),
        host="127.0.0.1",
        port=args.port,
        workers=1,
        loop="uvloop",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=GRACEFUL_SECONDS,
    )
    # uvicorn re-raises the signal that stopped it once it has shut down (to let the
    # previous handler act): these handlers make that a clean exit with status 0.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: None)
    uvicorn.Server(config).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
