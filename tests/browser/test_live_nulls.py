"""A per-symbol live value that stops existing is published as null (F2): a delisted
pair's confluence leaves the WebSocket snapshot, so a page loaded afterwards shows no
score, components or signal for it (desktop row, phone card); when the pair is listed
again its confluence is sent again. Also, at the unit level, a symbol no longer
collected gets nulls on every channel it had."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
import pytest_asyncio
import websockets
from playwright.async_api import Browser, Page

from app.main.embedded import create_app
from app.services import live_updates
from app.services.live_updates import LiveUpdates
from tests.conftest import ManualClock, eventually, exchange_settings
from tests.support.browser import COUNT_SNAPSHOTS, PAGE_GRACE_SECONDS, PHONE, PageProblems, text_of
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
WAIT_MS = 20_000
SOL_ROW = "#symbols-body tr[data-symbol='SOLUSDT']"
SOL_CARD = "#cards article[data-key='SOLUSDT']"
COMPONENTS = ("technical", "volume", "orderflow", "orderbook", "price_structure")


@pytest_asyncio.fixture(loop_scope="session")
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


def make_app(fake: FakeBybit, clock: ManualClock) -> Any:
    settings = exchange_settings(fake.base_url, SYMBOLS)
    return create_app(settings, clock=clock)


async def refresh(app: Any, clock: ManualClock) -> None:
    """A refresh a minute later (the markets are checked again), announced live."""
    clock.advance(61)
    await app.extensions["virtuoso"].pipeline.refresh(force=True)


async def confluence_snapshot(base: str, symbol: str) -> dict:
    """What a client subscribing now gets for ``symbol`` on the confluence and beta
    channels: {channel: data} of the snapshot items (a channel without one: absent)."""
    found: dict[str, Any] = {}
    async with websockets.connect(f"{base}/ws", origin=base.replace("ws", "http")) as ws:
        subscribe = {"type": "subscribe", "channels": ["confluence", "beta"], "symbols": [symbol]}
        await ws.send(json.dumps(subscribe))
        seen: set[str] = set()
        while seen != {"confluence", "beta"}:
            message = json.loads(await asyncio.wait_for(ws.recv(), 30))
            if message["type"] == "heartbeat":
                await ws.send(json.dumps({"type": "pong", "nonce": message["nonce"]}))
            elif message["type"] == "snapshot":
                seen.add(message["channel"])
                for item in message["items"]:
                    if item["symbol"] == symbol:
                        found[message["channel"]] = item["data"]
    return found


async def delisting_announced(base: str, symbol: str) -> dict:
    """What a subscriber gets once the delisting's nulls are out: a live update waits
    for its key's turn (at most a few per second per key), so not at once."""
    found: dict = {}

    async def nulls() -> bool:
        found.update(await confluence_snapshot(base, symbol))
        return found.get("confluence") is None

    async with asyncio.timeout(30):
        while not await nulls():  # noqa: ASYNC110 (a new subscriber each time)
            await asyncio.sleep(0.5)  # a connection at a time (5 per client at most)
    return found


async def test_a_client_subscribing_after_a_delisting_gets_no_old_confluence(
    fake: FakeBybit, clock: ManualClock
) -> None:
    app = make_app(fake, clock)
    async with serve_app(app, graceful_timeout=PAGE_GRACE_SECONDS) as base:
        await eventually(lambda: app.extensions["virtuoso"].warmed, seconds=30)
        before = await confluence_snapshot(base, "SOLUSDT")
        assert isinstance(before["confluence"]["score"], float)
        fake.delist("SOLUSDT")
        await refresh(app, clock)
        after = await delisting_announced(base, "SOLUSDT")
        assert after == {"confluence": None, "beta": None}
        fake.relist("SOLUSDT")
        for _ in range(5):  # its candles come back over the next refreshes
            await refresh(app, clock)
            back = await confluence_snapshot(base, "SOLUSDT")
            if back.get("confluence") is not None:
                break
        assert isinstance(back["confluence"]["score"], float)


async def wait_snapshot(page: Page, channel: str) -> None:
    await page.wait_for_function(
        "(channel) => (window.__snapshots || {})[channel] > 0", arg=channel, timeout=WAIT_MS
    )


