"""Traders see the derivatives (issue 19), in a real headless Chromium against the app on
real HTTP and /ws: the desktop panel's funding heatmap shows each symbol's rate as
/api/market/derivatives serves it (and its open-interest change and long/short ratio), a
symbol without a perpetual is listed with the service's reason and no number, a live
`derivatives` message patches the cell; the symbol table's Sent. column shows the
sentiment component (— when null); the phone's cards show the funding rate. Each test
ends with no console error. (The formatting helpers alone: tests/integration/test_numbers.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from app.main.embedded import create_app
from tests.conftest import ManualClock, eventually, exchange_settings
from tests.support.browser import (
    COUNT_SNAPSHOTS,
    PAGE_GRACE_SECONDS,
    PHONE,
    PageProblems,
    ServedApp,
    served_app,
    text_of,
)
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")

WAIT_MS = 20_000
DESKTOP = {"viewport": {"width": 1440, "height": 1000}}
DERIVATIVES = "/api/market/derivatives"


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[ServedApp]:
    """The whole simulated market (25 symbols): at the tests' instant BTC, ETH and SOL all
    pay negative funding, while TONUSDT's positive rate shows the positive heat, and the
    phone payload's budget is measured at its 20 cards."""
    async with served_app() as app:
        yield app


def fixed(value: float, decimals: int) -> str:
    """``value.toFixed(decimals)`` of JavaScript: the exact binary value rounded half away
    from zero."""
    quantum = Decimal(1).scaleb(-decimals)
    return str(Decimal(value).quantize(quantum, rounding=ROUND_HALF_UP))


def funding_text(rate: float | None) -> str:
    """A funding rate (a fraction per interval) as the pages show it: percent, 4
    decimals, signed."""
    if rate is None:
        return "—"
    digits = fixed(abs(rate) * 100, 4)
    if Decimal(digits) == 0:
        return "0.0000%"
    return f"{'+' if rate > 0 else '-'}{digits}%"


def change_text(value: float | None) -> str:
    """A signed percent change as the pages show it (+0.11%, -4.16%)."""
    if value is None:
        return "—"
    return f"{'+' if value > 0 else ''}{fixed(value, 2)}%"


def cell(symbol: str, name: str) -> str:
    return f"#derivatives-body tr[data-key='{symbol}'] .{name}"


async def open_watched(browser: Browser, url: str, problems: PageProblems, **options) -> Page:
    context = await browser.new_context(**options)
    await context.add_init_script(COUNT_SNAPSHOTS)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(url)
    return page


async def get_json(page: Page, url: str) -> Any:
    response = await page.request.get(url)
    assert response.ok, f"{url}: {response.status}"
    return await response.json()


async def wait_snapshot(page: Page, channel: str) -> None:
    """Until the page handled the channel's snapshot (it is subscribed)."""
    await page.wait_for_function(
        "(channel) => (window.__snapshots || {})[channel] > 0", arg=channel, timeout=WAIT_MS
    )


