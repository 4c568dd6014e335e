"""Alert rules on derivatives and on confluence components, on the running app: each
new kind is created (201) or refused with the reason (400, as every invalid rule), and
a snapshot whose derivatives carry a funding rate beyond a rule's threshold fires its
alert — for the symbol with a perpetual only."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.models.derivatives import Derivatives, DerivativesRead
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings, state_of
from tests.integration.test_alerts import AUTH, TOKEN, call
from tests.support.markets import CountingMarket

NO_PERPETUAL = "no linear perpetual listed for this pair"


class PerpetualMarket(CountingMarket):
    """The simulated market with a perpetual for the symbols in ``funding`` (their
    funding rate, a fraction per interval, settable by the test) and none for others."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.funding: dict[str, float] = {"BTCUSDT": 0.0002}

    async def fetch_derivatives(self, symbols: Sequence[str]) -> DerivativesRead:
        now_ms = int(self.clock() * 1000)
        by_symbol = {
            s: Derivatives(
                symbol=s,
                contract=f"{s.removesuffix('USDT')}/USDT:USDT",
                timestamp_ms=now_ms,
                funding_rate=self.funding[s],
                long_short_ratio=1.2,
            )
            for s in symbols
            if s in self.funding
        }
        unavailable = {s: NO_PERPETUAL for s in symbols if s not in self.funding}
        return DerivativesRead(by_symbol=by_symbol, unavailable=unavailable)


@contextlib.asynccontextmanager
async def running(
    clock: ManualClock, data_dir: Path
) -> AsyncIterator[tuple[QuartTestApp, PerpetualMarket]]:
    settings = make_settings(
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT",
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
        VIRTUOSO_DATA_DIR=str(data_dir),
    )
    market = PerpetualMarket(clock)
    app = create_app(settings, market, clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app, market


CREATED = [
    ({"kind": "funding_above", "threshold": 0.0005}, "funding rate at or above 0.0005 (0.05 %)"),
    ({"kind": "funding_below", "threshold": -0.0005, "symbol": "eth/usdt"}, "at or below -0.0005"),
    ({"kind": "open_interest_change_above", "threshold": 5}, "1h open interest change"),
    ({"kind": "open_interest_change_below", "threshold": -5, "hysteresis": 1}, "1 percentage"),
    ({"kind": "long_short_above", "threshold": 2.5}, "long/short ratio at or above 2.5"),
    ({"kind": "long_short_below", "threshold": 0.4}, "(accounts long ÷ short)"),
    (
        {"kind": "component_above", "threshold": 80, "component": "orderflow"},
        "orderflow component at or above 80 (all timeframes combined)",
    ),
    (
        {"kind": "component_below", "threshold": 30, "component": "sentiment"},
        "sentiment component at or below 30",
    ),
]
REFUSED = [
    ({"kind": "funding_above", "threshold": 0.5}, "between -0.05 and 0.05"),
    ({"kind": "funding_below"}, "threshold is required for funding_below"),
    ({"kind": "funding_above", "threshold": 0.001, "hysteresis": 0.02}, "at most 0.01"),
    ({"kind": "open_interest_change_below", "threshold": -120}, "between -100 and"),
    ({"kind": "long_short_above", "threshold": 0}, "(long ÷ short), above 0, at most 1,000"),
    ({"kind": "long_short_below", "threshold": 1e6}, "(long ÷ short), above 0, at most 1,000"),
    ({"kind": "long_short_below", "threshold": "1.5"}, "threshold"),
    ({"kind": "component_above", "threshold": 80}, "component is required for component_above"),
    ({"kind": "component_below", "threshold": 130, "component": "volume"}, "between 0 and 100"),
    ({"kind": "component_above", "threshold": 80, "component": "vibes"}, "unknown component"),
    ({"kind": "funding_above", "threshold": 0.001, "component": "volume"}, "not allowed for"),
]


async def test_each_new_kind_is_created_or_refused_with_the_reason(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, tmp_path) as (app, _):
        for body, words in CREATED:
            status, answer = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
            assert status == 201, (body, answer)
            assert words in answer["rule"]["description"], answer
        for body, words in REFUSED:
            status, error = await call(app, "post", "/api/alerts/rules", json=body, headers=AUTH)
            assert status == 400 and "Value error" not in error["message"], (body, error)
            assert words in error["message"], (body, error)
        _, listed = await call(app, "get", "/api/alerts/rules")
        assert [r["kind"] for r in listed["rules"]] == [body["kind"] for body, _ in CREATED]
        component_rules = [r for r in listed["rules"] if r["kind"].startswith("component_")]
        assert [r["component"] for r in component_rules] == ["orderflow", "sentiment"]
        _, openapi = await call(app, "get", "/openapi.json")
        assert "funding_above" in str(openapi) and "component" in str(openapi)


async def test_funding_beyond_a_threshold_fires_for_the_symbol_with_a_perpetual(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, tmp_path) as (app, market):
        rule = {"kind": "funding_above", "threshold": 0.0005, "level": "critical"}
        status, created = await call(app, "post", "/api/alerts/rules", json=rule, headers=AUTH)
        assert status == 201  # every symbol: ETHUSDT has no perpetual, so no funding
        pipeline = state_of(app).pipeline
        clock.advance(10)
        await pipeline.refresh(force=True)
        assert (await call(app, "get", "/api/alerts"))[1]["total"] == 0  # 0.02 %: below
        assert pipeline.latest.derivatives.unavailable == {"ETHUSDT": NO_PERPETUAL}

        market.funding["BTCUSDT"] = 0.000612
        clock.advance(61)  # the derivatives' cadence (a minute): read anew, beside it
        await pipeline.refresh(force=True)
        assert pipeline.collector is not None
        await pipeline.collector.derivatives.settled()
        await pipeline.refresh(force=True)  # the next snapshot takes the new read
        _, listed = await call(app, "get", "/api/alerts")
        [alert] = listed["alerts"]
        assert (alert["rule_id"], alert["symbol"], alert["kind"]) == (
            created["rule"]["id"],
            "BTCUSDT",
            "funding_above",
        )
        assert alert["message"] == "BTCUSDT funding 0.0612 % at or above 0.0500 % per interval"
        assert alert["values"]["funding_rate"] == 0.000612
        _, mobile = await call(app, "get", "/api/dashboard/mobile")
        assert [a["id"] for a in mobile["critical_alerts"]] == [alert["id"]]

        clock.advance(61)  # still beyond, not deeper by the hysteresis: no second alert
        await pipeline.refresh(force=True)
        assert (await call(app, "get", "/api/alerts"))[1]["total"] == 1
