"""The dashboards operated by keyboard alone, in a real headless Chromium: Tab and
Shift+Tab reach every control, Enter and Space work them (chart a row, star it, sort a
column, switch the timeframe, open the alert rules), every control has an accessible
name, keyboard focus is visible; the chart survives any candles payload and cancels
the requests it replaces without a console error. Each test ends with no console error.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Error, Locator, Page, Route, expect

from tests.conftest import eventually
from tests.support.browser import PHONE, PageProblems, ServedApp, open_page, served_app

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


WAIT_MS = 15_000
DESKTOP = {"width": 1440, "height": 1000}
MAX_TABS = 400  # more than every focusable element of the desktop page
CANDLES = "/api/market/candles/"
# Two animation frames: what the page does with an answer it has received is done.
NEXT_FRAMES = (
    "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"
)


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[ServedApp]:
    """The whole simulated market (25 symbols): the phone page shows its first 20."""
    async with served_app() as app:
        yield app


async def wait_rows(page: Page, count: int) -> None:
    await page.wait_for_function(
        f"() => document.querySelectorAll('#symbols-body tr').length === {count}",
        timeout=WAIT_MS,
    )


async def focused_matches(page: Page, selector: str) -> bool:
    return await page.evaluate(
        "(selector) => document.activeElement?.matches(selector) ?? false", selector
    )


async def tab_to(page: Page, selector: str, key: str = "Tab") -> None:
    """Presses ``key`` (Tab or Shift+Tab) until the focused element matches ``selector``."""
    for _ in range(MAX_TABS):
        if await focused_matches(page, selector):
            return
        await page.keyboard.press(key)
    raise AssertionError(f"{key} never reached {selector}")


async def focused_name(page: Page) -> str | None:
    """The accessible name of the focused element, as assistive technology gets it."""
    return await page.evaluate(
        "() => { const e = document.activeElement;"
        " return e.getAttribute('aria-label') || e.textContent.trim(); }"
    )


def chart_image(page: Page, symbol: str, timeframe: str) -> Locator:
    """The chart container, an image named by its symbol and timeframe."""
    return page.get_by_role("img", name=f"Candlestick chart of {symbol}, {timeframe} candles")


async def unnamed_controls(page: Page) -> list[str]:
    """Controls of the page's ARIA tree that have no accessible name."""
    tree = await page.locator("body").aria_snapshot()
    roles = ("button", "link", "textbox", "searchbox", "checkbox", "combobox", "spinbutton", "img")
    pattern = re.compile(rf"^\s*- ({'|'.join(roles)})(\s*\[[^\]]*\])*\s*:?\s*$")
    return [line for line in tree.splitlines() if pattern.match(line)]