async def wait_text(page: Page, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


async def wait_panel_rows(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"() => document.querySelectorAll('#derivatives-body tr').length === {count}",
        timeout=WAIT_MS,
    )


async def publish(served: ServedApp, channel: str, symbol: str, data: Any, at: int) -> None:
    """A live message through the app's own broadcaster, as a snapshot's would be."""
    await served.state.broadcaster.publish(channel, symbol, data, at)


# --- the desktop panel ---------------------------------------------------------------------


async def test_the_panel_shows_each_symbols_funding_as_served(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_watched(browser, served.base + "/", problems, **DESKTOP)
    view = await get_json(page, served.base + DERIVATIVES)
    rows = view["derivatives"]
    assert len(rows) == len(served.state.known_symbols)  # every simulated pair is in USDT
    await wait_panel_rows(page, len(rows))
    for row in rows:
        symbol = row["symbol"]
        assert await text_of(page, cell(symbol, "funding-rate")) == funding_text(
            row["funding_rate"]
        )
        assert await text_of(page, cell(symbol, "oi-1h")) == change_text(
            row["open_interest_change_pct_1h"]
        )
        assert await text_of(page, cell(symbol, "oi-24h")) == change_text(
            row["open_interest_change_pct_24h"]
        )
        assert await text_of(page, cell(symbol, "long-short")) == fixed(row["long_short_ratio"], 2)
        classes = await page.get_attribute(cell(symbol, "funding"), "class") or ""
        distance = row["funding_rate"] - 0.0001
        if distance >= 0.00005 + 1e-12:
            assert "heat-p" in classes, (symbol, classes)
        elif distance <= -0.00005 - 1e-12:
            assert "heat-m" in classes, (symbol, classes)
        title = await page.get_attribute(cell(symbol, "funding"), "title") or ""
        hours = row["funding_interval_hours"]
        assert f"{symbol} funding {funding_text(row['funding_rate'])} per {hours:g} h" in title
        assert "next funding in" in title
    assert await page.locator("#derivatives-none").is_hidden()
    assert (await text_of(page, "#derivatives-age")).startswith("read ")
    assert await page.locator("#derivatives-stale").is_hidden()
    table = page.get_by_role("table", name="Perpetual swaps")
    assert await table.count() == 1  # its caption names it
    assert problems.messages == [], problems.messages


async def test_a_live_derivatives_message_changes_the_cell(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_watched(browser, served.base + "/", problems, **DESKTOP)
    view = await get_json(page, served.base + DERIVATIVES)
    await wait_panel_rows(page, len(view["derivatives"]))
    await wait_snapshot(page, "derivatives")
    btc = next(r for r in view["derivatives"] if r["symbol"] == "BTCUSDT")
    at = view["generated_at"] + 1
    hot = btc | {"funding_rate": 0.0012, "open_interest_change_pct_1h": 7.5}
    await publish(served, "derivatives", "BTCUSDT", hot, at)
    await wait_text(page, cell("BTCUSDT", "funding-rate"), "+0.1200%")
    assert "heat-p5" in (await page.get_attribute(cell("BTCUSDT", "funding"), "class") or "")
    assert await text_of(page, cell("BTCUSDT", "oi-1h")) == "+7.50%"
    # No perpetual any more: no number, the symbol listed as without data
    await publish(served, "derivatives", "BTCUSDT", None, at + 1)
    await page.wait_for_selector(cell("BTCUSDT", "funding"), state="detached", timeout=WAIT_MS)
    listed = page.locator("#derivatives-unavailable li[data-key='BTCUSDT']")
    await listed.wait_for(timeout=WAIT_MS)
    assert "no derivatives data" in (await listed.text_content() or "")
    # and back
    await publish(served, "derivatives", "BTCUSDT", btc, at + 2)
    await wait_text(page, cell("BTCUSDT", "funding-rate"), funding_text(btc["funding_rate"]))
    assert await listed.count() == 0
    assert problems.messages == [], problems.messages


async def test_the_sentiment_column_shows_the_component_or_a_dash(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_watched(browser, served.base + "/", problems, **DESKTOP)
    dashboard = await get_json(page, served.base + "/api/dashboard/data")
    await page.wait_for_function(
        f"() => document.querySelectorAll('#symbols-body tr td.sentiment').length"
        f" === {len(dashboard['symbols'])}",
        timeout=WAIT_MS,
    )
    for row in dashboard["symbols"]:
        score = row["confluence"]["components"]["sentiment"]
        want = "—" if score is None else fixed(score, 0)
        got = await text_of(page, f"#symbols-body tr[data-symbol='{row['symbol']}'] td.sentiment")
        assert got == want, row["symbol"]
    header = page.locator("#symbols-table th", has_text="Sent.")
    assert "Sentiment" in (await header.get_attribute("title") or "")
    await wait_snapshot(page, "confluence")
    eth = next(r for r in dashboard["symbols"] if r["symbol"] == "ETHUSDT")["confluence"]
    brief = {k: eth[k] for k in ("score", "signal", "reliability", "components")}
    sentiment_cell = "#symbols-body tr[data-symbol='ETHUSDT'] td.sentiment"
    at = dashboard["generated_at"] + 1
    with_score = brief | {"components": eth["components"] | {"sentiment": 73.4}}
    await publish(served, "confluence", "ETHUSDT", with_score, at)
    await wait_text(page, sentiment_cell, "73")
    without = brief | {"components": eth["components"] | {"sentiment": None}}
    await publish(served, "confluence", "ETHUSDT", without, at + 1)
    await wait_text(page, sentiment_cell, "—")
    assert problems.messages == [], problems.messages


# --- the phone's cards -----------------------------------------------------------------------


async def test_the_phone_cards_show_the_funding_rate(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_watched(browser, served.base + "/mobile", problems, **PHONE)
    response = await page.request.get(served.base + "/api/dashboard/mobile")
    assert len(await response.body()) <= 50 * 1024  # the phone's budget holds
    cards = (await response.json())["confluence_scores"]
    await page.wait_for_function(
        f"() => document.querySelectorAll('#cards .card-funding-value').length === {len(cards)}",
        timeout=WAIT_MS,
    )
    for card in cards:
        assert "funding_history" not in card  # the rate alone, not the histories
        got = await text_of(
            page, f"#cards article[data-key='{card['symbol']}'] .card-funding-value"
        )
        assert got == funding_text(card["funding_rate"]), card["symbol"]
    await wait_snapshot(page, "derivatives")
    view = await get_json(page, served.base + DERIVATIVES)
    first = cards[0]["symbol"]
    row = next(r for r in view["derivatives"] if r["symbol"] == first)
    value = f"#cards article[data-key='{first}'] .card-funding-value"
    await publish(
        served, "derivatives", first, row | {"funding_rate": 0.0005}, view["generated_at"] + 1
    )
    await wait_text(page, value, "+0.0500%")
    await publish(served, "derivatives", first, None, view["generated_at"] + 2)
    await wait_text(page, value, "—")
    assert problems.messages == [], problems.messages


# --- a symbol without a perpetual (Bybit, through real ccxt against the fake) -------------------


@pytest_asyncio.fixture(loop_scope="session")
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


async def test_a_symbol_without_a_perpetual_is_listed_with_its_reason(
    browser: Browser, fake: FakeBybit, clock: ManualClock
) -> None:
    """ETHBTC has no linear perpetual on Bybit (they are USDT- and USDC-margined): the
    panel names it with the reason the service gives, and shows no number for it."""
    problems = PageProblems()
    app = create_app(exchange_settings(fake.base_url, "BTCUSDT,ETHUSDT,ETHBTC"), clock=clock)
    async with serve_app(app, graceful_timeout=PAGE_GRACE_SECONDS) as ws_base:
        base = ws_base.replace("ws://", "http://")
        await eventually(lambda: app.extensions["virtuoso"].warmed, seconds=30)
        desktop = await open_watched(browser, base + "/", problems, **DESKTOP)
        view = await get_json(desktop, base + DERIVATIVES)
        reasons = {u["symbol"]: u["reason"] for u in view["unavailable"]}
        assert reasons.get("ETHBTC"), view["unavailable"]
        await desktop.wait_for_function(
            "(n) => document.querySelectorAll('#derivatives-unavailable li').length === n",
            arg=len(reasons),
            timeout=WAIT_MS,
        )
        await wait_panel_rows(desktop, len(view["derivatives"]))
        for symbol, reason in reasons.items():
            item = f"#derivatives-unavailable li[data-key='{symbol}']"
            await wait_text(desktop, f"{item} .unavailable-reason", reason)
            assert await desktop.locator(cell(symbol, "funding")).count() == 0
        for row in view["derivatives"]:
            got = await text_of(desktop, cell(row["symbol"], "funding-rate"))
            assert got == funding_text(row["funding_rate"])
        assert await desktop.locator("#derivatives-none").is_visible()
        phone = await open_watched(browser, base + "/mobile", problems, **PHONE)
        ethbtc = "#cards article[data-key='ETHBTC'] .card-funding-value"
        await phone.wait_for_selector(ethbtc, timeout=WAIT_MS)
        assert await text_of(phone, ethbtc) == "—"
        assert problems.messages == [], problems.messages
        for page in (desktop, phone):
            await page.context.close()
