"""Compound rules with a message template on the running app (the simulated market): a
rule of several conditions on timeframes is created (201) and listed with its
conditions, join and description, bad ones are refused with the reason (nothing
stored), and on the next snapshot the rule fires once with the rendered message."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from quart.typing import TestAppProtocol as QuartTestApp

from app.market.sources.simulated import SimulatedMarket
from tests.conftest import RATE_LIMITS_OFF, ManualClock, make_settings, started_app, state_of
from tests.integration.test_alerts import AUTH, TOKEN, call

TEMPLATE = (
    "{{ symbol }} {{ level }}: {% for c in values.conditions %}{{ c.name }}"
    "{{ ' ok' if c.met else ' no' }}; {% endfor %}spike {{ values.volume_spike_5m > 0 }}"
)


@contextlib.asynccontextmanager
async def running(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT",
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
    )
    async for app in started_app(settings, SimulatedMarket(seed=7, clock=clock), clock):
        yield app


async def btc_price(app: QuartTestApp) -> float:
    _, desktop = await call(app, "get", "/api/dashboard/data")
    return next(row["price"] for row in desktop["symbols"] if row["symbol"] == "BTCUSDT")


def rule_body(price: float) -> dict:
    return {
        "kind": "conditions",
        "symbol": "BTCUSDT",
        "level": "critical",
        "join": "all",
        "conditions": [
            {"metric": "price", "comparison": "above", "value": price / 2},
            {"metric": "confluence", "comparison": "above", "value": 0, "timeframe": "5m"},
            {"metric": "volume_spike", "comparison": "above", "value": 0, "timeframe": "5m"},
            {"metric": "signal", "comparison": "is", "value": "short", "timeframe": "1m"},
        ],
        "template": TEMPLATE,
    }


REFUSED = [
    ({"template": "{{ values.funding_rate }}"}, "template: UndefinedError"),
    ({"template": "{{ ''.__class__.__mro__ }}"}, "template: sandbox violation"),
    ({"template": "{% if %}"}, "template: TemplateSyntaxError"),
    ({"template": "x" * 1001}, "template"),
    ({"join": "most"}, "join"),
]


async def test_a_compound_rule_fires_once_with_its_template(clock: ManualClock) -> None:
    async with running(clock) as app:
        body = rule_body(await btc_price(app))
        body["join"] = "any"  # the 1m signal may be anything: "any" fires on the others
        for change, words in REFUSED:
            status, error = await call(
                app, "post", "/api/alerts/rules", json={**body, **change}, headers=AUTH
            )
            assert status == 400 and words in error["message"], (change, error)
        bad_timeframe = {"metric": "price", "comparison": "above", "value": 1, "timeframe": "5m"}
        status, error = await call(
            app,
            "post",
            "/api/alerts/rules",
            json={**body, "conditions": [*body["conditions"], bad_timeframe]},
            headers=AUTH,
        )
        assert status == 400 and "conditions.4" in error["message"], error
        assert "price has no timeframes" in error["message"]
        assert (await call(app, "get", "/api/alerts/rules"))[1]["total"] == 0

        status, created = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
        assert status == 201, created
        _, listed = await call(app, "get", "/api/alerts/rules")
        [shown] = listed["rules"]
        assert shown["join"] == "any" and len(shown["conditions"]) == 4
        assert shown["template"] == TEMPLATE
        assert shown["description"].startswith("any of: price at or above")
        assert "volume spike (5m) at or above 0; signal (1m) is short" in shown["description"]

        pipeline = state_of(app).pipeline
        for _ in range(3):  # the conditions hold on: one alert
            clock.advance(10)
            await pipeline.refresh(force=True)
        _, alerts = await call(app, "get", "/api/alerts")
        [alert] = alerts["alerts"]
        assert (alert["rule_id"], alert["kind"], alert["level"]) == (
            created["rule"]["id"],
            "conditions",
            "critical",
        )
        values = alert["values"]
        assert values["volume_spike_5m"] > 0 and values["confluence_5m"] >= 0
        signal = "ok" if values["signal_1m"] == "short" else "no"
        assert alert["message"] == (
            "BTCUSDT critical: price ok; confluence_5m ok; volume_spike_5m ok; "
            f"signal_1m {signal}; spike True"
        )
