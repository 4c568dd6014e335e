"""Alerts a trader can trust, in real Chromium against the app on real HTTP and /ws:
an acknowledgement made on one device shows on every open page without a reload and
on a phone opened afterwards; Acknowledge pressed on a page that had not heard of it
yet shows the alert's current status, not a failure; with WebSockets blocked the
desktop page polls every alert and every status change (and the phone page its
payload), and when the socket returns the list stays complete and live."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, WebSocketRoute

from tests.conftest import eventually
from tests.support.browser import FEW_SYMBOLS, PHONE, PageProblems, ServedApp, served_app

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


TOKEN = "alert-pages-token"
WAIT_MS = 20_000
RECONNECT_WAIT_MS = 60_000  # the page's back-off after refused sockets reaches 16-30 s
POLL_MS = 2_000  # the pages poll every refresh interval (VIRTUOSO_REFRESH_SECONDS below)
BACKOFF_MAX_MS = 30_000  # the longest wait between reconnect attempts (frontend/src/live.js)


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


async def fire(served: ServedApp, *symbols: str, fraction: float = 0.5) -> list[dict]:
    """One critical rule per symbol that fires on the next snapshot; the new alerts."""
    before = {a.id for a in (await served.state.alerts.store.list_alerts(limit=200))[0]}
    for symbol in symbols:
        price = served.state.pipeline.latest.tickers[symbol].last
        rule = {
            "kind": "price_above",
            "symbol": symbol,
            "threshold": price * fraction,
            "level": "critical",
            "title": f"{symbol} above {fraction:g}",
        }
        await served.api("POST", "/api/alerts/rules", rule)
    await served.next_snapshot()
    alerts, _ = await served.state.alerts.store.list_alerts(limit=200)
    new = [a.to_dict() for a in alerts if a.id not in before]
    assert len(new) == len(symbols)
    return new


async def open_on(context: BrowserContext, url: str, problems: PageProblems) -> Page:
    page = await context.new_page()
    problems.watch(page)
    await page.goto(url)
    return page


async def with_token(page: Page) -> None:
    await page.click(".rules summary")  # the token field is in the rules section
    await page.fill("#api-token", TOKEN)
    await page.click("#token-form button[type=submit]")


async def wait_status(page: Page, alert_id: str, status: str, wait_ms: int = WAIT_MS) -> None:
    """Until the desktop list shows alert ``alert_id`` with ``status``."""
    await page.wait_for_function(
        """([id, status]) => document.querySelector(
             `#alerts-list li[data-key="${id}"] .alert-status`)?.textContent === status""",
        arg=[alert_id, status],
        timeout=wait_ms,
    )


async def shown_alerts(page: Page) -> dict[str, str]:
    """Alert id → status text of every alert in the desktop list."""
    return await page.evaluate(
        """() => Object.fromEntries([...document.querySelectorAll('#alerts-list li')]
             .map((li) => [li.dataset.key, li.querySelector('.alert-status').textContent]))"""
    )


async def wait_critical(page: Page, ids: list[str], wait_ms: int = WAIT_MS) -> None:
    """Until the phone's pending critical alerts are exactly ``ids`` (in any order:
    alerts of one snapshot share their creation time)."""
    await page.wait_for_function(
        """(ids) => JSON.stringify([...document.querySelectorAll('#critical-alerts li')]
             .map((li) => li.dataset.key).sort()) === JSON.stringify(ids)""",
        arg=sorted(ids),
        timeout=wait_ms,
    )


async def wait_connection(page: Page, state: str, wait_ms: int = WAIT_MS) -> None:
    await page.wait_for_function(
        "(state) => document.getElementById('connection').dataset.state === state",
        arg=state,
        timeout=wait_ms,
    )


def ack_button_visible(page: Page, alert_id: str):
    return page.locator(f'#alerts-list li[data-key="{alert_id}"] button.alert-ack').is_visible()


def refused_statuses(problems: PageProblems) -> list[str]:
    """The problems that are not Chromium's line for an answered 409 request."""
    return [m for m in problems.messages if "status of 409" not in m]


