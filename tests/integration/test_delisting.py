"""A pair the exchange stops listing or serving, kind by kind, through the real ccxt and
the loopback fake Bybit (and the simulated market): it is named — on its rows and
cards, in the top-level ``delisted`` list, in live updates, in ``/health`` — never left
looking alive, never a 500; and it comes back unmarked when the exchange serves it again.
A saved watchlist holding such a pair never locks the user out."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
import pytest_asyncio
import websockets
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.errors import SymbolNotListed
from app.market.listing import (
    DELISTED,
    NOT_LISTED,
    UNSERVED,
    ListingTracker,
    RefreshEvidence,
)
from app.market.sources.simulated import SimulatedMarket
from app.services.alerts.evaluation import market_facts
from tests.conftest import (
    ManualClock,
    eventually,
    exchange_settings,
    make_settings,
    started_app,
    state_of,
)
from tests.support.streams import close_without_tls_linger, loopback_source
from tests.support.ws_server import serve_app
from tools.fake_bybit import INSTRUMENTS_PATH, FakeBybit

SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
SYMBOL_INVALID = "params error: symbol invalid"


def bybit_settings(fake: FakeBybit, symbols: str = SYMBOLS, **extra: str):
    return exchange_settings(fake.base_url, symbols, **extra)


@pytest.fixture(autouse=True)
def _closing_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    close_without_tls_linger(monkeypatch)


@pytest_asyncio.fixture
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


@pytest_asyncio.fixture
async def app(fake: FakeBybit, clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    async for test_app in started_app(bybit_settings(fake), None, clock):
        yield test_app


async def get(test_app: QuartTestApp, path: str) -> tuple[int, dict]:
    response = await test_app.test_client().get(path)
    return response.status_code, orjson.loads(await response.get_data())


async def refresh(test_app: QuartTestApp, clock: ManualClock, seconds: float = 61) -> None:
    """One refresh, ``seconds`` later (past the markets' recheck and the views' TTLs)."""
    clock.advance(seconds)
    await state_of(test_app).pipeline.refresh(force=True)


async def rows_of(test_app: QuartTestApp) -> dict[str, dict]:
    _, desktop = await get(test_app, "/api/dashboard/data")
    return {row["symbol"]: row for row in desktop["symbols"]}


async def listing_of(test_app: QuartTestApp, symbol: str) -> dict | None:
    return (await rows_of(test_app))[symbol]["listing"]


# ----- delisted: gone from instruments-info, the tickers batch, klines and the book -----


async def test_a_delisted_pair_is_named_everywhere_it_is_shown(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    assert await listing_of(app, "SOLUSDT") is None
    last_price = (await rows_of(app))["SOLUSDT"]["price"]
    loads = fake.count(INSTRUMENTS_PATH)
    fake.delist("SOLUSDT")
    await refresh(app, clock)
    # ccxt's markets loaded again: spot, and the linear perpetuals (trading, pre-launch)
    assert fake.count(INSTRUMENTS_PATH) == loads + 3
    status, desktop = await get(app, "/api/dashboard/data")
    assert status == 200
    sol = next(row for row in desktop["symbols"] if row["symbol"] == "SOLUSDT")
    assert sol["price"] is None and sol["confluence"] is None and sol["beta"] is None
    assert sol["listing"]["status"] == "delisted"
    assert sol["listing"]["last_price"] == last_price
    assert "no longer lists" in sol["listing"]["reason"]
    assert [n["symbol"] for n in desktop["delisted"]] == ["SOLUSDT"]
    assert desktop["delisted"][0]["since"] == sol["listing"]["since"]
    assert "SOLUSDT" not in {s["symbol"] for s in desktop["signals"]}
    assert "SOLUSDT" not in {m["symbol"] for side in ("gainers", "losers")
                             for m in desktop["movers"][side]}  # fmt: skip
    assert (await rows_of(app))["BTCUSDT"]["listing"] is None
    _, mobile = await get(app, "/api/dashboard/mobile")
    card = next(c for c in mobile["confluence_scores"] if c["symbol"] == "SOLUSDT")
    assert card["listing"]["status"] == "delisted" and card["price"] is None
    assert mobile["delisted"] == desktop["delisted"]
    pipeline = state_of(app).pipeline
    facts = market_facts(pipeline.latest, pipeline.latest_analysis)
    assert "SOLUSDT" not in {fact.symbol for fact in facts}  # no price alert on it


async def test_a_delisted_pair_never_makes_a_server_error(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    fake.delist("SOLUSDT")
    for _ in range(2):
        await refresh(app, clock)
    status, chart = await get(app, "/api/market/candles/SOLUSDT?timeframe=1m")
    assert status == 200 and chart["stale"] is True and chart["candles"]
    assert chart["listing"]["status"] == "delisted"
    status, confluence = await get(app, "/api/confluence/SOLUSDT?timeframe=5m")
    assert status == 404 and confluence["error"] == "not_listed"
    assert confluence["listing"]["symbol"] == "SOLUSDT"
    for path in (
        "/api/dashboard/overview",
        "/api/dashboard/signals",
        "/api/market/overview",
        "/api/market/movers",
        "/api/bitcoin-beta",
        "/api/symbols",
        "/api/confluence/sol-usdt",
        "/api/market/candles/SOLUSDT?timeframe=4h",
    ):
        status, body = await get(app, path)
        assert status < 500, (path, body)
    assert (await get(app, "/api/confluence/BTCUSDT"))[0] == 200


async def test_health_names_the_pair_without_the_exchange_text(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    _, health = await get(app, "/health")
    assert health["status"] == "ok" and health["reasons"] == []
    fake.delist("SOLUSDT")
    await refresh(app, clock)
    status, health = await get(app, "/health")
    assert status == 200 and health["status"] == "degraded"
    assert len(health["reasons"]) == 1 and health["reasons"][0].startswith("SOLUSDT no longer")
    assert health["pipeline"]["unlisted_symbols"] == ["SOLUSDT"]
    assert [n["symbol"] for n in health["pipeline"]["delisted"]] == ["SOLUSDT"]
    status, ready = await get(app, "/health/ready")
    assert status == 200 and ready["ready"] is True and ready["status"] == "degraded"
    assert any(reason.startswith("SOLUSDT no longer listed") for reason in ready["reasons"])
    for text in (json.dumps(health), json.dumps(ready)):
        assert fake.base_url not in text and "retCode" not in text and "127.0.0.1" not in text


async def test_a_relisted_pair_loses_its_mark(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    fake.delist("SOLUSDT")
    await refresh(app, clock)
    assert (await listing_of(app, "SOLUSDT"))["status"] == "delisted"
    fake.relist("SOLUSDT")
    await refresh(app, clock)  # a minute later: the markets are checked again
    sol = (await rows_of(app))["SOLUSDT"]
    assert sol["listing"] is None and sol["price"] == float(fake.tickers["SOLUSDT"]["lastPrice"])
    assert sol["confluence"] is not None
    _, health = await get(app, "/health")
    assert health["status"] == "ok" and health["pipeline"]["delisted"] == []
    _, desktop = await get(app, "/api/dashboard/data")
    assert desktop["delisted"] == []
    assert (await get(app, "/api/confluence/SOLUSDT"))[0] == 200


# ----- no longer served: still listed, but no data comes ------------------------------


def test_missing_tickers_are_a_gap_until_the_third_refresh() -> None:
    """The rule on its own (the app's loop refreshes on its own, so it is counted here):
    one or two refreshes without a ticker are a gap; the third marks the pair unserved;
    a ticker clears it; no ticker and a refusal as unknown mark it at once; out of the
    markets it is delisted, or not listed when it never was."""
    tracker = ListingTracker("bybit", ["BTCUSDT", "XRPUSDT", "NEWUSDT"])
    listed = frozenset({"BTCUSDT", "XRPUSDT"})
    btc = {"BTCUSDT": (65_000.0, 1)}
    seen = RefreshEvidence(listed, btc | {"XRPUSDT": (0.5, 1)}, frozenset())
    gap = RefreshEvidence(listed, btc, frozenset())
    assert set(tracker.observe(seen, 1_000)) == {"NEWUSDT"}
    assert tracker.issues["NEWUSDT"].status == NOT_LISTED
    assert "XRPUSDT" not in tracker.observe(gap, 2_000)
    assert "XRPUSDT" not in tracker.observe(gap, 3_000)
    issue = tracker.observe(gap, 4_000)["XRPUSDT"]
    assert (issue.status, issue.since_ms, issue.last_price) == (UNSERVED, 2_000, 0.5)
    assert "XRPUSDT" not in tracker.observe(seen, 5_000)
    refused = RefreshEvidence(listed, btc, frozenset({"XRPUSDT"}))
    assert tracker.observe(refused, 6_000)["XRPUSDT"].status == UNSERVED
    gone = RefreshEvidence(frozenset({"BTCUSDT"}), btc, frozenset())
    issue = tracker.observe(gone, 7_000)["XRPUSDT"]
    assert issue.status == DELISTED and issue.since_ms == 6_000


async def test_a_pair_absent_from_the_tickers_batch_for_several_refreshes(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    """Still listed, but no ticker for several refreshes: unserved, named in /health;
    a ticker again clears the mark."""
    fake.ticker_quirk("XRPUSDT", "absent")
    await refresh(app, clock, 30)
    assert (await rows_of(app))["XRPUSDT"]["price"] is None
    for _ in range(3):  # (the app's own loop may have refreshed in between too)
        await refresh(app, clock, 30)
        if (listing := await listing_of(app, "XRPUSDT")) is not None:
            break
    assert listing is not None and listing["status"] == "unserved"
    assert "refreshes" in listing["reason"]
    _, health = await get(app, "/health")
    assert health["reasons"][0].startswith("XRPUSDT no longer served")
    assert health["pipeline"]["unlisted_symbols"] == []  # still listed
    fake.clear_faults()
    await refresh(app, clock, 30)
    assert await listing_of(app, "XRPUSDT") is None


async def test_a_pair_refused_as_symbol_invalid_is_unserved_at_once(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    """Still in instruments-info, but no ticker, and klines and book refused with
    Bybit's retCode 10001 "params error: symbol invalid" (a plain BadRequest in ccxt)."""
    fake.delist("ETHUSDT", instruments=False, ret_msg=SYMBOL_INVALID)
    await refresh(app, clock)
    listing = await listing_of(app, "ETHUSDT")
    assert listing["status"] == "unserved" and "unknown symbol" in listing["reason"]
    fake.relist("ETHUSDT")
    await refresh(app, clock)
    assert await listing_of(app, "ETHUSDT") is None


async def test_symbol_invalid_is_an_unknown_symbol(fake: FakeBybit) -> None:
    source = loopback_source(fake.base_url)
    await source.start()
    try:
        fake.delist("SOLUSDT", instruments=False, ret_msg=SYMBOL_INVALID)
        for fetch in (
            source.fetch_candles("SOLUSDT", "1m", 5),
            source.fetch_order_book("SOLUSDT", 5),
        ):
            with pytest.raises(SymbolNotListed, match="symbol invalid"):
                await fetch
        assert "SOLUSDT" in await source.reload_markets()  # still listed
        fake.delist("SOLUSDT")
        assert "SOLUSDT" not in await source.reload_markets()
    finally:
        await source.close()


# ----- at start-up ------------------------------------------------------------------


async def test_a_pair_missing_at_start_up_is_named_and_joins_when_listed(
    fake: FakeBybit, clock: ManualClock
) -> None:
    fake.delist("SOLUSDT")
    async for test_app in started_app(bybit_settings(fake), None, clock):
        status, desktop = await get(test_app, "/api/dashboard/data")
        assert status == 200
        assert "SOLUSDT" not in {row["symbol"] for row in desktop["symbols"]}
        assert [(n["symbol"], n["status"]) for n in desktop["delisted"]] == [
            ("SOLUSDT", "not_listed")
        ]
        _, health = await get(test_app, "/health")
        assert health["pipeline"]["unlisted_symbols"] == ["SOLUSDT"]
        assert health["status"] == "ok"  # never served: a configuration matter
        fake.relist("SOLUSDT")
        await refresh(test_app, clock, 1801)  # the markets are loaded again
        sol = (await rows_of(test_app))["SOLUSDT"]
        assert sol["listing"] is None and sol["price"] > 0
        assert (await get(test_app, "/api/confluence/SOLUSDT"))[0] == 200


# ----- the simulated market ---------------------------------------------------------


async def test_the_simulated_market_can_delist_and_relist(clock: ManualClock) -> None:
    market = SimulatedMarket(seed=7, clock=clock)
    settings = make_settings(VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT,DOGEUSDT")
    async for test_app in started_app(settings, market, clock):
        market.delist("DOGEUSDT")
        await refresh(test_app, clock)
        listing = await listing_of(test_app, "DOGEUSDT")
        assert listing["status"] == "delisted" and listing["last_price"] > 0
        _, health = await get(test_app, "/health")
        assert health["status"] == "degraded" and "DOGEUSDT" in health["reasons"][0]
        market.relist("DOGEUSDT")
        await refresh(test_app, clock)
        assert await listing_of(test_app, "DOGEUSDT") is None


# ----- live updates -----------------------------------------------------------------


async def _next_market(ws, symbol: str) -> dict:
    """The next market update (or snapshot item) of ``symbol``; heartbeats answered."""
    while True:
        message = json.loads(await ws.recv())
        if message["type"] == "heartbeat":
            await ws.send(json.dumps({"type": "pong", "nonce": message["nonce"]}))
        elif message.get("channel") == "market" and message["type"] == "update":
            if message["symbol"] == symbol:
                return message["data"]
        elif message.get("channel") == "market" and message["type"] == "snapshot":
            for item in message["items"]:
                if item["symbol"] == symbol:
                    return item["data"]


async def test_live_market_updates_mark_and_unmark_the_pair(
    fake: FakeBybit, clock: ManualClock
) -> None:
    app = create_app(bybit_settings(fake), clock=clock)
    async with serve_app(app) as base:
        pipeline = app.extensions["virtuoso"].pipeline
        await eventually(lambda: app.extensions["virtuoso"].warmed, seconds=30)
        async with websockets.connect(f"{base}/ws", origin=base.replace("ws", "http")) as ws:
            subscribe = {"type": "subscribe", "channels": ["market"], "symbols": ["SOLUSDT"]}
            await ws.send(json.dumps(subscribe))
            first = await asyncio.wait_for(_next_market(ws, "SOLUSDT"), 30)
            assert first["listing"] is None and first["price"] > 0
            fake.delist("SOLUSDT")
            clock.advance(61)
            await pipeline.refresh(force=True)
            marked = await asyncio.wait_for(_next_market(ws, "SOLUSDT"), 30)
            assert marked["price"] is None and marked["listing"]["status"] == "delisted"
            fake.relist("SOLUSDT")
            clock.advance(61)
            await pipeline.refresh(force=True)
            back = await asyncio.wait_for(_next_market(ws, "SOLUSDT"), 30)
            assert back["listing"] is None and back["price"] > 0


# ----- a watchlist holding such a pair ----------------------------------------------


async def put_watchlist(client, symbols: list) -> tuple[int, dict]:
    response = await client.put("/api/session/watchlist", json={"watchlist": symbols})
    return response.status_code, orjson.loads(await response.get_data())


async def test_a_watchlist_with_a_delisted_pair_can_still_be_changed(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    client = app.test_client()
    assert (await put_watchlist(client, ["SOLUSDT", "BTCUSDT"]))[0] == 200
    fake.delist("SOLUSDT")
    await refresh(app, clock)
    status, body = await put_watchlist(client, ["SOLUSDT", "BTCUSDT", "ETHUSDT"])
    assert status == 200 and body["watchlist"] == ["SOLUSDT", "BTCUSDT", "ETHUSDT"]
    assert body["unserved"] == ["SOLUSDT"]  # kept, and named
    status, body = await put_watchlist(client, ["BTCUSDT", "ETHUSDT"])  # SOL removed
    assert status == 200 and body["watchlist"] == ["BTCUSDT", "ETHUSDT"]
    status, body = await put_watchlist(client, ["SOLUSDT"])  # not served: not added anew
    assert status == 400 and "SOLUSDT" in body["message"]
    fresh = app.test_client()  # another session cannot add it either
    status, body = await put_watchlist(fresh, ["SOLUSDT", "BTCUSDT"])
    assert status == 400 and body["error"] == "invalid_watchlist"
    response = await client.get("/api/session/watchlist")
    assert orjson.loads(await response.get_data())["watchlist"] == ["BTCUSDT", "ETHUSDT"]


async def test_no_new_alert_rule_for_a_pair_not_served(
    fake: FakeBybit, clock: ManualClock, tmp_path: Path
) -> None:
    """A rule that could never fire is refused, saying why; every symbol's rules and
    rules for served pairs are still taken."""
    settings = bybit_settings(fake, VIRTUOSO_API_TOKEN=TOKEN, VIRTUOSO_DATA_DIR=str(tmp_path))
    async for app in started_app(settings, None, clock):
        await _refused_rule_for_unserved(app, fake, clock)


TOKEN = "delisting-test-token-5b1c9e"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def _refused_rule_for_unserved(
    app: QuartTestApp, fake: FakeBybit, clock: ManualClock
) -> None:
    client = app.test_client()
    fake.delist("SOLUSDT")
    await refresh(app, clock)
    rule = {"kind": "price_above", "symbol": "sol-usdt", "threshold": 1}
    response = await client.post("/api/alerts/rules", json=rule, headers=AUTH)
    body = orjson.loads(await response.get_data())
    assert response.status_code == 400 and body["error"] == "invalid_rule"
    assert "SOLUSDT is not served now (bybit no longer lists it)" in body["message"]
    for accepted in ({**rule, "symbol": "BTCUSDT"}, {"kind": "change_above", "threshold": 5}):
        response = await client.post("/api/alerts/rules", json=accepted, headers=AUTH)
        assert response.status_code == 201, await response.get_data()


async def test_a_watchlist_survives_a_restart_without_its_symbols(
    fake: FakeBybit, clock: ManualClock, redis
) -> None:
    """Saved under one configuration, read after a restart with different symbols (one
    no longer configured, one delisted meanwhile) and malformed entries stored: the
    watchlist reads back as symbols, and a save without the unserved ones works."""
    shared = {
        "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
        "VIRTUOSO_SECRET_KEY": "a-session-key-for-the-restart-test",
    }
    async for first in started_app(bybit_settings(fake, **shared), None, clock):
        client = first.test_client()
        assert (await put_watchlist(client, ["XRPUSDT", "SOLUSDT", "BTCUSDT"]))[0] == 200
        cookie = client.cookie_jar
        session_id = state_of(first).cookies.unsign(
            next(c.value for c in cookie if c.name == "virtuoso_session")
        )
        stored = {"watchlist": ["XRPUSDT", "SOLUSDT", 7, "<b>", "", "btc-usdt", "BTCUSDT"]}
        await state_of(first).sessions.save(session_id, stored)
    fake.delist("SOLUSDT")
    restarted = bybit_settings(fake, "BTCUSDT,ETHUSDT,SOLUSDT", **shared)  # no XRPUSDT
    async for second in started_app(restarted, None, clock):
        client = second.test_client()
        client.cookie_jar = cookie
        response = await client.get("/api/session/watchlist")
        assert response.status_code == 200
        watched = orjson.loads(await response.get_data())["watchlist"]
        assert watched == ["XRPUSDT", "SOLUSDT", "BTCUSDT"]  # malformed entries dropped
        # Stored symbols no longer served are kept and named, never a lock-out.
        status, body = await put_watchlist(client, [*watched, "ETHUSDT"])
        assert status == 200, body
        assert body == {
            "watchlist": ["XRPUSDT", "SOLUSDT", "BTCUSDT", "ETHUSDT"],
            "unserved": ["XRPUSDT", "SOLUSDT"],
        }
        status, body = await put_watchlist(client, ["SOLUSDT", "DOGEUSDT"])  # never stored
        assert status == 400 and body["error"] == "invalid_watchlist"  # named, not a 500
        assert "DOGEUSDT" in body["message"] and "SOLUSDT" not in body["message"].split(";")[0]
        status, body = await put_watchlist(client, ["BTCUSDT", "ETHUSDT"])
        assert status == 200 and body == {"watchlist": ["BTCUSDT", "ETHUSDT"], "unserved": []}
        status, body = await put_watchlist(client, ["SOLUSDT"])  # dropped once: unknown again
        assert status == 400 and "SOLUSDT" in body["message"]
