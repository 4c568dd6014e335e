"""Notification channels through the API, end to end on loopback: json://, form:// and
ntfy:// to local HTTP receivers and mailto:// to a local SMTP server each get exactly
one test message with its title, body and idempotency key; a receiver that is down is
a 502 with a reason; internal destinations (email servers too) are refused unless
allowed; bad input is a 4xx JSON answer; the URLs' secrets appear in no response, log
line or metric; channels survive a restart (file) and live in Redis, whose outage makes
writes 503."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from urllib.parse import parse_qs

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from redis.asyncio import Redis

from app.services.alerts import apprise_sender
from app.services.alerts.channel_service import TEST_BODY, TEST_TITLE
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationPolicy
from tests.conftest import ManualClock
from tests.integration.test_alerts import AUTH, call, running
from tests.support.receivers import SMTP_PASSWORD, SMTP_USER, HttpReceiver, SmtpSink
from tests.support.servers import free_port

ALLOW = {"VIRTUOSO_WEBHOOK_ALLOW": "127.0.0.1"}
SECRETS = ("hook-user", "hunter2", "T0KEN-PATH", "s1gnature", "F0RM-T0KEN", "ntfy-pa55")
SECRETS_ALL = (*SECRETS, SMTP_PASSWORD)
CHANNELS = "/api/alerts/channels"


def channel_urls(receivers: list[HttpReceiver], sink: SmtpSink) -> dict[str, str]:
    json_rx, form_rx, ntfy_rx = receivers
    return {
        "json": f"json://hook-user:hunter2@127.0.0.1:{json_rx.port}/T0KEN-PATH?-sig=s1gnature",
        "form": f"form://127.0.0.1:{form_rx.port}/F0RM-T0KEN",
        "ntfy": f"ntfy://ntfy-user:ntfy-pa55@127.0.0.1:{ntfy_rx.port}/alerts-topic",
        "mailto": f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@example.com?smtp=127.0.0.1"
        f"&port={sink.port}&mode=insecure&to=ops@example.com",
    }


async def create(app, name: str, url: str) -> tuple[int, dict]:
    return await call(app, "post", CHANNELS, json={"name": name, "url": url}, headers=AUTH)


def logged(caplog) -> str:
    lines = [r.getMessage() for r in caplog.records]
    lines += [r.exc_text or "" for r in caplog.records]
    return "\n".join(lines)


def secrets_in(text: str, secrets: tuple[str, ...] = SECRETS_ALL) -> list[str]:
    return [secret for secret in secrets if secret in text]


async def test_each_channel_type_delivers_one_test_message_and_no_secret_leaves(
    tmp_path: Path, clock: ManualClock, channel_receivers, smtp_server, caplog
) -> None:
    """Apprise and urllib3 are captured at DEBUG too: their request lines name the
    URL's path, masked while a channel is in use."""
    for logger in ("app", "apprise", "urllib3"):
        caplog.set_level(logging.DEBUG, logger=logger)
    urls = channel_urls(channel_receivers, smtp_server)
    shown: list[bytes] = []
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        created = {}
        for kind, url in urls.items():
            status, body = await create(app, f"{kind} channel", url)
            assert status == 201, body
            created[kind] = body["channel"]
            shown.append(orjson.dumps(body))
        assert created["json"]["destination"] == "json://127.0.0.1/…"
        assert created["mailto"]["destination"] == "mailto://127.0.0.1/…"
        assert {c["type"] for c in created.values()} == set(urls)
        status, listed = await call(app, "get", CHANNELS, headers=AUTH)
        assert status == 200 and listed["total"] == 4
        assert [c["id"] for c in listed["channels"]] == [c["id"] for c in created.values()]
        assert all(set(c) == {"id", "name", "type", "destination", "created_at_ms"}
                   for c in listed["channels"])  # fmt: skip
        shown.append(orjson.dumps(listed))
        for kind, channel in created.items():
            status, answer = await call(
                app, "post", f"{CHANNELS}/{channel['id']}/test", headers=AUTH
            )
            assert (status, answer) == (200, {"delivered": True}), (kind, answer)
        metrics = await app.test_client().get("/metrics")
        assert metrics.status_code == 200
        shown.append(await metrics.get_data())
    json_rx, form_rx, ntfy_rx = channel_receivers
    assert [len(r.requests) for r in channel_receivers] == [1, 1, 1]
    (got_json,), (got_form,), (got_ntfy,) = json_rx.requests, form_rx.requests, ntfy_rx.requests
    key = got_json.headers["Idempotency-Key"]
    assert key.startswith(f"test-{created['json']['id']}-")
    assert got_json.path_qs == "/T0KEN-PATH?sig=s1gnature"  # delivered with the full URL
    assert got_json.basic_auth == "hook-user:hunter2"
    payload = orjson.loads(got_json.body)
    assert payload["title"] == TEST_TITLE
    assert payload["message"] == f"{TEST_BODY}\n\nIdempotency-Key: {key}"
    form = parse_qs(got_form.body.decode())
    assert got_form.path_qs == "/F0RM-T0KEN" and form["title"] == [TEST_TITLE]
    assert got_form.headers["Idempotency-Key"] in form["message"][0].splitlines()[-1]
    ntfy = orjson.loads(got_ntfy.body)
    assert (ntfy["topic"], ntfy["title"]) == ("alerts-topic", TEST_TITLE)
    assert ntfy["message"].startswith(TEST_BODY)
    assert ntfy["message"].splitlines()[-1].startswith("Idempotency-Key: test-")
    assert got_ntfy.basic_auth == "ntfy-user:ntfy-pa55"
    assert len(smtp_server.messages) == 1 and smtp_server.logins == [SMTP_USER]
    _, recipients, mail = smtp_server.messages[0]
    assert recipients == ["ops@example.com"]
    assert f"Subject: {TEST_TITLE}" in mail
    assert "Idempotency-Key: test-" in mail.split("\r\n\r\n")[0]  # a header
    assert "Idempotency-Key: test-" in mail.split("\r\n\r\n", 1)[1]  # and the body
    leaked = secrets_in(b"".join(shown).decode() + logged(caplog))
    assert leaked == [], leaked


