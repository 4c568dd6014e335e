"""The dashboards in a real headless Chromium against the app on real HTTP and /ws:
real data rendered, live updates patched in place, the STALE badge, alerts from rule
to acknowledgement, the phone layout, polling and reconnecting, and the RUM beacon.
Every test ends with no console error on the page."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, WebSocketRoute

from app.market.errors import ExchangeUnavailable
from tests.conftest import eventually
from tests.support.browser import (
    PHONE,
    PageProblems,
    ServedApp,
    open_page,
    screenshot,
    served_app,
    text_of,
)

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


API_TOKEN = "browser-test-token"
WAIT_MS = 15_000
BTC_PRICE = "#symbols-body tr[data-symbol='BTCUSDT'] td.price"
PING_EVERY_MS = 5_000  # the page's pings (frontend/src/live.js)


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[ServedApp]:
    async with served_app(VIRTUOSO_API_TOKEN=API_TOKEN) as app:
        yield app


@pytest_asyncio.fixture(loop_scope="session")
async def served_polled() -> AsyncIterator[ServedApp]:
    """Refreshes (and so polls) every 2 s, not every 10 s: a poll comes sooner."""
    async with served_app(VIRTUOSO_REFRESH_SECONDS="2") as app:
        yield app


def price_text(value: float) -> str:
    """The page's formatting of a price of BTC's magnitude."""
    return f"{value:,.2f}"


async def wait_text(page: Page, selector: str, text: str, wait_ms: float = WAIT_MS) -> None:
    """Until the element's text is ``text`` (patched in place by a live update)."""
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
        timeout=wait_ms,
    )


async def wait_connection(page: Page, state: str) -> None:
    """Until the header's connection indicator says ``state`` (live, polling, …)."""
    await page.wait_for_function(
        "(state) => document.getElementById('connection').dataset.state === state",
        arg=state,
        timeout=WAIT_MS,
    )


async def wait_rows(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"() => document.querySelectorAll('#symbols-body tr').length === {count}",
        timeout=WAIT_MS,
    )


