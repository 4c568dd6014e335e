"""A rule's webhook delivered the one way every alert is delivered — Apprise's
``json://`` through ``apprise_sender.send`` / ``AppriseSend``, and the outbox's worker —
against real aiohttp receivers on 127.0.0.1: the message and its idempotency key, which
failures are retried, a slow receiver cut off by the time-out, the destination policy
before each attempt (every spelling of an internal address refused without a
connection, names resolving to internal addresses refused, the allow-list letting an
internal receiver through), redirects not followed, and no secret of a URL in reasons,
stored states or log lines. A guard fails any test that connects anywhere but loopback.

Not tested, because it does not hold: the policy is checked before each attempt, and
Apprise then resolves the name again itself, so a name that re-resolves to an internal
address in between (DNS rebinding) is not caught (docs/security.md).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestServer

from app.services.alerts import apprise_sender
from app.services.alerts.apprise_sender import AppriseSend
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationPolicy, DestinationRefused
from app.services.alerts.outbox import Outbox
from app.services.alerts.outbox_file import FileOutboxStore
from app.services.alerts.outbox_worker import OutboxWorker
from app.services.alerts.webhook_channel import apprise_json_url, check_webhook_url
from tests.conftest import ManualClock, eventually, make_settings
from tests.integration.test_alert_store import make_alert
from tests.support.servers import free_port

KEY = "k" * 32
LOOPBACK = ("127.0.0.1",)  # VIRTUOSO_WEBHOOK_ALLOW for the receivers here
PUBLIC = "93.184.215.14"  # a global address: resolved to in tests, never connected to


@pytest.fixture(autouse=True)
def loopback_only(monkeypatch) -> list:
    """Refuses (and records) any connection to a non-loopback address, from any thread
    (Apprise sends in worker threads); the test fails at teardown if there was one."""
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


def table_lookup(table: dict[str, list[str]]) -> apprise_sender.Lookup:
    """A ``Lookup`` the test controls: names to addresses (OSError for another name)."""

    async def lookup(host: str, port: int) -> list[str]:
        if host not in table:
            raise OSError(f"{host}: no such host")
        return table[host]

    return lookup


class Receiver:
    """Records each request's path and query, ``Idempotency-Key`` header and JSON body;
    answers ``statuses`` in turn (then 200); ``hang`` holds the answer until released."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str | None, dict]] = []
        self.statuses: list[int] = []
        self.hang = False
        self.release = asyncio.Event()
        self.server: TestServer | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.requests.append((request.path_qs, request.headers.get("Idempotency-Key"), body))
        if self.hang:
            async with asyncio.timeout(10):
                await self.release.wait()
        status = self.statuses.pop(0) if self.statuses else 200
        return web.Response(status=status, text="ok")

    @property
    def port(self) -> int:
        assert self.server is not None and self.server.port is not None
        return self.server.port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


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


async def deliver(
    webhook_url: str,
    allow: tuple[str, ...] = LOOPBACK,
    *,
    timeout_seconds: float = 5.0,
    lookup: apprise_sender.Lookup = apprise_sender.getaddrinfo_lookup,
) -> DeliveryFailed | None:
    """One attempt at a rule's webhook as the outbox makes it (the http(s) URL as an
    Apprise json(s):// URL); the failure, or None when delivered."""
    try:
        await apprise_sender.send(
            apprise_json_url(webhook_url),
            "title",
            "message",
            idempotency_key=KEY,
            policy=DestinationPolicy(allow),
            timeout_seconds=timeout_seconds,
            lookup=lookup,
        )
    except DeliveryFailed as failure:
        return failure
    return None


async def test_delivers_apprise_json_with_the_idempotency_key(receiver: Receiver) -> None:
    send = AppriseSend(DestinationPolicy(LOOPBACK), timeout_seconds=5.0)
    await send(apprise_json_url(receiver.url + "/x?a=1"), "title", "message", KEY)
    [(path_qs, header, body)] = receiver.requests
    assert path_qs == "/hook/x?a=1" and header == KEY
    assert (body["title"], body["type"]) == ("title", "info")
    assert body["message"] == f"message\n\nIdempotency-Key: {KEY}"


async def test_server_errors_and_throttling_are_retryable_other_answers_are_not(
    receiver: Receiver,
) -> None:
    """One attempt each (the outbox retries): 5xx, 408 and 429 may pass later; a 4xx
    means the receiver is up and refuses."""
    receiver.statuses = [500, 503, 429, 408, 404, 400]
    failures = [await deliver(receiver.url) for _ in range(6)]
    assert [f is not None and f.retryable for f in failures] == [True] * 4 + [False] * 2
    assert all(f is not None and not f.refused for f in failures)
    assert failures[0] is not None and "error=500" in failures[0].reason
    assert len(receiver.requests) == 6
    assert await deliver(receiver.url) is None  # 200


