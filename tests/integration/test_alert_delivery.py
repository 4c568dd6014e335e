"""A rule that fires reaches every channel it names, end to end on loopback: the rule's
template rendered into one message per channel (json://, form://, ntfy:// to local HTTP
receivers, mailto:// to a local SMTP server), each delivery shown as delivered, no
second message while the rule stays met, and no secret of the channels' URLs in any
response or log line."""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

import orjson

from tests.conftest import ManualClock, eventually
from tests.integration.test_alerts import call, fire, price_rule, running
from tests.integration.test_channels import (
    ALLOW,
    channel_urls,
    create,
    logged,
    secrets_in,
)

TEMPLATE = "{{ symbol }} is at {{ price | round(1) }} ({{ level }}): {{ title }}"


async def test_a_rule_reaches_each_channel_once_with_its_rendered_template(
    tmp_path: Path, clock: ManualClock, channel_receivers, smtp_server, caplog
) -> None:
    caplog.set_level(logging.DEBUG, logger="app")
    shown: list[bytes] = []
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        ids = []
        for kind, url in channel_urls(channel_receivers, smtp_server).items():
            status, body = await create(app, f"{kind} desk", url)
            assert status == 201, body
            ids.append(body["channel"]["id"])
        rule = await price_rule(app, template=TEMPLATE, channels=ids)  # type: ignore[arg-type]
        shown.append(orjson.dumps(rule))
        await fire(app, clock)
        _, listed = await call(app, "get", "/api/alerts")
        (alert,) = listed["alerts"]
        assert alert["message"] == (
            f"BTCUSDT is at {round(alert['values']['price'], 1)} (critical): BTC holds above half"
        )
        deliveries = f"/api/alerts/{alert['id']}/deliveries"

        async def all_delivered() -> bool:
            status, body = await call(app, "get", deliveries)
            return status == 200 and [d["status"] for d in body["deliveries"]] == [
                "delivered"
            ] * len(ids)

        await eventually(all_delivered, seconds=30)
        _, status_now = await call(app, "get", deliveries)
        assert sorted(d["channel_id"] for d in status_now["deliveries"]) == sorted(ids)
        assert {d["attempts"] for d in status_now["deliveries"]} == {1}
        shown.append(orjson.dumps(status_now))
        for _ in range(3):  # the price stays above the threshold: no second alert, no message
            await fire(app, clock)
        assert (await call(app, "get", "/api/alerts"))[1]["total"] == 1
    json_rx, form_rx, ntfy_rx = channel_receivers
    assert [len(r.requests) for r in channel_receivers] == [1, 1, 1]
    assert len(smtp_server.messages) == 1
    message = alert["message"]
    assert orjson.loads(json_rx.requests[0].body)["message"].startswith(message)
    assert parse_qs(form_rx.requests[0].body.decode())["message"][0].startswith(message)
    assert orjson.loads(ntfy_rx.requests[0].body)["message"].startswith(message)
    assert message in smtp_server.messages[0][2]
    keys = {r.headers["Idempotency-Key"] for r in (json_rx.requests[0], form_rx.requests[0])}
    assert len(keys) == 2  # one key per alert × channel
    leaked = secrets_in(b"".join(shown).decode() + logged(caplog))
    assert leaked == [], leaked


async def test_deliveries_wait_out_a_redis_outage_and_are_delivered_once(
    persistent_redis, clock: ManualClock, channel_receivers
) -> None:
    """The outbox lives in Redis: while Redis is down its deliveries cannot be read (503)
    or sent, and none is lost — once Redis is back the pending one is delivered, once."""
    receiver = channel_receivers[0]
    receiver.status = 503  # the first attempt fails: the delivery waits for a retry
    url = f"redis://{persistent_redis.address}/0"
    async with running(clock, VIRTUOSO_REDIS_URL=url, **ALLOW) as app:
        _, body = await create(app, "desk", f"json://127.0.0.1:{receiver.port}/hook")
        await price_rule(app, channels=[body["channel"]["id"]])  # type: ignore[arg-type]
        await fire(app, clock)
        (alert,) = (await call(app, "get", "/api/alerts"))[1]["alerts"]
        deliveries = f"/api/alerts/{alert['id']}/deliveries"

        async def status_is(wanted: str) -> bool:
            status, body = await call(app, "get", deliveries)
            return status == 200 and body["deliveries"][0]["status"] == wanted

        await eventually(lambda: len(receiver.requests) >= 1, seconds=30)
        assert await status_is("pending")
        persistent_redis.kill()
        status, down = await call(app, "get", deliveries)
        assert status == 503, down
        refused = len(receiver.requests)  # the attempts answered 503
        receiver.status = 200
        clock.advance(15 * 60)  # past any back-off: due again, but Redis is down
        await fire(app, clock)  # the evaluation meets the outage: no crash, nothing stored
        persistent_redis.restart()
        await eventually(lambda: status_is("delivered"), seconds=60)
    accepted = receiver.requests[refused:]
    assert len(accepted) == 1, [r.path_qs for r in receiver.requests]
    assert {r.headers["Idempotency-Key"] for r in receiver.requests} == {
        receiver.requests[0].headers["Idempotency-Key"]
    }