async def test_a_receiver_that_is_down_is_a_502_with_a_reason(
    tmp_path: Path, clock: ManualClock, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    caplog.set_level(logging.WARNING, logger="apprise")
    down = free_port()
    urls = {
        "json": f"json://hook-user:hunter2@127.0.0.1:{down}/T0KEN-PATH?-sig=s1gnature",
        "mailto": f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@example.com?smtp=127.0.0.1"
        f"&port={down}&mode=insecure&to=ops@example.com",
    }
    answers = []
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        for kind, url in urls.items():
            status, body = await create(app, kind, url)
            assert status == 201, body
            path = f"{CHANNELS}/{body['channel']['id']}/test"
            status, answer = await call(app, "post", path, headers=AUTH)
            assert status == 502 and answer["delivered"] is False, answer
            assert answer["reason"].startswith(f"{kind}://127.0.0.1/…: ")
            assert answer["retryable"] is True
            answers.append(orjson.dumps(answer))
        assert "Connection error" in orjson.loads(answers[0])["reason"]
    leaked = secrets_in(b"".join(answers).decode() + logged(caplog))
    assert leaked == [], leaked


@pytest.mark.parametrize("status, retryable", [(500, True), (404, False)])
async def test_a_refusing_receiver_is_a_502_saying_whether_to_retry(
    tmp_path: Path, clock: ManualClock, channel_receivers, status: int, retryable: bool
) -> None:
    receiver = channel_receivers[0]
    receiver.status = status
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        _, body = await create(app, "hook", f"json://127.0.0.1:{receiver.port}/T0KEN-PATH")
        path = f"{CHANNELS}/{body['channel']['id']}/test"
        code, answer = await call(app, "post", path, headers=AUTH)
    assert (code, answer["retryable"]) == (502, retryable)
    assert f"error={status}" in answer["reason"] and "T0KEN" not in answer["reason"]
    assert len(receiver.requests) == 1


async def test_internal_destinations_are_refused_without_the_allow_list(
    tmp_path: Path, clock: ManualClock, smtp_server
) -> None:
    refused = [
        ("json://user:hunter2@127.0.0.1:9090/T0KEN-PATH", "127.0.0.1 is a loopback"),
        ("form://169.254.169.254/latest/meta-data", "169.254.169.254 is a link-local"),
        ("ntfy://10.0.0.5/topic", "10.0.0.5 is a private"),
        ("json://localhost:6379/", "localhost is a loopback name"),
        ("xml://[::1]:11211/T0KEN-PATH", "::1 is a loopback"),
        (
            f"mailto://{SMTP_USER}:{SMTP_PASSWORD}@example.com?smtp=127.0.0.1"
            f"&port={smtp_server.port}&mode=insecure&to=ops@example.com",
            "127.0.0.1 is a loopback",
        ),
    ]
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        for url, why in refused:
            status, error = await create(app, "internal", url)
            assert status == 400 and error["error"] == "destination_refused", (url, error)
            assert why in error["message"] and "VIRTUOSO_WEBHOOK_ALLOW" in error["message"]
            assert secrets_in(orjson.dumps(error).decode()) == []
        assert (await call(app, "get", CHANNELS, headers=AUTH))[1]["total"] == 0
    assert smtp_server.messages == [] and smtp_server.logins == []


async def test_bad_input_is_a_4xx_json_answer_without_the_url(
    tmp_path: Path, clock: ManualClock
) -> None:
    good = {"name": "ops", "url": "json://127.0.0.1:9/"}
    cases = [
        ({**good, "url": "bogus://user:hunter2@example.com/T0KEN-PATH"}, "unknown channel type"),
        ({**good, "url": "not a url hunter2"}, "cannot be parsed"),
        ({**good, "url": "json://"}, "not valid"),
        ({**good, "url": "tgram://hunter2/"}, "not valid"),
        ({**good, "url": "x" * 2001}, "url"),
        ({**good, "name": "n" * 61}, "name"),
        ({**good, "name": "  "}, "name"),
        ({**good, "extra": "T0KEN-PATH"}, "extra"),
        ({"name": "ops"}, "url"),
    ]
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        for body, named in cases:
            status, error = await call(app, "post", CHANNELS, json=body, headers=AUTH)
            assert status == 400 and named in error["message"], (body, error)
            assert secrets_in(orjson.dumps(error).decode()) == [], error
        assert (await call(app, "post", CHANNELS, json=good))[0] == 401
        assert (await call(app, "get", CHANNELS))[0] == 401
        assert (await call(app, "post", f"{CHANNELS}/nope/test", headers=AUTH))[0] == 404
        assert (await call(app, "delete", f"{CHANNELS}/nope", headers=AUTH))[0] == 404
        assert (await call(app, "get", CHANNELS, headers=AUTH))[1]["total"] == 0


async def test_rules_name_channels_which_cannot_go_while_named(
    tmp_path: Path, clock: ManualClock
) -> None:
    rule = {"kind": "change_above", "threshold": 50}
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        _, body = await create(app, "hook", "json://127.0.0.1:9/")
        channel_id = body["channel"]["id"]
        bad = {**rule, "channels": [channel_id, "f00dfeedbeef"]}
        status, error = await call(app, "post", "/api/alerts/rules", json=bad, headers=AUTH)
        assert status == 400 and "unknown channel 'f00dfeedbeef'" in error["message"]
        too_many = {**rule, "channels": [f"c{n}" for n in range(6)]}
        status, _ = await call(app, "post", "/api/alerts/rules", json=too_many, headers=AUTH)
        assert status == 400
        ok = {**rule, "channels": [channel_id]}
        status, created = await call(app, "post", "/api/alerts/rules", json=ok, headers=AUTH)
        assert status == 201 and created["rule"]["channels"] == [channel_id]
        rule_id = created["rule"]["id"]
        status, error = await call(app, "delete", f"{CHANNELS}/{channel_id}", headers=AUTH)
        assert status == 409 and error["rule_ids"] == [rule_id]
        assert (await call(app, "delete", f"/api/alerts/rules/{rule_id}", headers=AUTH))[0] == 200
        status, done = await call(app, "delete", f"{CHANNELS}/{channel_id}", headers=AUTH)
        assert (status, done) == (200, {"deleted": channel_id})
        assert (await call(app, "get", CHANNELS, headers=AUTH))[1]["channels"] == []


async def test_channels_survive_a_restart_in_their_own_file(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        status, body = await create(app, "hook", "json://127.0.0.1:9/T0KEN-PATH")
        assert status == 201
    stored = tmp_path / "channels.json"
    assert stored.stat().st_mode & 0o777 == 0o600  # it holds the URLs
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        _, listed = await call(app, "get", CHANNELS, headers=AUTH)
    assert listed["channels"] == [body["channel"]]


async def test_channels_live_in_redis_and_writes_answer_503_while_it_is_down(
    persistent_redis, clock: ManualClock
) -> None:
    url = f"redis://{persistent_redis.address}/0"
    async with running(clock, VIRTUOSO_REDIS_URL=url, **ALLOW) as app:
        status, body = await create(app, "hook", "json://127.0.0.1:9/T0KEN-PATH")
        assert status == 201
        channel_id = body["channel"]["id"]
        redis = Redis.from_url(url)
        try:
            keys = [k.decode() async for k in redis.scan_iter("*:alerts:channels")]
            assert len(keys) == 1 and await redis.hexists(keys[0], channel_id)
        finally:
            await redis.aclose()
        persistent_redis.kill()
        status, error = await create(app, "other", "json://127.0.0.1:9/")
        assert status == 503 and error["error"] == "channel_store_unavailable"
        assert (await call(app, "delete", f"{CHANNELS}/{channel_id}", headers=AUTH))[0] == 503
        assert (await call(app, "get", CHANNELS, headers=AUTH))[0] == 503
        persistent_redis.restart()
    async with running(clock, VIRTUOSO_REDIS_URL=url, **ALLOW) as app:
        _, listed = await call(app, "get", CHANNELS, headers=AUTH)
    assert listed["channels"] == [body["channel"]]


async def test_a_receiver_that_never_answers_is_a_retryable_time_out() -> None:
    """The sender gives up after its time-out (the worker thread's own socket time-out
    ends it soon after), with a reason and without the URL's secrets."""
    release = asyncio.Event()

    async def hang(request: web.Request) -> web.Response:
        await asyncio.wait_for(release.wait(), timeout=10)
        return web.Response(text="late")

    app = web.Application()
    app.router.add_post("/{tail:.*}", hang)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        with pytest.raises(DeliveryFailed) as failed:
            await apprise_sender.send(
                f"json://127.0.0.1:{server.port}/T0KEN-PATH", "title", "body",
                idempotency_key="k-1", policy=DestinationPolicy(("127.0.0.1",)),
                timeout_seconds=0.5,
            )  # fmt: skip
    finally:
        release.set()
        await server.close()
    assert failed.value.retryable
    assert failed.value.reason == "json://127.0.0.1/…: no answer within 0.5 s"