async def test_desktop_renders_data_and_patches_updates_in_place(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    desktop = {"width": 1440, "height": 1000}
    page = await open_page(browser, served.base + "/", problems, viewport=desktop)
    symbols = served.state.known_symbols
    await wait_rows(page, len(symbols))
    snapshot = served.state.pipeline.latest
    btc = snapshot.tickers["BTCUSDT"].last
    btc_row = "#symbols-body tr[data-symbol='BTCUSDT']"
    assert await text_of(page, f"{btc_row} td.price") == price_text(btc)
    overview = served.state.pipeline.latest_analysis.overview
    assert await text_of(page, "#hd-regime") == overview["market_regime"]
    assert await text_of(page, "#hd-btc-price") == price_text(btc)
    assert await page.locator("#badge-simulated").is_visible()
    assert not await page.locator("#badge-stale").is_visible()
    await wait_connection(page, "live")
    # beta table: every alt with a band; chart drawn; movers listed
    assert await page.locator("#beta-body tr").count() == len(symbols) - 1
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    assert await page.locator("#movers-losers li, #movers-gainers li").count() > 0
    await screenshot(page, "desktop")

    # A new snapshot: the same row node now shows the new price; the page never reloaded.
    await page.evaluate(
        "window.__sameDocument = true;"
        "document.querySelector(\"#symbols-body tr[data-symbol='BTCUSDT']\").dataset.mark = 'kept'"
    )
    await served.next_snapshot()
    new_btc = served.state.pipeline.latest.tickers["BTCUSDT"].last
    assert new_btc != btc
    await wait_text(page, BTC_PRICE, price_text(new_btc))
    assert await page.evaluate("window.__sameDocument === true")
    assert await page.locator(f"{btc_row}[data-mark='kept']").count() == 1
    assert await text_of(page, "#hd-btc-price") == price_text(new_btc)
    assert problems.messages == []


LONG_FLASHES = """() => {
    const sheet = document.styleSheets[0];  // the page's own (no inline style: its CSP)
    const rule = '#symbols-body td { animation-duration: 600s !important; }';
    sheet.insertRule(rule, sheet.cssRules.length);
}"""
# The price cell's running CSS animations' names, and whether the one running is another
# animation than the one this saw last time (a restart makes a new one).
RUNNING_FLASH = """(cell) => {
    const running = cell.getAnimations().filter((a) => a.playState === 'running');
    const anew = running.length === 1 && running[0] !== window.__lastFlash;
    window.__lastFlash = running[0];
    return [running.map((a) => a.animationName), anew];
}"""


async def test_a_changed_price_flashes_its_way_and_a_second_change_restarts_it(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_page(browser, served.base + "/", problems)
    await wait_rows(page, len(served.state.known_symbols))
    await wait_connection(page, "live")
    # The flashes last 10 min here, not 1 s: a busy machine's slow round trips then never
    # see one end before it is looked at.
    await page.evaluate(LONG_FLASHES)
    cell = page.locator(BTC_PRICE)
    ways: list[str] = []
    # Changes until two in a row went the same way (the flash class stays the same then):
    # the seeded market gets there within a few.
    while len(ways) < 2 or ways[-1] != ways[-2]:
        assert len(ways) < 12, ways
        before = served.state.pipeline.latest.tickers["BTCUSDT"].last
        await served.next_snapshot()
        after = served.state.pipeline.latest.tickers["BTCUSDT"].last
        await wait_text(page, BTC_PRICE, price_text(after))
        way = "flash-up" if after > before else "flash-down"
        assert way in (await cell.get_attribute("class") or "").split()
        [name], anew = await cell.evaluate(RUNNING_FLASH)  # one flash, in its direction,
        assert name.startswith(way) and anew, (name, anew)  # a new one (restarted)
        ways.append(way)
    assert problems.messages == []


async def test_table_sorts_filters_and_keeps_the_watchlist(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_page(browser, served.base + "/", problems)
    await wait_rows(page, len(served.state.known_symbols))

    await page.click("th button[data-sort='change_24h']")
    changes = await page.eval_on_selector_all(
        "#symbols-body tr td.change_24h", "cells => cells.map(c => parseFloat(c.textContent))"
    )
    assert changes == sorted(changes, reverse=True)
    await page.click("th button[data-sort='change_24h']")
    changes = await page.eval_on_selector_all(
        "#symbols-body tr td.change_24h", "cells => cells.map(c => parseFloat(c.textContent))"
    )
    assert changes == sorted(changes)

    await page.fill("#symbol-filter", "eth")
    visible = page.locator("#symbols-body tr:not([hidden])")
    assert await visible.count() == 1
    assert await visible.first.get_attribute("data-symbol") == "ETHUSDT"
    await page.fill("#symbol-filter", "")

    await page.click("#symbols-body tr[data-symbol='SOLUSDT'] button.star")
    await page.wait_for_selector("#watchlist li[data-key='SOLUSDT']", timeout=WAIT_MS)
    await page.check("#watchlist-only")
    assert await visible.count() == 1
    # kept on the server under the session cookie: a reload shows it again
    await page.reload()
    await page.wait_for_selector("#watchlist li[data-key='SOLUSDT']", timeout=WAIT_MS)
    assert await text_of(page, "#symbols-body tr[data-symbol='SOLUSDT'] button.star") == "★"

    # clicking a row charts it; the timeframe switch asks for those candles
    async with page.expect_response(lambda r: "/api/market/candles/ETHUSDT?timeframe=5m" in r.url):
        await page.click("#symbols-body tr[data-symbol='ETHUSDT'] td.symbol")
        await page.click("#timeframes button[data-timeframe='5m']")
    assert await text_of(page, "#chart-symbol") == "ETHUSDT"
    five_minutes = "#timeframes button[data-timeframe='5m']"
    assert await page.get_attribute(five_minutes, "aria-pressed") == "true"
    assert problems.messages == []


async def test_stale_snapshot_shows_the_stale_badge(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await (await browser.new_context()).new_page()
    await page.clock.install()  # the page's timers, on a clock the test can move on
    problems.watch(page)
    await page.goto(served.base + "/")
    await wait_rows(page, len(served.state.known_symbols))
    await wait_connection(page, "live")
    assert not await page.locator("#badge-stale").is_visible()

    served.market.fail_tickers = True  # the exchange fails: no new snapshot
    with pytest.raises(ExchangeUnavailable):
        await served.next_snapshot(seconds=120)
    # the open page learns the server's time from its pings and flags the data: its
    # next ping (every 5 s) now rather than in up to 5 s
    await page.clock.fast_forward(PING_EVERY_MS)
    await page.wait_for_selector("#badge-stale", state="visible", timeout=WAIT_MS)
    assert (await text_of(page, "#stale-age")).startswith("2m")
    await screenshot(page, "desktop-stale")
    # a fresh load of the same stale data shows it at once
    await page.reload()
    await page.wait_for_selector("#badge-stale", state="visible", timeout=WAIT_MS)

    served.market.fail_tickers = False
    assert await served.next_snapshot(seconds=5) is not None
    await page.wait_for_selector("#badge-stale", state="hidden", timeout=WAIT_MS)
    assert problems.messages == []


async def test_rule_create_alert_arrives_live_and_is_acknowledged(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_page(browser, served.base + "/", problems)
    await wait_rows(page, len(served.state.known_symbols))
    await page.click(".rules summary")
    hostile_title = '<img src=x onerror="window.__xss=1">BTC'

    # without the token the form says what is missing and nothing is stored
    await page.select_option("#rule-kind", "price_above")
    await page.select_option("#rule-symbol", "BTCUSDT")
    await page.fill("#rule-threshold", "1")
    await page.fill("#rule-title", hostile_title)
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_function(
        "() => document.getElementById('rules-status').textContent.includes('API token')",
        timeout=WAIT_MS,
    )
    assert await served.state.alerts.store.list_rules() == []

    await page.fill("#api-token", API_TOKEN)
    await page.click("#token-form button[type=submit]")
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await served.state.alerts.store.list_rules()
    assert (rule.kind, rule.symbol, rule.threshold, rule.title) == (
        "price_above",
        "BTCUSDT",
        1.0,
        hostile_title,
    )

    await served.next_snapshot()  # BTC is above 1: the rule fires on this snapshot
    alert_item = page.locator("#alerts-list li").first
    await alert_item.wait_for(timeout=WAIT_MS)
    assert await alert_item.locator(".alert-title").text_content() == hostile_title
    assert await page.evaluate("window.__xss") is None  # shown as text, never as HTML
    assert await alert_item.locator(".alert-status").text_content() == "pending"
    await screenshot(page, "desktop-alert")

    await alert_item.locator("button.alert-ack").click()
    await page.wait_for_function(
        "() => document.querySelector('#alerts-list li .alert-status').textContent"
        " === 'acknowledged'",
        timeout=WAIT_MS,
    )
    alerts, _ = await served.state.alerts.store.list_alerts()
    assert [a.status for a in alerts] == ["acknowledged"]

    await page.click("#rules-list li button.rule-delete")
    await page.wait_for_selector("#rules-list li", state="detached", timeout=WAIT_MS)
    assert await served.state.alerts.store.list_rules() == []
    assert problems.messages == []


async def test_mobile_page_fits_a_phone(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_page(
        browser,
        served.base + "/",  # a phone on / is offered the mobile page
        problems,
        **PHONE,
    )
    await page.wait_for_function(
        "() => document.querySelectorAll('#cards .card').length === 20", timeout=WAIT_MS
    )
    assert await page.evaluate("document.body.dataset.device") == "mobile"
    first = served.state.pipeline.latest.tickers["BTCUSDT"].last
    assert await text_of(page, "#cards .card[data-key='BTCUSDT'] .card-price") == price_text(first)
    assert await text_of(page, "#beta-summary") != "—"
    widths = await page.evaluate(
        "[document.documentElement.scrollWidth, document.documentElement.clientWidth]"
    )
    assert widths[0] <= widths[1] == 375, f"horizontal scroll: {widths}"
    await screenshot(page, "mobile")

    await served.next_snapshot()
    new = served.state.pipeline.latest.tickers["BTCUSDT"].last
    await wait_text(page, "#cards .card[data-key='BTCUSDT'] .card-price", price_text(new))
    assert problems.messages == []


async def test_polls_with_if_none_match_while_the_websocket_is_down(
    browser: Browser, served_polled: ServedApp
) -> None:
    served = served_polled
    problems = PageProblems()
    context = await browser.new_context()
    refused = 0

    async def refuse(ws: WebSocketRoute) -> None:
        nonlocal refused
        refused += 1
        await ws.close(code=1013, reason="test: no live updates")

    await context.route_web_socket("**/ws", refuse)
    page = await context.new_page()
    problems.watch(page)
    conditional: list[str] = []
    page.on(
        "request",
        lambda r: (
            conditional.append(r.headers.get("if-none-match", ""))
            if r.url.endswith("/api/dashboard/data")
            else None
        ),
    )
    await page.goto(served.base + "/")
    await wait_rows(page, len(served.state.known_symbols))
    await wait_connection(page, "polling")
    await served.next_snapshot()
    new = served.state.pipeline.latest.tickers["BTCUSDT"].last
    poll_ms = served.state.settings.refresh_seconds * 1000  # one poll interval more
    await wait_text(page, BTC_PRICE, price_text(new), WAIT_MS + poll_ms)
    assert any(conditional), "polls never sent If-None-Match"
    assert refused >= 1
    assert problems.messages == []


async def test_reconnects_and_resyncs_after_the_socket_drops(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    context = await browser.new_context()
    sockets: list[WebSocketRoute] = []
    subscribes: list[str] = []

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def from_page(message: str | bytes) -> None:
            if isinstance(message, str) and '"subscribe"' in message:
                subscribes.append(message)
            server.send(message)

        ws.on_message(from_page)
        sockets.append(ws)

    await context.route_web_socket("**/ws", relay)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(served.base + "/")
    await wait_rows(page, len(served.state.known_symbols))
    await eventually(lambda: len(subscribes) == 1)
    await wait_connection(page, "live")

    await sockets[0].close(code=1001, reason="test: server restart")
    await eventually(lambda: len(sockets) == 2 and len(subscribes) == 2, seconds=15)
    await wait_connection(page, "live")
    await served.next_snapshot()
    new = served.state.pipeline.latest.tickers["BTCUSDT"].last
    await wait_text(page, BTC_PRICE, price_text(new))
    assert problems.messages == []


async def test_rum_beacon_feeds_the_page_load_histogram(
    browser: Browser, served: ServedApp
) -> None:
    def count(device: str, phase: str) -> float:
        labels = {"device": device, "phase": phase}
        registry = served.state.metrics.registry
        return registry.get_sample_value("virtuoso_page_load_seconds_count", labels) or 0.0

    phases = ("ttfb", "dom_ready", "first_data")
    before = {(d, p): count(d, p) for d in ("desktop", "mobile") for p in phases}
    problems = PageProblems()
    for path in ("/", "/mobile"):
        context = await browser.new_context()
        page = await context.new_page()
        problems.watch(page)
        async with page.expect_request(lambda r: r.url.endswith("/api/rum")) as beacon:
            await page.goto(served.base + path)
        request = await beacon.value
        body = request.post_data_json
        assert body["page"] == path
        assert 0 < body["ttfb_ms"] <= body["dom_ready_ms"]
        assert body["first_data_ms"] > 0
        response = await request.response()
        assert response is not None and response.status == 204
    for device in ("desktop", "mobile"):
        for phase in phases:
            assert count(device, phase) == before[(device, phase)] + 1, (device, phase)
    assert problems.messages == []
