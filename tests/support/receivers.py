"""Real receivers for notification channels on 127.0.0.1: an aiohttp HTTP receiver
(json://, form://, ntfy:// post to it) recording every request, and an aiosmtpd SMTP
server (plain SMTP with AUTH, no TLS) recording every message."""

from __future__ import annotations

import base64
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field

import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword

from tests.support.servers import free_port

SMTP_USER = "alerts"
SMTP_PASSWORD = "mail-pa55w0rd"


@dataclass(frozen=True)
class Received:
    method: str
    path_qs: str
    headers: dict[str, str]
    body: bytes

    @property
    def basic_auth(self) -> str | None:
        """``user:password`` of a Basic Authorization header, if any."""
        value = self.headers.get("Authorization", "")
        if not value.startswith("Basic "):
            return None
        return base64.b64decode(value.removeprefix("Basic ")).decode()


@dataclass
class HttpReceiver:
    """Answers ``status`` (200 by default) to any request and records it."""

    server: TestServer
    status: int = 200
    requests: list[Received] = field(default_factory=list)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.requests.append(Received(request.method, request.path_qs, dict(request.headers), body))
        return web.Response(status=self.status, text="ok")

    @property
    def port(self) -> int:
        port = self.server.port
        assert port is not None
        return port


async def start_http_receiver() -> HttpReceiver:
    app = web.Application()
    server = TestServer(app, host="127.0.0.1")
    receiver = HttpReceiver(server)
    app.router.add_route("*", "/{tail:.*}", receiver.handle)
    await server.start_server()
    return receiver


@contextlib.asynccontextmanager
async def http_receivers(count: int) -> AsyncIterator[list[HttpReceiver]]:
    """``count`` HTTP receivers, each on its own free port, closed at the end."""
    receivers = [await start_http_receiver() for _ in range(count)]
    try:
        yield receivers
    finally:
        for receiver in receivers:
            await receiver.server.close()


@dataclass
class SmtpSink:
    """Records each message (envelope sender, recipients, raw content)."""

    port: int
    messages: list[tuple[str, list[str], str]] = field(default_factory=list)
    logins: list[str] = field(default_factory=list)

    async def handle_DATA(self, server, session, envelope: Envelope) -> str:
        content = envelope.content
        text = content.decode() if isinstance(content, bytes) else str(content)
        self.messages.append((str(envelope.mail_from), list(envelope.rcpt_tos), text))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, data) -> AuthResult:
        if not isinstance(data, LoginPassword):
            return AuthResult(success=False, handled=False)
        self.logins.append(data.login.decode())
        ok = (data.login.decode(), data.password.decode()) == (SMTP_USER, SMTP_PASSWORD)
        return AuthResult(success=ok)


@contextlib.contextmanager
def smtp_sink() -> Iterator[SmtpSink]:
    """A local SMTP server (aiosmtpd) accepting ``SMTP_USER``/``SMTP_PASSWORD`` without TLS."""
    sink = SmtpSink(port=free_port())
    controller = Controller(
        sink,
        hostname="127.0.0.1",
        port=sink.port,
        authenticator=sink.authenticate,
        auth_require_tls=False,
    )
    controller.start()
    try:
        yield sink
    finally:
        controller.stop()


# -- fixtures (the conftest registers this module as a plugin) ------------------------


@pytest_asyncio.fixture
async def channel_receivers() -> AsyncIterator[list[HttpReceiver]]:
    """Three HTTP receivers: one per HTTP channel type (json, form, ntfy)."""
    async with http_receivers(3) as started:
        yield started


@pytest.fixture
def smtp_server() -> Iterator[SmtpSink]:
    """A local SMTP server (``smtp_sink``) for a test."""
    with smtp_sink() as sink:
        yield sink
