"""Derivatives end to end on the exchange's data: the fake Bybit's perpetuals read
through real ccxt, served by ``GET /api/market/derivatives``, scored into the
confluence's sentiment component, and firing a funding alert — while a pair without a
perpetual stays unavailable with its reason, never invented."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from tests.conftest import RATE_LIMITS_OFF, eventually, exchange_settings
from tests.integration.test_alerts import AUTH, TOKEN, call
from tools.fake_bybit import FakeBybit

pytestmark = pytest.mark.integration

SYMBOLS = "BTCUSDT,ETHUSDT,ETHBTC"
BOUND = 30.0  # seconds: the most any wait may take on a busy machine


@pytest.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS.split(","), inactive_symbols=()) as exchange:
        # crowded longs on BTC: funding 0.3 % per 8 h, 75 % of accounts long, open
        # interest up 10 % in the hour; ETH neutral
        exchange.derivatives.set_funding("BTCUSDT", 0.003)
        exchange.derivatives.set_long_short("BTCUSDT", 0.75)
        exchange.derivatives.set_open_interest("BTCUSDT", 11_000.0, ago_1h=10_000.0)
        exchange.derivatives.set_funding("ETHUSDT", 0.0001)
        exchange.derivatives.set_long_short("ETHUSDT", 0.5)
        yield exchange


@pytest.fixture
async def app(fake: FakeBybit) -> AsyncIterator[QuartTestApp]:
    settings = exchange_settings(
        fake.base_url,
        SYMBOLS,
        VIRTUOSO_REFRESH_SECONDS="1",
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
    )
    made = create_app(settings)
    async with made.test_app() as test_app:
        await eventually(lambda: made.extensions["virtuoso"].warmed, BOUND)
        yield test_app


async def derivatives(app: QuartTestApp) -> dict:
    status, body = await call(app, "get", "/api/market/derivatives")
    assert status == 200, body
    return body


async def test_the_exchange_s_perpetuals_are_served_and_a_spot_only_pair_is_named(
    app: QuartTestApp, fake: FakeBybit
) -> None:
    async def btc_read() -> bool:
        return any(r["symbol"] == "BTCUSDT" for r in (await derivatives(app))["derivatives"])

    await eventually(btc_read, BOUND)
    body = await derivatives(app)
    rows = {row["symbol"]: row for row in body["derivatives"]}
    btc = rows["BTCUSDT"]
    assert btc["contract"] == "BTC/USDT:USDT"
    assert btc["funding_rate"] == pytest.approx(0.003)
    assert btc["next_funding_time"] == fake.derivatives.next_funding_time("BTCUSDT")
    assert btc["long_short_ratio"] == pytest.approx(3.0)  # 75 % long ÷ 25 % short
    assert btc["open_interest"] == pytest.approx(11_000.0)
    assert btc["open_interest_change_pct_1h"] == pytest.approx(10.0)
    assert rows["ETHUSDT"]["funding_rate"] == pytest.approx(0.0001)
    unavailable = {u["symbol"]: u["reason"] for u in body["unavailable"]}
    assert set(unavailable) == {"ETHBTC"} and "perpetual" in unavailable["ETHBTC"]
    assert body["stale"] is False and body["exchange"] == "bybit"


async def test_crowded_longs_score_a_bearish_sentiment_and_eth_a_neutral_one(
    app: QuartTestApp,
) -> None:
    async def scored(symbol: str) -> dict:
        status, body = await call(app, "get", f"/api/confluence/{symbol}")
        assert status == 200, body
        return body["components"]

    async def btc_scored() -> bool:
        return (await scored("BTCUSDT"))["sentiment"]["score"] is not None

    await eventually(btc_scored, BOUND)
    btc = await scored("BTCUSDT")
    assert btc["sentiment"]["score"] < 30  # contrarian: crowded longs are bearish
    assert btc["sentiment"]["sub_scores"]["funding"] < 10
    assert btc["sentiment"]["sub_scores"]["long_short"] < 30
    assert btc["orderflow"]["sub_scores"]["open_interest"] is not None
    eth = await scored("ETHUSDT")
    assert eth["sentiment"]["sub_scores"]["funding"] == pytest.approx(50, abs=0.5)
    assert eth["sentiment"]["sub_scores"]["long_short"] == pytest.approx(50, abs=0.5)
    ethbtc = await scored("ETHBTC")
    assert ethbtc["sentiment"]["score"] is None
    assert "perpetual" in ethbtc["sentiment"]["reason"]


async def test_a_funding_rule_fires_on_the_exchange_s_rate(app: QuartTestApp) -> None:
    rule = {"kind": "funding_above", "threshold": 0.001, "level": "critical"}
    status, body = await call(app, "post", "/api/alerts/rules", rule, AUTH)
    assert status == 201, body
    created = body["rule"]

    async def fired() -> list[dict]:
        _, body = await call(app, "get", "/api/alerts")
        return [a for a in body["alerts"] if a["rule_id"] == created["id"]]

    await eventually(fired, BOUND)
    alerts = await fired()
    assert [a["symbol"] for a in alerts] == ["BTCUSDT"]  # ETH at 0.01 % does not
    assert "0.3000 %" in alerts[0]["message"]