async def test_an_acknowledgement_reaches_every_page_and_a_phone_opened_later(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    muted = {"alerts": False}  # page two's alert messages dropped while True

    def relay(ws: WebSocketRoute) -> None:
        server = ws.connect_to_server()

        def to_page(message: str | bytes) -> None:
            if muted["alerts"] and isinstance(message, str) and '"type":"alert"' in message:
                return
            ws.send(message)

        server.on_message(to_page)

    one = await open_on(await browser.new_context(), served.base + "/", problems)
    two_context = await browser.new_context()
    await two_context.route_web_socket("**/ws", relay)
    two = await open_on(two_context, served.base + "/", problems)
    phone = await open_on(await browser.new_context(**PHONE), served.base + "/mobile", problems)
    for page in (one, two, phone):
        await wait_connection(page, "live")
    for page in (one, two):
        await with_token(page)

    (first,) = await fire(served, "BTCUSDT")
    for page in (one, two):
        await wait_status(page, first["id"], "pending")
    await wait_critical(phone, [first["id"]])

    await one.locator(f'#alerts-list li[data-key="{first["id"]}"] button.alert-ack').click()
    await wait_status(one, first["id"], "acknowledged")
    await wait_status(two, first["id"], "acknowledged")  # no reload
    assert not await ack_button_visible(two, first["id"])
    await wait_critical(phone, [])
    assert await phone.locator("#critical-empty").is_visible()

    # A phone opened after the acknowledgement: its payload and its /ws snapshot
    # agree that nothing is pending; the next alert (after the snapshot, on the same
    # socket) shows alone.
    later = await open_on(await browser.new_context(**PHONE), served.base + "/mobile", problems)
    await wait_connection(later, "live")
    (second,) = await fire(served, "ETHUSDT")
    for page in (phone, later):
        await wait_critical(page, [second["id"]])

    # Page two misses the live acknowledgement of the second alert (acknowledged on
    # another device), then presses Acknowledge: the 409 shows the current status.
    await wait_status(two, second["id"], "pending")
    muted["alerts"] = True
    await served.api("POST", f"/api/alerts/{second['id']}/ack")
    await wait_status(one, second["id"], "acknowledged")
    assert (await shown_alerts(two))[second["id"]] == "pending"
    await two.locator(f'#alerts-list li[data-key="{second["id"]}"] button.alert-ack').click()
    await wait_status(two, second["id"], "acknowledged")
    said = "() => document.getElementById('rules-status').textContent"
    await two.wait_for_function(f"{said}.includes('already acknowledged')", timeout=WAIT_MS)
    assert not await ack_button_visible(two, second["id"])
    for page in (phone, later):
        await wait_critical(page, [])
    assert refused_statuses(problems) == []


async def test_without_websockets_the_pages_poll_every_alert_and_status(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    blocked = {"ws": True}
    refused = 0

    async def socket(ws: WebSocketRoute) -> None:
        nonlocal refused
        if not blocked["ws"]:
            ws.connect_to_server()  # messages flow both ways unchanged
            return
        refused += 1
        await ws.close(code=1013, reason="test: a proxy without WebSockets")

    # Two alerts of one symbol and one of another, before the pages open.
    btc_high, eth = await fire(served, "BTCUSDT", "ETHUSDT")
    (btc_low,) = await fire(served, "BTCUSDT", fraction=0.25)
    desktop_context = await browser.new_context()
    phone_context = await browser.new_context(**PHONE)
    for context in (desktop_context, phone_context):
        await context.route_web_socket("**/ws", socket)
    revalidated: list[str] = []
    desktop = await desktop_context.new_page()
    phone = await phone_context.new_page()
    for page in (desktop, phone):
        await page.clock.install()  # their timers (polls, reconnects), moved on by the test
        problems.watch(page)
    desktop.on(
        "request",
        lambda r: (
            revalidated.append(r.headers.get("if-none-match", ""))
            if "/api/alerts?" in r.url
            else None
        ),
    )
    await desktop.goto(served.base + "/")
    await phone.goto(served.base + "/mobile")
    for page in (desktop, phone):
        await wait_connection(page, "polling")
    for alert in (btc_high, btc_low, eth):
        await wait_status(desktop, alert["id"], "pending")
    await wait_critical(phone, await pending_critical(served))

    # While polling: a new alert, an acknowledgement and a resolution, made elsewhere.
    (sol,) = await fire(served, "SOLUSDT")
    await served.api("POST", f"/api/alerts/{btc_high['id']}/ack")
    await served.api("POST", f"/api/alerts/{eth['id']}/resolve")
    for page in (desktop, phone):
        await page.clock.fast_forward(POLL_MS)  # the next poll now, not in up to 2 s
    await wait_status(desktop, sol["id"], "pending")
    await wait_status(desktop, btc_high["id"], "acknowledged")
    await wait_status(desktop, eth["id"], "resolved")
    await eventually(lambda: any(revalidated), seconds=WAIT_MS / 1000)  # ETag revalidation
    pending = await pending_critical(served)
    await wait_critical(phone, pending)
    assert btc_high["id"] not in pending and eth["id"] not in pending

    # The socket returns: the snapshot keeps every alert with its status, and what
    # changes next arrives live.
    blocked["ws"] = False
    for page in (desktop, phone):
        await page.clock.fast_forward(BACKOFF_MAX_MS)  # the next reconnect attempt, now
        await wait_connection(page, "live", RECONNECT_WAIT_MS)
    await served.api("POST", f"/api/alerts/{sol['id']}/ack")
    (later,) = await fire(served, "ETHUSDT", fraction=0.25)
    await wait_status(desktop, sol["id"], "acknowledged")
    await wait_status(desktop, later["id"], "pending")
    stored, _ = await served.state.alerts.store.list_alerts()
    assert await shown_alerts(desktop) == {a.id: a.status for a in stored}
    await wait_critical(phone, await pending_critical(served))
    assert refused >= 2 and problems.messages == []


async def pending_critical(served: ServedApp) -> list[str]:
    """The ids of the pending critical alerts a phone shows (the newest 10)."""
    alerts, _ = await served.state.alerts.store.list_alerts(
        status="pending", level="critical", limit=10
    )
    return [a.id for a in alerts]
