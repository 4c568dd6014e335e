"""Webhook delivery against local aiohttp receivers on 127.0.0.1: retries, breaker,
timeouts, and the destination policy (for ``WebhookSender.send`` and for the outbox's
one-POST path, ``WebhookJsonSend``) at connection time (every spelling of an internal
address refused without a connection, DNS rebinding refused by the session's resolver,
redirects not followed, the allow-list letting an internal receiver through) with no
secret of a URL in results or logs. A guard fails any test that tries to connect
anywhere but loopback."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.test_utils import TestServer

from app.resilience.breaker import BreakerConfig
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationRefused
from app.services.alerts.outbox import Outbox
from app.services.alerts.outbox_file import FileOutboxStore
from app.services.alerts.outbox_worker import OutboxWorker
from app.services.alerts.webhook_channel import WebhookJsonSend, apprise_json_url
from app.services.alerts.webhooks import WebhookSender
from tests.conftest import ManualClock, eventually
from tests.integration.test_alert_store import make_alert
from tests.support.servers import free_port

PAYLOAD = {"id": "a1", "symbol": "BTCUSDT", "message": "BTCUSDT above 100000: 100123.5"}
PUBLIC = "93.184.215.14"  # a global address: resolved to in tests, never connected to


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch) -> list:
    """Refuses (and records) any connection to a non-loopback address; the test fails
    at teardown if there was one."""
    real = socket.socket.connect
    outside: list = []

    def connect(sock: socket.socket, address) -> None:
        host = address[0] if isinstance(address, tuple) else None
        if host is not None and not ipaddress.ip_address(host.split("%")[0]).is_loopback:
            outside.append(address)
            raise ConnectionRefusedError(f"test guard: no connection to {host}")
        return real(sock, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    yield outside
    assert outside == [], f"connections outside loopback: {outside}"


class TableResolver(AbstractResolver):
    """A resolver the test controls: ``table`` maps names to addresses (change it to
    make a name re-resolve); ``calls`` counts lookups."""

    def __init__(self, table: dict[str, list[str]]) -> None:
        self.table = table
        self.calls = 0

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        self.calls += 1
        if host not in self.table:
            raise OSError(f"{host}: no such host")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=socket.AI_NUMERICHOST,
            )
            for address in self.table[host]
        ]

    async def close(self) -> None:
        pass


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
    app.router.add_post("/hook/{rest:.*}", rec.handle)
    rec.server = TestServer(app, host="127.0.0.1")
    await rec.server.start_server()
    try:
        yield rec
    finally:
        rec.release.set()
        await rec.server.close()


def make_sender(clock=time.monotonic, **kw) -> WebhookSender:
    """A quick sender; the receivers here are on 127.0.0.1, so that is allowed unless
    the test says otherwise."""
    kw.setdefault("allow", ("127.0.0.1",))
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
        with caplog.at_level(logging.WARNING, logger="app.services.alerts.webhooks"):
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
    receiver.hang = True  # answers nothing until released (the test never releases it)
    sender = make_sender(timeout_seconds=0.2, max_retries=1)
    started = time.monotonic()
    try:
        # the outer bound only keeps a broken timeout from hanging the test
        result = await asyncio.wait_for(sender.send(receiver.url, PAYLOAD), 30)
    finally:
        await sender.close()
    # Both attempts reached the receiver and got no answer: the sender's timeout ended
    # each of them, not the receiver (its own 10 s limit would have answered 500).
    assert not result.ok and result.attempts == 2 and result.status is None
    assert len(receiver.bodies) == 2
    assert "Timeout" in (result.error or "")
    assert time.monotonic() - started >= 2 * 0.2


async def test_background_sends_do_not_block_and_close_cancels_them(receiver: Receiver) -> None:
    sender = make_sender()
    task = sender.send_in_background(receiver.url, PAYLOAD)
    assert task is not None
    result = await asyncio.wait_for(task, 5)
    assert result.ok and sender.pending == 0

    receiver.hang = True
    task = sender.send_in_background(receiver.url, PAYLOAD)
    # returns at once: a plain call handing back the running send, which cannot have
    # finished (the receiver holds its answer until released, and it never is)
    assert isinstance(task, asyncio.Task) and not task.done()
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


@pytest.mark.parametrize(
    "spelling",
    [
        "http://127.0.0.1:{port}/hook",
        "http://2130706433:{port}/hook",  # decimal
        "http://0177.0.0.1:{port}/hook",  # octal
        "http://0x7f.1:{port}/hook",  # hex, short
        "http://127.1:{port}/hook",  # short
        "http://[::1]:{port}/hook",
        "http://[::ffff:127.0.0.1]:{port}/hook",
        "http://[0:0:0:0:0:ffff:7f00:1]:{port}/hook",
        "http://localhost:{port}/hook",
        "http://localhost.:{port}/hook",  # trailing dot
        "http://LOCALHOST:{port}/hook",
        "http://good.example@127.0.0.1:{port}/hook",  # userinfo trick
        "HTTP://127.0.0.1:{port}/hook",
        "http://169.254.169.254/latest/meta-data/",  # refused before any connection
        "http://10.0.0.1:6379/",
        "http://[fd00::1]:11211/",
    ],
)
async def test_internal_destinations_are_refused_without_a_connection(
    receiver: Receiver, spelling: str, caplog
) -> None:
    port = receiver.server.port if receiver.server else 0
    url = spelling.format(port=port)
    sender = make_sender(allow=())
    try:
        with caplog.at_level(logging.WARNING, logger="app.services.alerts.webhooks"):
            first = await sender.send(url, PAYLOAD)
            second = await sender.send(url, PAYLOAD)
    finally:
        await sender.close()
    assert (first.ok, first.refused, first.attempts, first.status) == (False, True, 0, None)
    assert "destinations must be public" in (first.error or "") and second.refused
    assert receiver.bodies == []
    assert sender.refused == 2
    assert caplog.text.count("refused") == 1  # logged once per host


async def test_a_name_that_re_resolves_to_loopback_is_refused_at_delivery(
    receiver: Receiver,
) -> None:
    """DNS rebinding: public when the rule is created, loopback when delivering."""
    port = receiver.server.port if receiver.server else 0
    resolver = TableResolver({"hooks.test": [PUBLIC]})
    sender = make_sender(allow=(), resolver=resolver)
    url = f"http://hooks.test:{port}/hook"
    try:
        await sender.check_destination(url)  # what rule creation does: passes
        resolver.table["hooks.test"] = ["127.0.0.1"]
        result = await sender.send(url, PAYLOAD)
        resolver.table["hooks.test"] = [PUBLIC, "127.0.0.1"]  # one bad address is enough
        mixed = await sender.send(url, PAYLOAD)
        with pytest.raises(DestinationRefused, match=r"resolves to 127\.0\.0\.1, a loopback"):
            await sender.check_destination(url)
    finally:
        await sender.close()
    assert result.refused and not result.ok and result.attempts == 0
    assert "hooks.test resolves to 127.0.0.1, a loopback address" in (result.error or "")
    assert mixed.refused
    assert receiver.bodies == []
    assert resolver.calls >= 3  # every delivery resolves again (no DNS cache)
    assert sender.breaker(url).state == "closed"  # a refusal is not the receiver's fault


async def test_names_resolving_to_internal_addresses_with_the_system_resolver() -> None:
    """``localhost`` resolves through getaddrinfo (the hosts file) to loopback."""
    sender = make_sender(allow=())
    try:
        addresses = await sender.resolver.lookup("localhost", 80)
        assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
        with pytest.raises(DestinationRefused, match=r"resolves to .*loopback"):
            sender.policy.check_resolved("localhost", addresses)
        with pytest.raises(DestinationRefused, match="loopback"):
            await sender.resolver.resolve("localhost", 80)
    finally:
        await sender.close()


async def test_the_allow_list_lets_internal_receivers_through(receiver: Receiver) -> None:
    port = receiver.server.port if receiver.server else 0
    resolver = TableResolver({"alertmanager.test": ["127.0.0.1"]})
    cases = [
        (("127.0.0.1",), f"http://127.0.0.1:{port}/hook"),
        (("127.0.0.0/8",), f"http://0x7f.1:{port}/hook"),
        (("alertmanager.test",), f"http://alertmanager.test:{port}/hook"),
        (("127.0.0.0/8",), f"http://alertmanager.test:{port}/hook"),
    ]
    for allow, url in cases:
        sender = make_sender(allow=allow, resolver=resolver)
        try:
            await sender.check_destination(url)
            result = await sender.send(url, PAYLOAD)
        finally:
            await sender.close()
        assert result.ok and result.status == 200, (allow, url, result)
    assert receiver.bodies == [PAYLOAD] * len(cases)


async def test_redirects_are_not_followed() -> None:
    """A real receiver answering 302 (to its own second route, and to the metadata
    address): the sender reports the 302 and requests nothing else."""
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        target = "/internal" if request.path == "/hook" else "http://169.254.169.254/"
        raise web.HTTPFound(target)

    app = web.Application()
    app.router.add_route("*", "/hook", redirect)
    app.router.add_route("*", "/meta", redirect)
    app.router.add_route("*", "/internal", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sender = make_sender()
    try:
        for path in ("/hook", "/meta"):
            result = await sender.send(str(server.make_url(path)), PAYLOAD)
            assert (result.ok, result.status, result.attempts) == (False, 302, 1)
    finally:
        await sender.close()
        await server.close()
    assert hits == ["/hook", "/meta"]


SECRETS = ("s3cr3t-user", "pa55word", "T0KENPATH", "t0ps3cret", "fragm3nt")


def secret_url(host_port: str) -> str:
    return f"http://s3cr3t-user:pa55word@{host_port}/hook/T0KENPATH?token=t0ps3cret#fragm3nt"


async def test_no_secret_of_the_url_in_results_or_logs(receiver: Receiver, caplog) -> None:
    port = receiver.server.port if receiver.server else 0
    resolver = TableResolver({"hooks.test": ["10.0.0.7"]})
    results = []
    with caplog.at_level(logging.DEBUG):
        sender = make_sender(max_retries=1, resolver=resolver)
        try:
            receiver.statuses = [500, 500]
            results.append(await sender.send(secret_url(f"127.0.0.1:{port}"), PAYLOAD))
            results.append(await sender.send(secret_url(f"127.0.0.1:{free_port()}"), PAYLOAD))
            results.append(await sender.send(secret_url("hooks.test:1"), PAYLOAD))  # refused
            results.append(await sender.send(secret_url("[::1]:1"), PAYLOAD))  # refused
            results.append(await sender.send(secret_url("bad host:1"), PAYLOAD))
        finally:
            await sender.close()
    assert [r.ok for r in results] == [False] * 5
    assert [r.refused for r in results] == [False, False, True, True, True]
    assert results[0].url == "http://127.0.0.1/…" and results[0].status == 500
    assert receiver.bodies == [PAYLOAD, PAYLOAD]  # the userinfo did reach the receiver
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    shown = repr(ours) + repr(results) + repr(list(sender._breakers))
    assert len(ours) == 5 and all("webhook delivery to" in line for line in ours)
    for secret in SECRETS:
        assert secret not in shown, secret


async def test_a_huge_answer_is_not_read_whole() -> None:
    """A receiver answering 200 with 64 MB: delivered, reading at most 64 KB of it (the
    rest is cut off; what was sent is bounded by the socket buffers)."""
    sent: list[int] = []

    async def huge(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(status=200)
        await response.prepare(request)
        chunk = b"x" * 65536
        try:
            for _ in range(1024):
                await response.write(chunk)
                sent.append(len(chunk))
        except (ConnectionResetError, RuntimeError):
            pass  # the sender hung up: good
        return response

    app = web.Application()
    app.router.add_post("/hook", huge)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sender = make_sender()
    try:
        result = await sender.send(str(server.make_url("/hook")), PAYLOAD)
    finally:
        await sender.close()
        await server.close()
    assert result.ok and result.status == 200
    assert sum(sent) < 32 * 1024 * 1024, sum(sent)


# --- the outbox's path: one POST per attempt (WebhookJsonSend → post_once) -------------


async def send_once(sender: WebhookSender, url: str) -> DeliveryFailed | None:
    """One delivery through the outbox's default sender, the rule's http(s) URL made an
    Apprise json(s):// URL as the outbox stores it; the failure, or None when delivered."""
    try:
        await WebhookJsonSend(sender)(apprise_json_url(url), "title", "message", "k" * 32)
    except DeliveryFailed as failure:
        return failure
    return None


