"""The whole service on a real exchange client: ccxt against the loopback fake Bybit."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.web.listeners import LISTENER_KEY, MONITORING
from tests.conftest import (
    ManualClock,
    eventually,
    exchange_settings,
    started_app,
    state_of,
)
from tools.fake_bybit import INSTRUMENTS_PATH, TICKERS_PATH, FakeBybit

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT,DOGEUSDT,NEWUSDT"  # NEWUSDT is not trading yet


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


def bybit_settings(fake: FakeBybit, **extra: str):
    return exchange_settings(fake.base_url, SYMBOLS, **extra)


async def get(test_app: QuartTestApp, path: str) -> tuple[int, dict, dict]:
    response = await test_app.test_client().get(path)
    return response.status_code, orjson.loads(await response.get_data()), response.headers


@pytest_asyncio.fixture
async def bybit_app(fake: FakeBybit, clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    async for test_app in started_app(bybit_settings(fake), None, clock):
        yield test_app


async def test_dashboards_show_the_exchange_data(bybit_app: QuartTestApp, fake: FakeBybit) -> None:
    status, desktop, _ = await get(bybit_app, "/api/dashboard/data")
    assert status == 200
    assert desktop["source"] == "ccxt" and desktop["exchange"] == "bybit"
    prices = {row["symbol"]: row["price"] for row in desktop["symbols"]}
    assert set(prices) == {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "DOGEUSDT"}
    for symbol, price in prices.items():
        assert price == float(fake.tickers[symbol]["lastPrice"])
    spot = [r for r in fake.requests if r.path == TICKERS_PATH and r.query["category"] == "spot"]
    assert len(spot) == 1  # one batch call for every symbol (the linear one: derivatives)


async def test_unlisted_symbols_are_left_out_and_reported(bybit_app: QuartTestApp) -> None:
    _, health, _ = await get(bybit_app, "/health")
    assert health["pipeline"]["unlisted_symbols"] == ["NEWUSDT"]
    status, error, _ = await get(bybit_app, "/api/confluence/NEWUSDT")
    assert status == 404 and "NEWUSDT" not in error["valid"]
    status, confluence, _ = await get(bybit_app, "/api/confluence/SOLUSDT?timeframe=4h")
    assert status == 200 and 0 <= confluence["score"] <= 100


async def test_unreachable_exchange_at_start_up(fake: FakeBybit, clock: ManualClock) -> None:
    fake.http_error_next(503, times=None, path=INSTRUMENTS_PATH)
    app = create_app(bybit_settings(fake), clock=clock)
    async with app.test_app() as test_app:
        pipeline = state_of(test_app).pipeline
        await eventually(lambda: pipeline.status.last_error is not None)
        status, error, headers = await get(test_app, "/api/dashboard/data")
        assert status == 503 and error["error"] == "data_unavailable"
        assert "bybit" in error["message"] and headers["Retry-After"] == "10"
        status, ready, _ = await get(test_app, "/health/ready")
        assert status == 503 and ready["ready"] is False
        assert (await get(test_app, "/health"))[0] == 200  # alive all the same
        fake.clear_faults()
        assert await pipeline.wait_ready(15), "no recovery after the exchange came back"
        assert (await get(test_app, "/api/dashboard/data"))[0] == 200


async def test_exchange_outage_serves_the_last_data_marked_stale(
    bybit_app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    pipeline = state_of(bybit_app).pipeline
    _, before, _ = await get(bybit_app, "/api/market/overview")
    fake.http_error_next(503, times=None, path=TICKERS_PATH)
    clock.advance(90)
    with pytest.raises(Exception, match="bybit fetch_tickers failed"):
        await pipeline.refresh()
    status, after, _ = await get(bybit_app, "/api/market/overview")
    assert status == 200
    assert after["stale"] is True and after["overview"] == before["overview"]
    status, ready, _ = await get(bybit_app, "/health/ready")
    assert status == 200 and ready["status"] == "degraded"
    assert ready["reasons"][0].startswith("market data is stale: 90s old")
    assert "fetch_tickers" not in str(ready)  # the error's text is a detail: not public
    monitoring = {"extensions": {LISTENER_KEY: MONITORING}}
    response = await bybit_app.test_client().get("/health/ready", scope_base=monitoring)
    detailed = orjson.loads(await response.get_data())
    assert "bybit fetch_tickers failed" in detailed["reasons"][0]
