"""Alert lifecycle end to end on the running app: rule → trigger on a snapshot →
stored → listed (cached) → acknowledged → resolved; cooldown; persistence across a
restart with Redis and without; Redis down: writes 503, nothing stored is lost."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from aiohttp import web
from aiohttp.test_utils import TestServer
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings, state_of
from tests.integration.test_alert_store import count_file_writes
from tests.support.markets import CountingMarket

TOKEN = "alerts-api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@contextlib.asynccontextmanager
async def running(clock: ManualClock, **environ: str) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT",
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
        **environ,
    )
    app = create_app(settings, CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


async def call(app: QuartTestApp, method: str, path: str, json=None, headers=None):
    client = app.test_client()
    response = await getattr(client, method)(path, json=json, headers=headers or {})
    return response.status_code, orjson.loads(await response.get_data())


async def price_rule(app: QuartTestApp, level: str = "critical", **extra: str) -> dict:
    _, desktop = await call(app, "get", "/api/dashboard/data")
    btc = next(row["price"] for row in desktop["symbols"] if row["symbol"] == "BTCUSDT")
    status, body = await call(
        app,
        "post",
        "/api/alerts/rules",
        headers=AUTH,
        json={
            "kind": "price_above",
            "symbol": "btc-usdt",
            "threshold": btc / 2,
            "level": level,
            "cooldown_seconds": 600,
            "title": "BTC holds above half",
            **extra,
        },
    )
    assert status == 201, body
    return body["rule"]


async def fire(app: QuartTestApp, clock: ManualClock) -> None:
    clock.advance(10)
    await state_of(app).pipeline.refresh(force=True)


async def test_alert_lifecycle(tmp_path: Path, clock: ManualClock) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        rule = await price_rule(app)
        assert rule["symbol"] == "BTCUSDT"
        await fire(app, clock)
        status, listed = await call(app, "get", "/api/alerts?status=pending")
        assert status == 200 and listed["total"] == 1
        alert = listed["alerts"][0]
        assert (alert["rule_id"], alert["symbol"], alert["level"]) == (
            rule["id"],
            "BTCUSDT",
            "critical",
        )
        assert alert["values"]["price"] > rule["threshold"]
        _, mobile = await call(app, "get", "/api/dashboard/mobile")
        assert [a["id"] for a in mobile["critical_alerts"]] == [alert["id"]]
        for _ in range(3):  # the price stays above: no alert storm
            await fire(app, clock)
        assert (await call(app, "get", "/api/alerts"))[1]["total"] == 1
        status, acked = await call(app, "post", f"/api/alerts/{alert['id']}/ack", headers=AUTH)
        assert status == 200 and acked["alert"]["status"] == "acknowledged"
        status, done = await call(app, "post", f"/api/alerts/{alert['id']}/resolve", headers=AUTH)
        assert status == 200 and done["alert"]["resolved_at_ms"] is not None
        again = await call(app, "post", f"/api/alerts/{alert['id']}/ack", headers=AUTH)
        assert again[0] == 409
        assert (await call(app, "get", "/api/alerts?status=resolved"))[1]["total"] == 1
        _, mobile = await call(app, "get", "/api/dashboard/mobile")
        assert mobile["critical_alerts"] == []
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:  # a restart
        _, rules = await call(app, "get", "/api/alerts/rules")
        assert [r["id"] for r in rules["rules"]] == [rule["id"]]
        _, listed = await call(app, "get", "/api/alerts")
        assert listed["alerts"][0]["status"] == "resolved"


async def test_writes_need_the_token_and_valid_input(tmp_path: Path, clock: ManualClock) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        good = {"kind": "price_below", "symbol": "ETHUSDT", "threshold": 1000}
        assert (await call(app, "post", "/api/alerts/rules", json=good))[0] == 401
        wrong = {"Authorization": "Bearer not-the-token-at-all"}
        assert (await call(app, "post", "/api/alerts/rules", json=good, headers=wrong))[0] == 401
        cases = [
            ({**good, "symbol": "DOGEUSDT"}, "DOGEUSDT"),
            ({**good, "kind": "moon"}, "kind"),
            ({**good, "threshold": "NaN"}, "threshold"),
            ({**good, "title": "x" * 500}, "title"),
            ({**good, "extra": 1}, "extra"),
        ]
        for body, named in cases:
            status, error = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
            assert status == 400 and named in error["message"], (body, error)
        assert (await call(app, "get", "/api/alerts/rules"))[1]["rules"] == []  # nothing stored
        assert (await call(app, "delete", "/api/alerts/rules/nope", headers=AUTH))[0] == 404
        assert (await call(app, "post", "/api/alerts/nope/ack", headers=AUTH))[0] == 404
        assert (await call(app, "get", "/api/alerts?limit=0"))[0] == 400
        assert (await call(app, "get", "/api/alerts?status=lost"))[0] == 400
        assert (await call(app, "get", "/api/alerts?symbol=$$$"))[0] == 400
        assert (await call(app, "get", "/api/alerts?symbol=eth-usdt"))[1]["total"] == 0


async def test_rules_and_alerts_persist_in_redis_and_survive_its_outage(
    persistent_redis, clock: ManualClock
) -> None:
    url = f"redis://{persistent_redis.address}/0"
    async with running(clock, VIRTUOSO_REDIS_URL=url) as app:
        rule = await price_rule(app, level="warning")
        await fire(app, clock)
        _, before = await call(app, "get", "/api/alerts")
        assert before["total"] == 1
        persistent_redis.kill()
        other = {"kind": "change_above", "threshold": 50}
        status, error = await call(app, "post", "/api/alerts/rules", json=other, headers=AUTH)
        assert status == 503 and error["error"] == "alert_store_unavailable"
        alert_id = before["alerts"][0]["id"]
        assert (await call(app, "post", f"/api/alerts/{alert_id}/ack", headers=AUTH))[0] == 503
        for path in ("/api/dashboard/data", "/api/market/overview", "/api/alerts"):
            assert (await call(app, "get", path))[0] == 200, path  # reads are fine
        persistent_redis.restart()
    async with running(clock, VIRTUOSO_REDIS_URL=url) as app:  # a restart of the app too
        _, rules = await call(app, "get", "/api/alerts/rules")
        assert [r["id"] for r in rules["rules"]] == [rule["id"]]
        _, after = await call(app, "get", "/api/alerts")
        assert after["alerts"] == before["alerts"]  # every alert stored before is still there


async def test_the_alert_list_is_cached_and_invalidated_on_change(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        client = app.test_client()
        first = await client.get("/api/alerts")
        again = await client.get("/api/alerts")
        assert again.headers["X-Cache"] == "l1"
        await price_rule(app)
        await fire(app, clock)
        await asyncio.sleep(0)
        changed = await client.get("/api/alerts")
        assert changed.headers["ETag"] != first.headers["ETag"]
        assert orjson.loads(await changed.get_data())["total"] == 1


LOOPBACK_REFUSED = (
    "webhook_url: 127.0.0.1 is a loopback address; destinations must be public "
    "(VIRTUOSO_WEBHOOK_ALLOW lists internal ones)"
)


async def test_internal_webhook_destinations_are_refused_at_creation(
    tmp_path: Path, clock: ManualClock
) -> None:
    rule = {"kind": "price_below", "symbol": "ETHUSDT", "threshold": 1000}
    refused = [
        ("http://127.0.0.1:9090/-/quit", "loopback"),  # Prometheus' lifecycle API
        ("http://127.0.0.1:6379/", "loopback"),  # Redis
        ("http://127.0.0.1:11211/", "loopback"),  # Memcached
        ("http://169.254.169.254/latest/meta-data/iam", "link-local"),
        ("http://2130706433/", "(127.0.0.1) is a loopback"),
        ("http://0177.0.0.1/", "(127.0.0.1) is a loopback"),
        ("http://0x7f.1/", "(127.0.0.1) is a loopback"),
        ("http://127.1/", "(127.0.0.1) is a loopback"),
        ("http://[::1]/", "::1 is a loopback"),
        ("http://[::ffff:127.0.0.1]/", "IPv4-mapped form of 127.0.0.1"),
        ("http://[0:0:0:0:0:ffff:7f00:1]/", "IPv4-mapped form of 127.0.0.1"),
        ("http://localhost:8003/", "localhost is a loopback name"),
        ("http://LOCALHOST./", "localhost is a loopback name"),
        ("http://good.example@127.0.0.1/", "127.0.0.1 is a loopback"),
        ("http://10.0.0.5/", "private"),
        ("http://100.64.0.1/", "shared address space"),
    ]
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        for url, why in refused:
            body = {**rule, "webhook_url": url}
            status, error = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
            assert status == 400 and error["error"] == "webhook_refused", (url, error)
            assert error["message"].startswith("webhook_url: ") and why in error["message"]
        status, error = await call(
            app,
            "post",
            "/api/alerts/rules",
            json={**rule, "webhook_url": "http://127.0.0.1:9090/-/quit"},
            headers=AUTH,
        )
        assert error["message"] == LOOPBACK_REFUSED
        bad = {**rule, "webhook_url": "ftp://hooks.example.com/t0ken"}
        status, error = await call(app, "post", "/api/alerts/rules", json=bad, headers=AUTH)
        assert status == 400 and "t0ken" not in str(error)
        assert (await call(app, "get", "/api/alerts/rules"))[1]["total"] == 0  # nothing stored


async def test_the_allow_list_admits_an_internal_receiver_and_no_secret_leaves(
    tmp_path: Path, clock: ManualClock, caplog
) -> None:
    """A real receiver on 127.0.0.1 (allowed by VIRTUOSO_WEBHOOK_ALLOW) gets the alert
    through the outbox; it answers 500, so the delivery is pending a retry, shown with
    its reason and attempts, and logged. No response of the alert endpoints
    and no log line of the service carries the URL's userinfo, path or query."""
    posts: list[str] = []

    async def receive(request: web.Request) -> web.Response:
        posts.append(request.path_qs)
        return web.Response(status=500)

    receiver_app = web.Application()
    receiver_app.router.add_post("/{tail:.*}", receive)
    receiver = TestServer(receiver_app, host="127.0.0.1")
    await receiver.start_server()
    secrets = ("hook-user", "hunter2", "T0KEN-PATH", "s1gnature")
    url = f"http://hook-user:hunter2@127.0.0.1:{receiver.port}/T0KEN-PATH?sig=s1gnature"
    bodies: list[bytes] = []
    try:
        with caplog.at_level(logging.INFO):
            async with running(
                clock, VIRTUOSO_DATA_DIR=str(tmp_path), VIRTUOSO_WEBHOOK_ALLOW="127.0.0.1"
            ) as app:
                client = app.test_client()
                rule = await price_rule(app, webhook_url=url)
                assert rule["webhook_url"] == "http://127.0.0.1/…"
                await fire(app, clock)
                _, listed = await call(app, "get", "/api/alerts")
                alert_id = listed["alerts"][0]["id"]
                deliveries = f"/api/alerts/{alert_id}/deliveries"

                async def tried() -> bool:
                    status, body = await call(app, "get", deliveries)
                    return status == 200 and body["deliveries"][0]["attempts"] >= 1

                await eventually(tried)  # the outbox's worker sent it, the receiver said 500
                _, shown = await call(app, "get", deliveries)
                assert shown["deliveries"] == [
                    {
                        "channel_id": "webhook",
                        "channel_type": "webhook",
                        "status": "pending",  # retried later (the clock is the test's)
                        "attempts": 1,
                        # Apprise's words, after the masked destination
                        "reason": "json://127.0.0.1/…: Failed to send JSON POST notification: "
                        "Internal server error., error=500.",
                        "created_at_ms": shown["deliveries"][0]["created_at_ms"],
                        "next_attempt_at_ms": shown["deliveries"][0]["next_attempt_at_ms"],
                        "delivered_at_ms": None,
                    }
                ]
                status, unknown = await call(app, "get", "/api/alerts/nosuchalert/deliveries")
                assert status == 404 and unknown["error"] == "unknown_alert"
                for method, path, headers in [
                    ("get", deliveries, {}),
                    ("get", "/api/alerts/rules", {}),
                    ("get", "/api/alerts/rules?offset=0&limit=200", AUTH),
                    ("get", "/api/alerts", {}),
                    ("get", "/api/dashboard/mobile", {}),
                    ("post", f"/api/alerts/{alert_id}/ack", AUTH),
                ]:
                    response = await getattr(client, method)(path, headers=headers)
                    assert response.status_code == 200, path
                    bodies.append(await response.get_data())
                other = {"kind": "confluence_long", "webhook_url": url.replace(".1:", ".2:")}
                status, error = await call(
                    app, "post", "/api/alerts/rules", json=other, headers=AUTH
                )
                assert status == 400 and "127.0.0.2 is a loopback" in error["message"]
                bodies.append(orjson.dumps(error))
    finally:
        await receiver.close()
    assert posts and posts[0] == "/T0KEN-PATH?sig=s1gnature"  # delivered with the full URL
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("app.")]
    assert any("webhook delivery to 127.0.0.1" in line for line in ours)
    shown = b"".join(bodies).decode() + "\n".join(ours)
    for secret in secrets:
        assert secret not in shown, secret