async def test_the_outbox_path_posts_apprise_json_with_the_idempotency_key(
    receiver: Receiver,
) -> None:
    sender = make_sender()
    try:
        assert await send_once(sender, receiver.url + "/x?a=1") is None
    finally:
        await sender.close()
    assert receiver.bodies == [
        {
            "version": "1.0",
            "title": "title",
            "message": "message",
            "attachments": [],
            "type": "info",
            "idempotency_key": "k" * 32,
        }
    ]


@pytest.mark.parametrize(
    "spelling",
    ["http://127.0.0.1:{port}/hook", "http://0x7f.1:{port}/hook", "http://[::1]:{port}/hook"],
)
async def test_the_outbox_path_refuses_internal_destinations_without_a_connection(
    receiver: Receiver, spelling: str
) -> None:
    port = receiver.server.port if receiver.server else 0
    sender = make_sender(allow=())
    try:
        failure = await send_once(sender, spelling.format(port=port))
    finally:
        await sender.close()
    assert failure is not None and failure.refused and not failure.retryable
    assert "destinations must be public" in failure.reason
    assert receiver.bodies == [] and sender.refused == 1


async def test_the_outbox_path_refuses_a_name_re_resolving_to_loopback(
    receiver: Receiver,
) -> None:
    port = receiver.server.port if receiver.server else 0
    resolver = TableResolver({"hooks.test": [PUBLIC]})
    sender = make_sender(allow=(), resolver=resolver)
    url = f"http://hooks.test:{port}/hook"
    try:
        await sender.check_destination(url)  # what rule creation does: passes
        resolver.table["hooks.test"] = ["127.0.0.1"]
        failure = await send_once(sender, url)
    finally:
        await sender.close()
    assert failure is not None and failure.refused and not failure.retryable
    assert "hooks.test resolves to 127.0.0.1, a loopback address" in failure.reason
    assert receiver.bodies == []


