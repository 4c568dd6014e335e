"""Price alerts end to end on pinned prices: the real ccxt against the loopback fake
Bybit, rules created through the API, alerts read back from the API.

Each refresh is driven by the test (``pipeline.refresh`` after the clock moved a
minute, so the 1m candles are fetched again)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from tests.conftest import ManualClock, exchange_settings, started_app, state_of
from tools.fake_bybit import FakeBybit

TOKEN = "pinned-prices-test-token-7f3a9c"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SYMBOLS = ("BTCUSDT", "ETHUSDT", "XRPUSDT")


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit(symbols=SYMBOLS, inactive_symbols=()) as exchange:
        an_hour_ago = exchange.now_ms() - 3_600_000  # flat candles for the last hour
        for symbol, price in (("BTCUSDT", 60_000.0), ("ETHUSDT", 2_000.0), ("XRPUSDT", 1.0)):
            exchange.pin(symbol, price, since_ms=an_hour_ago)
        yield exchange


@pytest_asyncio.fixture
async def app(fake: FakeBybit, clock: ManualClock, tmp_path: Path) -> AsyncIterator[QuartTestApp]:
    settings = exchange_settings(
        fake.base_url, ",".join(SYMBOLS), VIRTUOSO_API_TOKEN=TOKEN, VIRTUOSO_DATA_DIR=str(tmp_path)
    )
    async for test_app in started_app(settings, None, clock):
        yield test_app


async def create_rule(app: QuartTestApp, **rule: object) -> dict:
    response = await app.test_client().post("/api/alerts/rules", json=rule, headers=AUTH)
    assert response.status_code == 201, await response.get_data()
    return orjson.loads(await response.get_data())["rule"]


async def alerts_of(app: QuartTestApp, rule_id: str) -> list[dict]:
    response = await app.test_client().get("/api/alerts?limit=200")
    assert response.status_code == 200
    body = orjson.loads(await response.get_data())
    return [a for a in body["alerts"] if a["rule_id"] == rule_id]


async def refresh(app: QuartTestApp, clock: ManualClock, seconds: float = 61.0) -> None:
    """A minute later, a new snapshot (the 1m candles are due again) and its evaluation."""
    clock.advance(seconds)
    await state_of(app).pipeline.refresh(force=True)


async def test_a_price_exactly_at_the_threshold_fires_both_ways(
    app: QuartTestApp, clock: ManualClock
) -> None:
    above = await create_rule(app, kind="price_above", symbol="ETHUSDT", threshold=2000)
    below = await create_rule(app, kind="price_below", symbol="ETHUSDT", threshold=2000)
    near = await create_rule(app, kind="price_above", symbol="ETHUSDT", threshold=2000.01)
    await refresh(app, clock)
    [up] = await alerts_of(app, above["id"])
    [down] = await alerts_of(app, below["id"])
    assert up["message"] == "ETHUSDT at or above 2000: 2000"
    assert down["message"] == "ETHUSDT at or below 2000: 2000"
    assert await alerts_of(app, near["id"]) == []  # one tick short: not met


async def test_a_spike_between_two_snapshots_fires_from_the_1m_candle(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    rule = await create_rule(app, kind="price_above", symbol="BTCUSDT", threshold=61_000)
    dip = await create_rule(app, kind="price_below", symbol="BTCUSDT", threshold=59_000)
    await refresh(app, clock)
    assert await alerts_of(app, rule["id"]) == []
    fake.pin("BTCUSDT", 60_000.0, high=61_500.0, low=58_800.0)  # up and back, then down
    await refresh(app, clock)
    [spike] = await alerts_of(app, rule["id"])
    assert spike["values"]["price"] == 61_500.0
    assert spike["values"]["observed"] == "1m high"
    assert spike["values"]["last_price"] == 60_000.0
    assert spike["message"] == "BTCUSDT at or above 61000: 61500 (1m high; last 60000)"
    [fall] = await alerts_of(app, dip["id"])
    assert fall["values"]["price"] == 58_800.0 and fall["values"]["observed"] == "1m low"
    await refresh(app, clock)  # nothing new happened: nothing new fires
    assert len(await alerts_of(app, rule["id"])) == 1


async def test_a_depeg_is_reported_after_hovering_at_the_peg(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    rule = await create_rule(
        app, kind="price_below", symbol="XRPUSDT", threshold=1.0, cooldown_seconds=60
    )
    assert rule["hysteresis"] == 0.5 and rule["rearm_at"] == 1.005
    assert rule["description"].startswith("price at or below 1; re-arms at or above 1.005")
    fake.pin("XRPUSDT", 0.999)
    await refresh(app, clock)
    assert len(await alerts_of(app, rule["id"])) == 1
    for price in (1.003, 0.998, 1.004, 0.997):  # hovering, never back above 1.005
        fake.pin("XRPUSDT", price)
        await refresh(app, clock)
    assert len(await alerts_of(app, rule["id"])) == 1
    fake.pin("XRPUSDT", 0.95)
    await refresh(app, clock)
    depeg, first = await alerts_of(app, rule["id"])
    assert depeg["values"]["price"] == 0.95 and first["values"]["price"] == 0.999


async def test_a_rule_with_its_own_hysteresis_rearms_at_its_level(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    rule = await create_rule(
        app,
        kind="price_below",
        symbol="XRPUSDT",
        threshold=1.0,
        hysteresis=0.1,
        cooldown_seconds=0,
    )
    assert rule["rearm_at"] == 1.001
    for price in (0.999, 1.001, 0.9995):  # fires, re-arms at 1.001, fires again
        fake.pin("XRPUSDT", price)
        await refresh(app, clock)
    assert [a["values"]["price"] for a in await alerts_of(app, rule["id"])] == [0.9995, 0.999]


async def test_a_spike_fires_once_when_another_replica_evaluates_next(
    fake: FakeBybit, clock: ManualClock, tmp_path: Path, redis
) -> None:
    """The replicas share where the candles were read last (beside the engine's state):
    a replica evaluating after another walks only what is new since then."""
    shared = {"VIRTUOSO_API_TOKEN": TOKEN, "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0"}
    async with contextlib.AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                contextlib.asynccontextmanager(started_app)(
                    exchange_settings(
                        fake.base_url,
                        ",".join(SYMBOLS),
                        **shared,
                        VIRTUOSO_REPLICA_ID=name,
                        VIRTUOSO_DATA_DIR=str(tmp_path / name),
                    ),
                    None,
                    clock,
                )
            )
            for name in ("one", "two")
        ]
        rule = await create_rule(
            one, kind="price_above", symbol="XRPUSDT", threshold=1.2, cooldown_seconds=0
        )
        await refresh(one, clock)  # the rule's first look: the last price, 1.0
        fake.pin("XRPUSDT", 1.0, high=1.3)  # up to 1.3 and back within the minute
        await refresh(two, clock)
        [spike] = await alerts_of(two, rule["id"])
        assert spike["values"]["observed"] == "1m high"
        await refresh(one, clock)  # re-armed at 1.0; the 1.3 is not new for replica one
        await refresh(two, clock)
        assert len(await alerts_of(one, rule["id"])) == 1
