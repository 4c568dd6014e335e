"""Alert lifecycle end to end on the running app: rule → trigger on a snapshot →
stored → listed (cached) → acknowledged → resolved; cooldown; persistence across a
restart with Redis and without; Redis down: writes 503, nothing stored is lost."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
from quart.typing import TestAppProtocol as QuartTestApp

from app.web.app import create_app
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings, state_of
from tests.markets import CountingMarket

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


async def price_rule(app: QuartTestApp, level: str = "critical") -> dict:
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
