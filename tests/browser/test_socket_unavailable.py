"""A page whose WebSocket cannot even be created (the constructor throws: a blocked or
refused URL, a browser policy) still gets its data and its alerts, by polling (F9),
on the desktop and on the phone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from tests.support.browser import FEW_SYMBOLS, PHONE, PageProblems, ServedApp, served_app, text_of

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


TOKEN = "socket-unavailable-token"
WAIT_MS = 20_000
POLL_MS = 2_000  # the pages poll every refresh interval (VIRTUOSO_REFRESH_SECONDS below)
BTC_PRICE = "#symbols-body tr[data-symbol='BTCUSDT'] td.price"
BTC_CARD_PRICE = "#cards article[data-key='BTCUSDT'] .card-price"
# Every `new WebSocket(...)` of the page throws, as a blocked URL makes it do.
THROWING_WEBSOCKET = """
window.__sockets = 0;
window.WebSocket = class {
  static CONNECTING = 0; static OPEN = 1; static CLOSING = 2; static CLOSED = 3;
  constructor() {
    window.__sockets += 1;
    throw new DOMException('blocked by the test', 'SecurityError');
  }
};
"""


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[ServedApp]:
    """Polls every 2 s (the refresh interval); alerts in this test's own directory."""
    async with served_app(
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_DATA_DIR=str(tmp_path),
        VIRTUOSO_REFRESH_SECONDS="2",
        VIRTUOSO_SYMBOLS=FEW_SYMBOLS,
    ) as app:
        yield app


async def open_without_sockets(
    browser: Browser, url: str, problems: PageProblems, **options
) -> Page:
    context = await browser.new_context(**options)
    await context.add_init_script(THROWING_WEBSOCKET)
    page = await context.new_page()
    await page.clock.install()  # its timers (the polls), on a clock the test can move on
    problems.watch(page)
    await page.goto(url)
    return page


async def wait_text(page: Page, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent === text",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


async def create_rule(served: ServedApp, rule: dict) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(served.base + "/api/alerts/rules", json=rule, headers=headers) as response,
    ):
        assert response.status == 201, await response.text()


async def test_a_page_without_a_websocket_polls_data_and_alerts(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    desktop = await open_without_sockets(browser, served.base + "/", problems)
    phone = await open_without_sockets(browser, served.base + "/mobile", problems, **PHONE)
    for page in (desktop, phone):
        await page.wait_for_function(
            "() => document.getElementById('connection').dataset.state === 'polling'",
            timeout=WAIT_MS,
        )
        assert await page.evaluate("window.__sockets") >= 1

    await served.next_snapshot()
    for page in (desktop, phone):
        await page.clock.fast_forward(POLL_MS)  # the next poll now, not in up to 2 s
    btc = served.state.pipeline.latest.tickers["BTCUSDT"].last
    await wait_text(desktop, BTC_PRICE, f"{btc:,.2f}")
    await wait_text(phone, BTC_CARD_PRICE, f"{btc:,.2f}")

    rule = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": btc / 2, "level": "info"}
    await create_rule(served, rule)
    await served.next_snapshot()
    await desktop.clock.fast_forward(POLL_MS)
    [alert], _ = await served.state.alerts.store.list_alerts(limit=10)
    await desktop.wait_for_selector(f'#alerts-list li[data-key="{alert.id}"]', timeout=WAIT_MS)
    assert await text_of(desktop, f'#alerts-list li[data-key="{alert.id}"] .alert-status') == (
        "pending"
    )
    assert problems.messages == [], problems.messages
    for page in (desktop, phone):
        await page.context.close()
