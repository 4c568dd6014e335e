"""Webhook delivery against a local aiohttp receiver on 127.0.0.1."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.resilience.breaker import BreakerConfig
from app.services.webhooks import WebhookSender
from tests.conftest import ManualClock, eventually
from tests.servers import free_port

PAYLOAD = {"id": "a1", "symbol": "BTCUSDT", "message": "BTCUSDT above 100000: 100123.5"}


class Receiver:
    """Answers ``statuses`` in turn (then 200); ``hang`` makes it wait until released."""

    def __init__(self) -> None:
        self.bodies: list[dict] = []
        self.statuses: list[int] = []
        self.hang = False
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(orjson.loads(await request.read()))
        if self.hang:
            async with asyncio.timeout(10):
                await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    @property
    def url(self) -> str:
        assert self.server is not None
        return str(self.server.make_url("/hook"))


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    app = web.Application()
    app.router.add_post("/hook", rec.handle)
    rec.server = TestServer(app, host="127.0.0.1")
    await rec.server.start_server()
    try:
        yield rec
    finally:
        rec.release.set()
        await rec.server.close()


def make_sender(clock=time.monotonic, **kw) -> WebhookSender:
    kw.setdefault("timeout_seconds", 2.0)
    kw.setdefault("backoff_seconds", 0.01)
    return WebhookSender(clock=clock, **kw)


async def test_delivers_the_alert_json(receiver: Receiver) -> None:
    sender = make_sender()
    try:
        result = await sender.send(receiver.url, PAYLOAD)
    finally:
        await sender.close()
    assert (result.ok, result.status, result.attempts, result.error) == (True, 200, 1, None)
    assert receiver.bodies == [PAYLOAD]


async def test_retries_after_a_500_but_not_after_a_4xx(receiver: Receiver) -> None:
    patient = BreakerConfig(consecutive_failures=10)  # this test is not about the breaker
    sender = make_sender(max_retries=2, breaker_config=patient)
    try:
        receiver.statuses = [500, 503]
        result = await sender.send(receiver.url, PAYLOAD)
        assert (result.ok, result.attempts, len(receiver.bodies)) == (True, 3, 3)
        receiver.statuses = [500, 500, 500]
        result = await sender.send(receiver.url, PAYLOAD)
        assert (result.ok, result.status, result.attempts) == (False, 500, 3)
        assert result.error == "HTTP 500"
        receiver.statuses = [404]
        result = await sender.send(receiver.url, PAYLOAD)
        assert (result.ok, result.status, result.attempts) == (False, 404, 1)
    finally:
        await sender.close()


async def test_the_breaker_opens_after_repeated_failures(receiver: Receiver, caplog) -> None:
    clock = ManualClock()
    config = BreakerConfig(consecutive_failures=3, open_seconds=30.0, max_open_seconds=60.0)
    sender = make_sender(clock, max_retries=2, breaker_config=config)
    try:
        receiver.statuses = [500] * 3
        with caplog.at_level(logging.WARNING, logger="app.services.webhooks"):
            assert (await sender.send(receiver.url, PAYLOAD)).attempts == 3
            result = await sender.send(receiver.url, PAYLOAD)  # fails fast, no request
        assert not result.ok and result.attempts == 0 and "circuit open" in (result.error or "")
        assert len(receiver.bodies) == 3
        assert sender.breaker(receiver.url).state == "open"
        assert caplog.text.count("webhook delivery to") == 1  # logged once per failing host
        clock.advance(30)  # the breaker lets a probe through; the receiver is fine now
        assert (await sender.send(receiver.url, PAYLOAD)).ok
        assert sender.breaker(receiver.url).state == "closed"
    finally:
        await sender.close()


async def test_connection_errors_are_retried_and_never_raised() -> None:
    sender = make_sender(max_retries=2)
    try:
        result = await sender.send(f"http://127.0.0.1:{free_port()}/hook", PAYLOAD)
        assert not result.ok and result.attempts == 3 and result.status is None
        assert result.error
        bad = await sender.send("http://127.0.0.1:1/x", {"not json": object()})
        assert not bad.ok and "not JSON" in (bad.error or "")
    finally:
        await sender.close()


async def test_timeouts_are_bounded(receiver: Receiver) -> None:
    receiver.hang = True
    sender = make_sender(timeout_seconds=0.2, max_retries=1)
    started = time.monotonic()
    try:
        result = await asyncio.wait_for(sender.send(receiver.url, PAYLOAD), 5)
    finally:
        await sender.close()
    assert not result.ok and result.attempts == 2
    assert time.monotonic() - started < 2.0


async def test_background_sends_do_not_block_and_close_cancels_them(receiver: Receiver) -> None:
    sender = make_sender()
    task = sender.send_in_background(receiver.url, PAYLOAD)
    assert task is not None
    result = await asyncio.wait_for(task, 5)
    assert result.ok and sender.pending == 0

    receiver.hang = True
    started = time.monotonic()
    task = sender.send_in_background(receiver.url, PAYLOAD)
    assert task is not None and time.monotonic() - started < 0.1  # returns at once
    await eventually(lambda: len(receiver.bodies) == 2, seconds=5)
    assert sender.pending == 1
    await asyncio.wait_for(sender.close(), 5)
    assert task.cancelled() and sender.pending == 0
    assert sender.send_in_background(receiver.url, PAYLOAD) is None  # closed
    assert not (await sender.send(receiver.url, PAYLOAD)).ok


@pytest.mark.parametrize("bad", ["not a url", "ftp://127.0.0.1/x"])
async def test_unusable_urls_fail_quietly(bad: str) -> None:
    sender = make_sender()
    try:
        result = await sender.send(bad, PAYLOAD)
    finally:
        await sender.close()
    assert not result.ok and result.error