async def test_connection_errors_are_retryable_and_unusable_urls_are_not() -> None:
    failure = await deliver(f"http://127.0.0.1:{free_port()}/hook")
    assert failure is not None and failure.retryable and not failure.refused
    for bad in ("not a url", "ftp://127.0.0.1/x", "json://"):
        with pytest.raises(DeliveryFailed) as caught:
            await apprise_sender.send(
                bad, "t", "m", idempotency_key=KEY, policy=DestinationPolicy(), timeout_seconds=2
            )
        assert not caught.value.retryable and "not usable" in caught.value.reason


async def test_a_slow_receiver_is_cut_off_by_the_time_out(receiver: Receiver) -> None:
    """The receiver got the message and holds its answer (the test never releases it
    before the end): the send gives up after ``timeout_seconds``, retryable."""
    receiver.hang = True
    # the outer bound only keeps a broken time-out from hanging the test
    failure = await asyncio.wait_for(deliver(receiver.url, timeout_seconds=0.5), 30)
    assert failure is not None and failure.retryable and not failure.refused
    assert failure.reason == "json://127.0.0.1/…: no answer within 0.5 s"
    await eventually(lambda: len(receiver.requests) == 1)


REFUSED_SPELLINGS = [
    "http://127.0.0.1:{port}/hook",
    "http://2130706433:{port}/hook",  # decimal
    "http://[::1]:{port}/hook",
    "http://[::ffff:127.0.0.1]/hook",  # IPv4-mapped IPv6
    "http://[0:0:0:0:0:ffff:7f00:1]:{port}/hook",
    "http://localhost:{port}/hook",
    "http://localhost.:{port}/hook",  # trailing dot
    "http://LOCALHOST:{port}/hook",
    "http://good.example@127.0.0.1:{port}/hook",  # userinfo trick
    "HTTP://127.0.0.1:{port}/hook",
    "http://169.254.169.254/latest/meta-data/",
    "http://10.0.0.1:6379/",
    "http://[fd00::1]:11211/",
    "http://100.64.0.1/",
]
# Spellings Apprise itself cannot read as a host: the send fails as an unusable URL
# (no connection), and a rule naming one is refused by the policy when it is created.
UNREADABLE_SPELLINGS = [
    "http://0177.0.0.1:{port}/hook",  # octal
    "http://0x7f.1:{port}/hook",  # hex, short
    "http://127.1:{port}/hook",  # short
    "http://[::ffff:127.0.0.1]:{port}/hook",  # IPv4-mapped IPv6 with a port
]


@pytest.mark.parametrize("spelling", REFUSED_SPELLINGS + UNREADABLE_SPELLINGS)
async def test_internal_destinations_are_refused_without_a_connection(
    receiver: Receiver, spelling: str
) -> None:
    url = spelling.format(port=receiver.port)
    with pytest.raises(DestinationRefused, match="destinations must be public"):
        await check_webhook_url(url, DestinationPolicy())  # a rule naming it is refused
    failure = await deliver(url, allow=())
    assert failure is not None and not failure.retryable
    if spelling in REFUSED_SPELLINGS:
        assert failure.refused and "destinations must be public" in failure.reason
    else:
        assert not failure.refused and "not usable" in failure.reason
    assert receiver.requests == []


async def test_names_resolving_to_internal_addresses_are_refused(receiver: Receiver) -> None:
    """Every address a name resolves to must pass; a name that does not resolve is
    retryable (it may later), a refused one is not."""
    lookup = table_lookup({"hooks.test": ["10.0.0.7"], "mixed.test": [PUBLIC, "127.0.0.1"]})
    refused = await deliver(f"http://hooks.test:{receiver.port}/hook", (), lookup=lookup)
    assert refused is not None and refused.refused and not refused.retryable
    assert "hooks.test resolves to 10.0.0.7, a private address" in refused.reason
    mixed = await deliver(f"http://mixed.test:{receiver.port}/hook", (), lookup=lookup)
    assert mixed is not None and mixed.refused
    assert "resolves to 127.0.0.1, a loopback address" in mixed.reason
    unknown = await deliver(f"http://nowhere.test:{receiver.port}/hook", (), lookup=lookup)
    assert unknown is not None and unknown.retryable and not unknown.refused
    assert "nowhere.test cannot be resolved" in unknown.reason
    with pytest.raises(DestinationRefused, match=r"resolves to 10\.0\.0\.7"):
        await check_webhook_url("http://hooks.test/x", DestinationPolicy(), lookup=lookup)
    assert receiver.requests == []


async def test_the_system_resolver_finds_loopback_for_localhost() -> None:
    """``localhost`` through getaddrinfo (the hosts file): loopback, refused."""
    addresses = await apprise_sender.getaddrinfo_lookup("localhost", 80)
    assert addresses and all(ipaddress.ip_address(a).is_loopback for a in addresses)
    with pytest.raises(DestinationRefused, match=r"resolves to .*loopback"):
        DestinationPolicy().check_resolved("localhost", addresses)