async def test_the_outbox_path_follows_no_redirect() -> None:
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        raise web.HTTPFound("http://169.254.169.254/")

    app = web.Application()
    app.router.add_route("*", "/hook", redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    sender = make_sender()
    try:
        failure = await send_once(sender, str(server.make_url("/hook")))
    finally:
        await sender.close()
        await server.close()
    assert failure is not None and (failure.reason, failure.retryable) == ("HTTP 302", False)
    assert hits == ["/hook"]


async def test_the_outbox_path_shows_no_secret_of_the_url(
    receiver: Receiver, caplog, tmp_path
) -> None:
    """Through the outbox and its worker (the reasons stored, the log lines): a 500, a
    refused connection, a refused destination and an unusable host."""
    port = receiver.server.port if receiver.server else 0
    resolver = TableResolver({"hooks.test": ["10.0.0.7"]})
    clock = ManualClock()
    sender = make_sender(resolver=resolver)
    outbox = Outbox(FileOutboxStore(tmp_path / "outbox.json"), clock=clock)
    worker = OutboxWorker(outbox, WebhookJsonSend(sender), clock=clock)
    urls = [
        secret_url(f"127.0.0.1:{port}"),
        secret_url(f"127.0.0.1:{free_port()}"),
        secret_url("hooks.test:1"),
        secret_url("[::1]:1"),
    ]
    alerts = [make_alert(int(clock() * 1000)) for _ in urls]
    receiver.statuses = [500]
    with caplog.at_level(logging.DEBUG):
        try:
            for alert, url in zip(alerts, urls, strict=True):
                await outbox.enqueue(alert, (), url)
            assert await worker.run_once() == 4
        finally:
            await sender.close()
    states = [(await outbox.deliveries_of(a.id))[0] for a in alerts]
    assert [s["status"] for s in states] == ["pending", "pending", "failed", "failed"]
    assert states[0]["reason"] == "HTTP 500"
    assert len(receiver.bodies) == 1  # the userinfo and path did reach the receiver
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    assert any("webhook delivery to 127.0.0.1" in line for line in ours)
    shown = repr(ours) + repr(states) + repr(list(worker._breakers))
    for secret in SECRETS:
        assert secret not in shown, secret
