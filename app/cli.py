"""``virtuoso serve``: the service on hypercorn (uvloop, one worker per process)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from quart import Quart

from app.realtime.ws_route import HYPERCORN_MAX_MESSAGE_BYTES
from app.settings import ConfigError, Settings, load_settings

log = logging.getLogger("virtuoso")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="virtuoso", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the dashboards and the API")
    serve.add_argument("--bind", help="host:port (VIRTUOSO_BIND, default 127.0.0.1:8003)")
    serve.add_argument("--exchange", help="simulated or a ccxt id (VIRTUOSO_EXCHANGE)")
    serve.add_argument("--exchange-url", help="REST base URL override (VIRTUOSO_EXCHANGE_URL)")
    serve.add_argument("--symbols", help="comma-separated symbols (VIRTUOSO_SYMBOLS)")
    serve.add_argument("--refresh-seconds", help="refresh interval (VIRTUOSO_REFRESH_SECONDS)")
    serve.add_argument("--seed", help="simulated market seed (VIRTUOSO_SEED)")
    serve.add_argument("--config", help="YAML settings file (VIRTUOSO_CONFIG)")
    serve.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "log_level")}
    from app.web.app import create_app

    try:
        settings = load_settings(flags)
        app = create_app(settings)  # also validates the cache policy
    except ConfigError as error:
        print(f"virtuoso: {error}", file=sys.stderr)
        return 2
    serve(app, settings)
    return 0


def serve(app: Quart, settings: Settings) -> None:
    import uvloop
    from hypercorn.asyncio import serve as hypercorn_serve
    from hypercorn.config import Config

    config = Config()
    config.bind = [settings.bind]
    config.workers = 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our handlers, no second copy
    config.graceful_timeout = 5
    config.websocket_max_message_size = HYPERCORN_MAX_MESSAGE_BYTES
    log.info("serving on http://%s", settings.bind)
    uvloop.run(hypercorn_serve(app, config, shutdown_trigger=_shutdown_signal(app)))


def _shutdown_signal(app: Quart):
    """An awaitable factory that returns when SIGINT or SIGTERM arrives, after telling
    WebSocket clients (1001): hypercorn would otherwise wait for them to leave."""

    async def wait() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
        broadcaster = app.extensions["virtuoso"].broadcaster
        if broadcaster is not None:
            await broadcaster.close()

    return wait


if __name__ == "__main__":
    sys.exit(main())