@pytest.mark.parametrize(
    ("allow", "host"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.0/8", "127.0.0.1"),
        ("localhost", "localhost"),  # a listed name, whatever it resolves to
        ("127.0.0.1,10.0.0.0/8", "2130706433"),  # a listed address in any spelling
    ],
)
async def test_the_allow_list_lets_internal_receivers_through(
    receiver: Receiver, allow: str, host: str
) -> None:
    policy = DestinationPolicy(tuple(make_settings(VIRTUOSO_WEBHOOK_ALLOW=allow).webhook_allow))
    url = f"http://{host}:{receiver.port}/hook"
    await check_webhook_url(url, policy)  # a rule naming it is stored
    await AppriseSend(policy, timeout_seconds=5.0)(apprise_json_url(url), "t", "m", KEY)
    assert [header for _, header, _ in receiver.requests] == [KEY]


async def test_redirects_are_not_followed() -> None:
    """A real receiver answering 302 (to its own second route, and to the metadata
    address): a failure that is not retried, and nothing else is requested."""
    hits: list[str] = []

    async def redirect(request: web.Request) -> web.Response:
        hits.append(request.path)
        target = "/internal" if request.path == "/hook" else "http://169.254.169.254/"
        raise web.HTTPFound(target)

    app = web.Application()
    for path in ("/hook", "/meta", "/internal"):
        app.router.add_route("*", path, redirect)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        for path in ("/hook", "/meta"):
            failure = await deliver(str(server.make_url(path)))
            assert failure is not None and not failure.retryable and not failure.refused
            assert "error=302" in failure.reason
    finally:
        await server.close()
    assert hits == ["/hook", "/meta"]


SECRETS = ("s3cr3t-user", "pa55word", "T0KENPATH", "t0ps3cret", "fragm3nt")


def service_lines(caplog) -> list[str]:
    """Every log line but the test receivers' own access log (which names the path)."""
    return [r.getMessage() for r in caplog.records if r.name != "aiohttp.access"]


def secret_url(host_port: str) -> str:
    return f"http://s3cr3t-user:pa55word@{host_port}/hook/T0KENPATH?token=t0ps3cret#fragm3nt"


async def test_no_secret_of_the_url_in_reasons_or_logs(receiver: Receiver, caplog) -> None:
    """A 500, a refused connection, a name resolving to a private address, a loopback
    address, an unusable host: no reason and no log line (any logger, Apprise's too)
    carries the URL's userinfo, path, query or fragment; the fragment is not sent."""
    lookup = table_lookup({"hooks.test": ["10.0.0.7"]})
    receiver.statuses = [500]
    hosts = [f"127.0.0.1:{receiver.port}", f"127.0.0.1:{free_port()}", "hooks.test:1"]
    with caplog.at_level(logging.DEBUG):
        failures = [await deliver(secret_url(h), lookup=lookup) for h in hosts]
        failures.append(await deliver(secret_url("[::1]:1"), allow=()))
        failures.append(await deliver(secret_url("bad host:1")))
    assert all(f is not None for f in failures)
    assert [f.refused for f in failures if f] == [False, False, True, True, False]
    assert failures[0] is not None and failures[0].reason.startswith("json://127.0.0.1/…: ")
    [(path_qs, _, _)] = receiver.requests  # the 500: the secrets did reach the receiver
    assert path_qs == "/hook/T0KENPATH?token=t0ps3cret"
    shown = repr([f.reason for f in failures if f]) + repr(service_lines(caplog))
    for secret in SECRETS:
        assert secret not in shown, secret


async def test_the_outbox_shows_no_secret_of_a_rule_webhook(
    receiver: Receiver, caplog, tmp_path
) -> None:
    """A rule's webhook through the outbox and its worker (the stored states, the log
    lines, the breakers' names): a 500 (pending a retry), a refused connection
    (pending), a refused name and a refused address (failed, counted as refused)."""
    clock = ManualClock()
    outcomes: list[str] = []
    outbox = Outbox(
        FileOutboxStore(tmp_path / "outbox.json"),
        clock=clock,
        listener=lambda channel_type, outcome, seconds: outcomes.append(outcome),
    )
    lookup = table_lookup({"hooks.test": ["10.0.0.7"]})
    send = AppriseSend(DestinationPolicy(LOOPBACK), timeout_seconds=5.0, lookup=lookup)
    worker = OutboxWorker(outbox, send, clock=clock)
    urls = [
        secret_url(f"127.0.0.1:{receiver.port}"),
        secret_url(f"127.0.0.1:{free_port()}"),
        secret_url("hooks.test:1"),
        secret_url("[::1]:1"),
    ]
    alerts = [make_alert(int(clock() * 1000)) for _ in urls]
    receiver.statuses = [500]
    with caplog.at_level(logging.DEBUG):
        for alert, url in zip(alerts, urls, strict=True):
            await outbox.enqueue(alert, (), url)
        assert await worker.run_once() == 4
    states = [(await outbox.deliveries_of(a.id))[0] for a in alerts]
    assert [s["status"] for s in states] == ["pending", "pending", "failed", "failed"]
    assert sorted(outcomes) == ["refused", "refused", "retried", "retried"]
    assert "error=500" in states[0]["reason"]
    assert len(receiver.requests) == 1
    lines = service_lines(caplog)
    assert any("webhook delivery to 127.0.0.1" in line for line in lines)
    shown = repr(lines) + repr(states) + repr(list(worker._breakers))
    for secret in SECRETS:
        assert secret not in shown, secret