async def test_rules_are_capped_and_listed_by_page(tmp_path: Path, clock: ManualClock) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        alerts = state_of(app).alerts
        assert alerts.max_rules == 200  # the default
        alerts.max_rules = 3
        created = []
        for n in range(3):
            body = {"kind": "change_above", "threshold": 10 + n}
            status, answer = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
            assert status == 201
            created.append(answer["rule"]["id"])
        extra = {"kind": "change_above", "threshold": 99}
        status, error = await call(app, "post", "/api/alerts/rules", json=extra, headers=AUTH)
        assert status == 409 and error["error"] == "too_many_rules"
        assert error["max_rules"] == 3 and "at most 3" in error["message"]
        _, page = await call(app, "get", "/api/alerts/rules?offset=1&limit=1")
        assert [r["id"] for r in page["rules"]] == created[1:2]
        assert (page["total"], page["offset"], page["limit"]) == (3, 1, 1)
        _, everything = await call(app, "get", "/api/alerts/rules")
        assert [r["id"] for r in everything["rules"]] == created and everything["limit"] == 50
        assert (await call(app, "get", "/api/alerts/rules?offset=9"))[1]["rules"] == []
        for bad in ("limit=0", "limit=201", "offset=-1", "limit=x", "sort=id"):
            assert (await call(app, "get", f"/api/alerts/rules?{bad}"))[0] == 400, bad
        assert (await call(app, "delete", f"/api/alerts/rules/{created[0]}", headers=AUTH))[
            0
        ] == 200
        status, _ = await call(app, "post", "/api/alerts/rules", json=extra, headers=AUTH)
        assert status == 201  # room again


async def test_rule_writes_check_the_token_before_the_body(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        client = app.test_client()
        for body in ({"kind": "moon"}, {"webhook_url": "http://127.0.0.1/"}, {}):
            assert (await call(app, "post", "/api/alerts/rules", json=body))[0] == 401
        response = await client.post(
            "/api/alerts/rules", data=b"{not json", headers={"Content-Type": "application/json"}
        )
        assert response.status_code == 401


async def test_snapshots_that_change_nothing_write_nothing(
    tmp_path: Path, clock: ManualClock, monkeypatch
) -> None:
    writes = count_file_writes(monkeypatch)
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        await price_rule(app)
        await fire(app, clock)  # fires: the alert and the engine's state are written
        written = len(writes)
        for _ in range(3):  # the price stays above: nothing changes, nothing is written
            await fire(app, clock)
        assert len(writes) == written
        assert (await call(app, "get", "/api/alerts"))[1]["total"] == 1