async def test_a_page_loaded_after_a_delisting_shows_no_old_score(
    browser: Browser, fake: FakeBybit, clock: ManualClock
) -> None:
    problems = PageProblems()
    app = make_app(fake, clock)
    async with serve_app(app, graceful_timeout=PAGE_GRACE_SECONDS) as ws_base:
        base = ws_base.replace("ws://", "http://")
        await eventually(lambda: app.extensions["virtuoso"].warmed, seconds=30)
        fake.delist("SOLUSDT")
        await refresh(app, clock)
        await delisting_announced(ws_base, "SOLUSDT")
        desktop = await new_page(browser, base + "/?view=desktop", problems, {})
        phone = await new_page(browser, base + "/mobile", problems, PHONE)
        await wait_snapshot(desktop, "confluence")
        await wait_snapshot(phone, "confluence")
        row = {name: await text_of(desktop, f"{SOL_ROW} td.{name}") for name in COMPONENTS}
        assert row == dict.fromkeys(COMPONENTS, "—")
        assert await text_of(desktop, f"{SOL_ROW} td.score") == "—"
        assert await text_of(desktop, f"{SOL_ROW} td.signal") == "—"
        assert await text_of(phone, f"{SOL_CARD} .card-score-value") == "—"
        assert await text_of(phone, f"{SOL_CARD} .card-signal") == "—"
        hidden = await phone.eval_on_selector(f"{SOL_CARD} meter", "m => m.style.visibility")
        assert hidden == "hidden"
        btc = "#symbols-body tr[data-symbol='BTCUSDT'] td.score"
        assert await text_of(desktop, btc) != "—"  # the served pairs keep theirs
        assert problems.messages == [], problems.messages
        for page in (desktop, phone):
            await page.context.close()


async def new_page(browser: Browser, url: str, problems: PageProblems, options: dict) -> Page:
    context = await browser.new_context(**options)
    await context.add_init_script(COUNT_SNAPSHOTS)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(url)
    return page


class RecordingBroadcaster:
    def __init__(self) -> None:
        self.published: list[tuple[str, str | None, Any]] = []

    async def publish(self, channel: str, symbol: str | None, data: Any, at: int) -> int:
        self.published.append((channel, symbol, data))
        return len(self.published)


async def test_a_symbol_no_longer_collected_gets_nulls_and_values_again_when_back(
    monkeypatch,
) -> None:
    rounds = [
        [("market", "AAAUSDT", {"price": 1}), ("beta", "AAAUSDT", {"beta": 1.1}),
         ("market", "BBBUSDT", {"price": 2}), ("dashboard", None, {"x": 1})],
        [("market", "BBBUSDT", {"price": 2}), ("dashboard", None, {"x": 1})],
        [("market", "BBBUSDT", {"price": 2}), ("dashboard", None, {"x": 1})],
        [("market", "AAAUSDT", {"price": 1}), ("market", "BBBUSDT", {"price": 2}),
         ("dashboard", None, {"x": 1})],
    ]  # fmt: skip
    monkeypatch.setattr(live_updates, "updates_of", lambda _s, _a: list(rounds.pop(0)))
    broadcaster = RecordingBroadcaster()
    now = [0.0]  # each round a second after the last: none is held back (coalescing)

    def clock() -> float:
        now[0] += 1.0
        return now[0]

    live = LiveUpdates(broadcaster, clock=clock)  # type: ignore[arg-type]
    snapshot = type("S", (), {"fetched_at_ms": 1, "listing": {}, "tickers": {}})()
    await live.on_snapshot(snapshot, None)  # type: ignore[arg-type]
    broadcaster.published.clear()
    await live.on_snapshot(snapshot, None)  # type: ignore[arg-type]
    assert sorted(broadcaster.published) == [("beta", "AAAUSDT", None), ("market", "AAAUSDT", None)]
    broadcaster.published.clear()
    await live.on_snapshot(snapshot, None)  # type: ignore[arg-type]
    assert broadcaster.published == []  # null once, not on every snapshot
    await live.on_snapshot(snapshot, None)  # type: ignore[arg-type]
    assert broadcaster.published == [("market", "AAAUSDT", {"price": 1})]
