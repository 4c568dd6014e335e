"""Serve a Quart app with hypercorn on a free loopback port, inside the test's event loop.

    async with serve_app(app) as base:      # base: "ws://127.0.0.1:<port>"
        ...

``port``: a port chosen beforehand (e.g. one a scraper was told of), else a free one.
On exit the server is told to shut down and awaited (bounded); clients still open
are given ``graceful_timeout`` seconds, then dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config
from quart import Quart

from app.realtime import HYPERCORN_MAX_MESSAGE_BYTES
from tests.support.servers import free_port


@contextlib.asynccontextmanager
async def serve_app(app: Quart, port: int | None = None, **config: Any) -> AsyncIterator[str]:
    port = free_port() if port is None else port
    settings = Config()
    settings.bind = [f"127.0.0.1:{port}"]
    settings.graceful_timeout = 3.0
    settings.accesslog = None
    settings.errorlog = None
    settings.websocket_max_message_size = HYPERCORN_MAX_MESSAGE_BYTES
    for name, value in config.items():
        setattr(settings, name, value)
    stop = asyncio.Event()
    task = asyncio.create_task(serve(app, settings, shutdown_trigger=stop.wait))  # type: ignore[arg-type]
    try:
        await _wait_listening(port, task)
        yield f"ws://127.0.0.1:{port}"
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


async def _wait_listening(port: int, task: asyncio.Task, seconds: float = 10.0) -> None:
    async with asyncio.timeout(seconds):
        while True:
            if task.done():
                task.result()  # raises the server's error
                raise RuntimeError("hypercorn stopped before listening")
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
            except OSError:
                await asyncio.sleep(0.02)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return