async def test_desktop_is_operable_by_keyboard(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_page(browser, served.base + "/", problems, viewport=DESKTOP)
    await wait_rows(page, len(served.state.known_symbols))
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    await page.wait_for_function(
        "() => document.querySelector('#watchlist-empty') && !document.querySelector("
        "'#symbols-body tr button.star[aria-pressed=\"true\"]')",
        timeout=WAIT_MS,
    )

    # Sort a column from the keyboard: the header button takes Enter, the header cell
    # says the direction.
    change_header = page.get_by_role("columnheader", name="24h %")
    await tab_to(page, "th button[data-sort='change_24h']")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", ""), "keyboard focus is not visible"
    await page.keyboard.press("Enter")
    await expect(change_header).to_have_attribute("aria-sort", "descending")
    await page.keyboard.press("Enter")
    await expect(change_header).to_have_attribute("aria-sort", "ascending")
    await page.wait_for_function(
        "() => { const v = [...document.querySelectorAll('#symbols-body tr td.change_24h')]"
        ".map(c => parseFloat(c.textContent));"
        " return v.every((x, i) => i === 0 || v[i - 1] <= x); }",
        timeout=WAIT_MS,
    )
    volume_header = page.get_by_role("columnheader", name="Volume")
    assert await volume_header.get_attribute("aria-sort") is None

    # A row's symbol is a button: Enter charts it; the chart's name follows.
    eth_chart = "#symbols-body tr[data-symbol='ETHUSDT'] button.chart-symbol"
    await tab_to(page, eth_chart)
    assert await focused_name(page) == "Chart ETHUSDT"
    async with page.expect_response(lambda r: "/api/market/candles/ETHUSDT?timeframe=1h" in r.url):
        await page.keyboard.press("Enter")
    await expect(page.locator("#chart-symbol")).to_have_text("ETHUSDT")
    await expect(
        page.get_by_role("img", name="Candlestick chart of ETHUSDT, 1h candles")
    ).to_be_visible()
    await expect(page.locator(eth_chart)).to_have_attribute("aria-current", "true")

    # Shift+Tab goes back to the row's ☆, named by what it does; Space toggles it.
    await page.keyboard.press("Shift+Tab")
    eth_star = "#symbols-body tr[data-symbol='ETHUSDT'] button.star"
    assert await focused_matches(page, eth_star)
    assert await focused_name(page) == "Add ETHUSDT to watchlist"
    assert await page.get_attribute(eth_star, "aria-pressed") == "false"
    await page.keyboard.press("Space")
    await expect(page.locator(eth_star)).to_have_attribute("aria-pressed", "true")
    await expect(page.locator(eth_star)).to_have_attribute(
        "aria-label", "Remove ETHUSDT from watchlist"
    )
    watched = page.locator("#watchlist li[data-key='ETHUSDT'] button.quote-symbol")
    await expect(watched).to_have_accessible_name("Chart ETHUSDT")

    # The timeframe switch: Enter and Space on its buttons, aria-pressed follows.
    async with page.expect_response(lambda r: "/api/market/candles/ETHUSDT?timeframe=4h" in r.url):
        await tab_to(page, "#timeframes button[data-timeframe='4h']")
        await page.keyboard.press("Enter")
    await expect(page.locator("#timeframes button[data-timeframe='4h']")).to_have_attribute(
        "aria-pressed", "true"
    )
    await expect(page.locator("#timeframes button[data-timeframe='1h']")).to_have_attribute(
        "aria-pressed", "false"
    )
    async with page.expect_response(lambda r: "timeframe=1d" in r.url):
        await page.keyboard.press("Tab")
        assert await focused_matches(page, "#timeframes button[data-timeframe='1d']")
        await page.keyboard.press("Space")
    await expect(
        page.get_by_role("img", name="Candlestick chart of ETHUSDT, 1d candles")
    ).to_be_visible()

    # Chart another symbol, then the watched one from the watchlist with the keyboard.
    await tab_to(page, "#symbols-body tr[data-symbol='SOLUSDT'] button.chart-symbol", "Shift+Tab")
    await page.keyboard.press("Enter")
    await expect(page.locator("#chart-symbol")).to_have_text("SOLUSDT")
    await tab_to(page, "#watchlist li[data-key='ETHUSDT'] button.quote-symbol")
    await page.keyboard.press("Space")
    await expect(page.locator("#chart-symbol")).to_have_text("ETHUSDT")

    # The alert rules open from the keyboard; every field has a label.
    await tab_to(page, ".rules summary")
    await page.keyboard.press("Enter")
    assert await page.evaluate("document.querySelector('details.rules').open")
    labels = ("API token", "Kind", "Symbol", "Threshold", "Hysteresis", "Level", "Cooldown s")
    for label in (*labels, "Title"):
        await expect(page.get_by_label(label, exact=True)).to_have_count(1)
    await page.keyboard.press("Tab")
    assert await focused_matches(page, "#api-token")

    assert await unnamed_controls(page) == []
    assert problems.messages == []


async def test_star_buttons_and_sort_headers_are_named(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_page(browser, served.base + "/", problems, viewport=DESKTOP)
    symbols = served.state.known_symbols
    await wait_rows(page, len(symbols))
    for symbol in symbols:
        star = page.get_by_role("button", name=f"Add {symbol} to watchlist", exact=True)
        await expect(star).to_have_attribute("aria-pressed", "false")
        chart = page.get_by_role("button", name=f"Chart {symbol}", exact=True)
        await expect(chart).to_have_count(1)
    for name in ("Symbol", "Price", "24h %", "Volume", "Confluence", "Signal"):
        await expect(
            page.get_by_role("columnheader", name=name).get_by_role("button")
        ).to_have_count(1)
    await expect(page.get_by_role("columnheader", name="Volume")).to_have_attribute(
        "aria-sort", "descending"
    )
    await expect(
        page.get_by_role("img", name=re.compile("^Candlestick chart of BTCUSDT"))
    ).to_have_count(1)
    assert problems.messages == []


def candles_route(rows: list) -> object:
    async def handle(route: Route) -> None:
        await route.fulfill(
            status=200,
            content_type="application/json",
            body=json.dumps({"candles": rows, "stale": False}),
        )

    return handle


async def test_chart_survives_any_candles_payload(browser: Browser, served: ServedApp) -> None:
    """Null values, repeated and decreasing times, wrong shapes: the page draws what it can."""
    hour = 3_600_000
    t0 = 1_700_000_000_000
    hostile = [
        [t0 + 2 * hour, 10, 12, 9, 11, 5],
        [t0, 10, 11, 9, 10, 1],
        [t0 + hour, None, None, None, None, 0],  # a minute without trades, as sent
        [t0 + hour, 10, 13, 9, 12, 3],
        [t0 + hour, 10, 14, 9, 13, 3],  # repeated time: the last one is kept
        [t0 + 3 * hour, "NaN", 1, 1, 1, 1],
        [t0 + 4 * hour],
        None,
        "candle",
        {"t": t0},
        [t0 + 5 * hour, 11, 12, 10, 11.5, 2],
    ]
    problems = PageProblems()
    context = await browser.new_context(viewport=DESKTOP)
    await context.route("**/api/market/candles/**", candles_route(hostile))
    page = await context.new_page()
    problems.watch(page)
    await page.goto(served.base + "/")
    await wait_rows(page, len(served.state.known_symbols))
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    await page.click("#timeframes button[data-timeframe='5m']")
    await page.click("#timeframes button[data-timeframe='1h']")
    await expect(page.locator("#chart-status")).to_have_text("")
    assert problems.messages == []


async def test_replaced_candle_requests_are_cancelled_quietly(
    browser: Browser, served: ServedApp
) -> None:
    """Switching faster than the candles arrive aborts the older requests: no console
    error, no 'unavailable' message, and the last choice is what is drawn."""
    problems = PageProblems()
    context = await browser.new_context(viewport=DESKTOP)
    seen: list[str] = []

    async def slow(route: Route) -> None:
        seen.append(route.request.url)
        await asyncio.sleep(0.3)
        with contextlib.suppress(Error):  # the page aborted it meanwhile
            await route.continue_()

    await context.route("**/api/market/candles/**", slow)
    page = await context.new_page()
    problems.watch(page)
    failed: list[str] = []
    finished: list[str] = []  # candle requests answered
    page.on("requestfailed", lambda r: failed.append(r.url))
    page.on("requestfinished", lambda r: finished.append(r.url) if CANDLES in r.url else None)
    await page.goto(served.base + "/")
    await wait_rows(page, len(served.state.known_symbols))
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    for timeframe in ("1m", "5m", "30m", "4h"):
        await page.click(f"#timeframes button[data-timeframe='{timeframe}']")
    await page.wait_for_function(
        "() => document.querySelector('#chart').getAttribute('aria-label').endsWith('4h candles')",
        timeout=WAIT_MS,
    )
    # the replaced requests aborted, the last one answered, and the page done with both
    await eventually(
        lambda: (
            any("timeframe=1m" in url for url in failed)
            and any("timeframe=4h" in url for url in finished)
        ),
        seconds=WAIT_MS / 1000,
    )
    await page.evaluate(NEXT_FRAMES)
    assert any("timeframe=1m" in url for url in failed), (seen, failed)
    await expect(page.locator("#chart-status")).to_have_text("")
    answered = len(finished)
    await served.next_snapshot()  # the periodic check on a dashboard update
    await eventually(lambda: len(finished) > answered, seconds=WAIT_MS / 1000)
    await page.evaluate(NEXT_FRAMES)
    assert problems.messages == []


async def test_phone_page_is_operable_by_keyboard(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_page(
        browser,
        served.base + "/mobile",
        problems,
        **PHONE,
    )
    await page.wait_for_function(
        "() => document.querySelectorAll('#cards .card').length === 20", timeout=WAIT_MS
    )
    await expect(page.get_by_role("meter", name="BTCUSDT confluence score")).to_have_count(1)
    assert await unnamed_controls(page) == []
    await tab_to(page, "a[href='/?view=desktop']")
    assert await focused_name(page) == "Desktop view"
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline not in ("none", "")
    await page.keyboard.press("Enter")
    await page.wait_for_url("**/?view=desktop", timeout=WAIT_MS)
    await wait_rows(page, len(served.state.known_symbols))
    assert problems.messages == []
