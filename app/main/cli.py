"""``virtuoso serve``: the service on hypercorn (uvloop, one worker per process), its
collector inside the process, in a child process it supervises
(``VIRTUOSO_COLLECTOR=child``) or elsewhere (``external``); ``virtuoso collect``: the
collector as a process of its own.

Each command imports only its role's composition root, so a server whose collector runs
elsewhere never loads the market sources or the analytics."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable
from typing import Any, cast

from hypercorn.config import Config
from quart import Quart

from app.errors import ConfigError
from app.realtime.ws_route import HYPERCORN_MAX_MESSAGE_BYTES
from app.settings import Settings, load_settings
from app.state import EXTENSION, ServiceState
from app.web.listeners import ASGIApp, listener_apps

log = logging.getLogger("virtuoso")

GRACEFUL_SECONDS = 5  # hypercorn's wait for open connections once asked to stop
# After a listener failed, how long the others get to stop before they are cancelled.
SHUTDOWN_SECONDS = 15.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command (``serve`` or ``collect``) and its flags; a settings flag not given is None
    (its setting then comes from the environment, the file or the default). Exits 2 on
    a usage error (argparse)."""
    parser = argparse.ArgumentParser(prog="virtuoso", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="serve the dashboards and the API")
    serve.add_argument("--bind", help="host:port (VIRTUOSO_BIND, default 127.0.0.1:8003)")
    serve.add_argument("--collector", help="embedded, child or external (VIRTUOSO_COLLECTOR)")
    collect = commands.add_parser("collect", help="collect market data for the servers")
    collect.add_argument("--channel", help=argparse.SUPPRESS)  # set by a server for its child
    for command in (serve, collect):
        _common_flags(command)
    return parser.parse_args(argv)


def _common_flags(command: argparse.ArgumentParser) -> None:
    command.add_argument(
        "--monitoring-bind",
        help="host:port of the monitoring listener (VIRTUOSO_MONITORING_BIND, default none)",
    )
    command.add_argument("--exchange", help="simulated or a ccxt id (VIRTUOSO_EXCHANGE)")
    command.add_argument("--exchange-url", help="REST base URL override (VIRTUOSO_EXCHANGE_URL)")
    command.add_argument("--symbols", help="comma-separated symbols (VIRTUOSO_SYMBOLS)")
    command.add_argument("--refresh-seconds", help="refresh interval (VIRTUOSO_REFRESH_SECONDS)")
    command.add_argument("--seed", help="simulated market seed (VIRTUOSO_SEED)")
    command.add_argument("--config", help="YAML settings file (VIRTUOSO_CONFIG)")
    command.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ERROR")


def main(argv: list[str] | None = None) -> int:
    """The ``virtuoso`` console script: runs the command; returns its exit code (2 with
    one line on stderr for invalid configuration)."""
    args = parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    flags = {k: v for k, v in vars(args).items() if k not in ("command", "log_level", "channel")}
    try:
        settings = load_settings(flags)
        if args.command == "collect":
            return collect(settings, args.channel)
        app = _serving_app(settings, _collector_flags(args))  # validates the cache policy
    except ConfigError as error:
        print(f"virtuoso: {error}", file=sys.stderr)
        return 2
    return serve(app, settings)


def _collector_flags(args: argparse.Namespace) -> list[str]:
    """The settings flags ``serve`` was given that ``collect`` takes too, for a child."""
    shared = ("exchange", "exchange_url", "symbols", "refresh_seconds", "seed", "config")
    flags = []
    for name in shared:
        value = getattr(args, name, None)
        if value is not None:
            flags += [f"--{name.replace('_', '-')}", str(value)]
    return [*flags, "--log-level", args.log_level]


def _serving_app(settings: Settings, collector_flags: list[str]) -> Quart:
    if settings.collector != "embedded":
        from app.main.server_app import create_server_app

        child_flags = collector_flags if settings.collector == "child" else None
        return create_server_app(settings, child_flags=child_flags)
    from app.main.embedded import create_app

    return create_app(settings)


def collect(settings: Settings, channel_path: str | None = None) -> int:
    """Collects until SIGINT or SIGTERM (or, as a server's child on the local channel at
    ``channel_path``, until the server goes). Raises ConfigError before starting."""
    import uvloop

    from app.main.collector_process import run_collector

    async def run() -> int:
        await run_collector(settings, _stop_on_signals(), channel_path)
        return 0

    try:
        return uvloop.run(run())
    except OSError as error:  # e.g. its metrics address taken, its server's socket gone
        print(f"virtuoso collect: {error}", file=sys.stderr)
        return 1


def serve(app: Quart, settings: Settings) -> int:
    """Serves until SIGINT or SIGTERM: the public listener on ``settings.bind`` and,
    when set, the monitoring listener on ``settings.monitoring_bind``. Returns the exit
    code (1 when a listener failed, e.g. its address is taken)."""
    import uvloop

    from app.main.gc_policy import tune_for_serving

    tune_for_serving()
    return uvloop.run(_serve_listeners(app, settings))


def hypercorn_config(bind: str) -> Config:
    """Hypercorn's configuration for one listener on ``bind`` (``host:port``): one
    worker, no access log, the graceful timeout and WebSocket message bound of this
    module."""
    config = Config()
    config.bind = [bind]
    config.workers = 1
    config.accesslog = None
    config.errorlog = logging.getLogger("hypercorn.error")  # our handlers, no second copy
    config.graceful_timeout = GRACEFUL_SECONDS
    config.websocket_max_message_size = HYPERCORN_MAX_MESSAGE_BYTES
    return config


async def _serve_listeners(app: Quart, settings: Settings) -> int:
    from hypercorn.asyncio import serve as hypercorn_serve

    stop = _stop_on_signals()
    # The listeners pass scopes through untouched: plain ASGI callables, while Quart and
    # hypercorn type the same callables with their TypedDict scopes and events.
    public, monitoring = listener_apps(
        cast(ASGIApp, app), monitoring=settings.monitoring_bind is not None
    )
    servers = [
        hypercorn_serve(
            cast(Any, public),
            hypercorn_config(settings.bind),
            shutdown_trigger=_public_trigger(app, stop),
        )
    ]
    log.info("serving on http://%s", settings.bind)
    if monitoring is not None and settings.monitoring_bind is not None:
        config = hypercorn_config(settings.monitoring_bind)
        servers.append(hypercorn_serve(cast(Any, monitoring), config, shutdown_trigger=stop.wait))
        log.info("monitoring endpoints on http://%s", settings.monitoring_bind)
    tasks = [asyncio.create_task(server) for server in servers]
    done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    failed = [task.exception() for task in done if task.exception() is not None]
    if pending:  # a listener failed: the others stop as on SIGTERM, within bounds
        stop.set()
        _, late = await asyncio.wait(pending, timeout=SHUTDOWN_SECONDS)
        for task in late:  # e.g. still waiting for a start-up that will not come
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)
    for error in failed:
        log.error("a listener failed: %s", error)
    return 1 if failed else 0


def _stop_on_signals() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _public_trigger(app: Quart, stop: asyncio.Event) -> Callable[[], Awaitable[None]]:
    """Returns when ``stop`` is set, after telling WebSocket clients (1001): hypercorn
    would otherwise wait for them to leave."""

    async def wait() -> None:
        await stop.wait()
        state: ServiceState = app.extensions[EXTENSION]
        await state.broadcaster.close()

    return wait


if __name__ == "__main__":
    sys.exit(main())
