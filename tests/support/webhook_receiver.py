"""A JSON webhook receiver on a free loopback port, as a careful real receiver behaves:
it records every message, and accepts each idempotency key once (a repeat is answered
200 and dropped). It can be down (nothing listens: connection refused), answer a
status (e.g. 503), or hold requests until released."""

from __future__ import annotations

import asyncio

import orjson
from aiohttp import web

from tests.support.servers import free_port


class Receiver:
    """``messages``: (path, idempotency header, JSON body) of every request received;
    ``accepted``: key → times a message with it was accepted (the first) or dropped as a
    repeat (the others count too: ``accepted[key]`` is the messages seen with it, and
    ``firsts`` the keys accepted, each once)."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.status = 200
        self.hold: asyncio.Event | None = None
        self.messages: list[tuple[str, str | None, dict]] = []
        self.firsts: list[str] = []
        self.held = 0
        self._runner: web.AppRunner | None = None

    def url(self, path: str = "/hook") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key")
        body = orjson.loads(await request.read())
        self.messages.append((request.path_qs, key, body))
        if self.hold is not None:
            self.held += 1
            await self.hold.wait()
        if self.status != 200:
            return web.Response(status=self.status)
        if key is not None and key not in self.firsts:
            self.firsts.append(key)
        return web.json_response({"ok": True})

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True).start()

    async def stop(self) -> None:
        if self.hold is not None:
            self.hold.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
