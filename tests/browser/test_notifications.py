"""Browser notifications of critical alerts, in real Chromium against the app on real
HTTP and /ws: the permission is asked only when the button is pressed (never on load);
with it granted, a critical alert that arrives live is shown once as a system
notification (its title, tagged with its id), a warning never, a status change or the
replay of a reload never again; turned off on the page, none; with the permission
denied, the button says it is blocked.

An init script wraps the browser's own ``Notification``: each construction and each
``requestPermission`` call is recorded (and then made by the native API)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page, expect

from tests.support.browser import COUNT_SNAPSHOTS, FEW_SYMBOLS, PageProblems, ServedApp, served_app

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")

TOKEN = "notifications-test-token"
WAIT_MS = 20_000
RECORD_NOTIFICATIONS = """
window.__notifications = [];
window.__permissionRequests = 0;
const NativeNotification = window.Notification;
if (NativeNotification) {
  class Recorded extends NativeNotification {
    constructor(title, options) {
      window.__notifications.push({ title, body: options?.body, tag: options?.tag });
      super(title, options);
    }
  }
  Recorded.requestPermission = (...args) => {
    window.__permissionRequests += 1;
    return NativeNotification.requestPermission(...args);
  };
  window.Notification = Recorded;
}
"""


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[ServedApp]:
    async with served_app(
        VIRTUOSO_API_TOKEN=TOKEN, VIRTUOSO_DATA_DIR=str(tmp_path), VIRTUOSO_SYMBOLS=FEW_SYMBOLS
    ) as app:
        yield app


async def fire(served: ServedApp, symbol: str, level: str) -> dict:
    """A rule of ``level`` on ``symbol`` that fires on the next snapshot; its alert."""
    before = {a.id for a in (await served.state.alerts.store.list_alerts(limit=200))[0]}
    price = served.state.pipeline.latest.tickers[symbol].last
    rule = {
        "kind": "price_above",
        "symbol": symbol,
        "threshold": price * 0.5,
        "level": level,
        "title": f"{symbol} {level} test",
    }
    await served.api("POST", "/api/alerts/rules", rule)
    await served.next_snapshot()
    alerts, _ = await served.state.alerts.store.list_alerts(limit=200)
    (new,) = [a.to_dict() for a in alerts if a.id not in before]
    return new


async def open_desktop(
    browser: Browser, served: ServedApp, problems: PageProblems, denied: bool = False, **options
) -> Page:
    """The desktop page in a new context (``options``: the context's), notifications
    recorded; ``denied``: the notification permission denied, as in the browser's
    settings (Chromium's own permission setting, through its DevTools protocol)."""
    context = await browser.new_context(**options)
    for script in (RECORD_NOTIFICATIONS, COUNT_SNAPSHOTS):
        await context.add_init_script(script)
    page = await context.new_page()
    problems.watch(page)
    if denied:
        target = await (await context.new_cdp_session(page)).send("Target.getTargetInfo")
        await (await browser.new_browser_cdp_session()).send(
            "Browser.setPermission",
            {
                "permission": {"name": "notifications"},
                "setting": "denied",
                "origin": served.base,
                "browserContextId": target["targetInfo"]["browserContextId"],
            },
        )
    await page.goto(served.base + "/")
    return page


async def wait_live(page: Page) -> None:
    """Until the page has handled the alerts snapshot: a later alert reaches it live."""
    await page.wait_for_function("() => (window.__snapshots || {}).alerts > 0", timeout=WAIT_MS)


async def wait_status(page: Page, alert_id: str, status: str) -> None:
    await page.wait_for_function(
        """([id, status]) => document.querySelector(
             `#alerts-list li[data-key="${id}"] .alert-status`)?.textContent === status""",
        arg=[alert_id, status],
        timeout=WAIT_MS,
    )


async def notifications(page: Page) -> list[dict]:
    return await page.evaluate("() => window.__notifications")


async def permission_requests(page: Page) -> int:
    return await page.evaluate("() => window.__permissionRequests")


async def test_permission_is_asked_only_when_the_button_is_pressed(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_desktop(browser, served, problems)
    button = page.get_by_role("button", name="Enable notifications")
    await expect(button).to_be_visible()
    await wait_live(page)
    assert await permission_requests(page) == 0
    await button.focus()
    await page.keyboard.press("Enter")  # a real button: the keyboard works it
    await page.wait_for_function("() => window.__permissionRequests === 1", timeout=WAIT_MS)
    # The headless shell has no one to answer its prompt (it stays unanswered): granted
    # afterwards, as in the browser's settings, the button follows.
    await page.context.grant_permissions(["notifications"])
    await expect(page.get_by_role("button", name="Turn notifications off")).to_be_visible()
    assert await permission_requests(page) == 1
    assert problems.messages == []


async def test_a_critical_alert_is_notified_once_and_nothing_else(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await open_desktop(browser, served, problems, permissions=["notifications"])
    await expect(page.get_by_role("button", name="Turn notifications off")).to_be_visible()
    await expect(page.locator("#notify-status")).to_contain_text("Notifications on")
    await wait_live(page)
    assert await permission_requests(page) == 0  # granted already: nothing asked

    critical = await fire(served, "BTCUSDT", "critical")
    await wait_status(page, critical["id"], "pending")
    await page.wait_for_function("() => window.__notifications.length > 0", timeout=WAIT_MS)
    assert await notifications(page) == [
        {"title": critical["title"], "body": critical["message"], "tag": critical["id"]}
    ]

    warning = await fire(served, "ETHUSDT", "warning")
    await wait_status(page, warning["id"], "pending")
    assert len(await notifications(page)) == 1  # not the warning

    await page.reload()  # the pending critical alert, replayed on connect, is not new
    await wait_live(page)
    await wait_status(page, critical["id"], "pending")
    await served.api("POST", f"/api/alerts/{critical['id']}/ack")
    await wait_status(page, critical["id"], "acknowledged")
    assert await notifications(page) == []  # nor its status change
    assert problems.messages == []


async def test_turned_off_on_the_page_none_is_shown(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_desktop(browser, served, problems, permissions=["notifications"])
    await page.get_by_role("button", name="Turn notifications off").click()
    await expect(page.get_by_role("button", name="Turn notifications on")).to_be_visible()
    assert await page.evaluate("() => localStorage.getItem('virtuoso.notifications.off')") == "1"
    await wait_live(page)
    critical = await fire(served, "SOLUSDT", "critical")
    await wait_status(page, critical["id"], "pending")
    assert await notifications(page) == []

    await page.reload()  # the choice is kept for the page
    await expect(page.get_by_role("button", name="Turn notifications on")).to_be_visible()
    assert problems.messages == []


async def test_a_denied_permission_says_it_is_blocked(browser: Browser, served: ServedApp) -> None:
    problems = PageProblems()
    page = await open_desktop(browser, served, problems, denied=True)
    await expect(page.locator("#notify-button")).to_have_text("Notifications blocked")
    await expect(page.locator("#notify-status")).to_contain_text("blocked in the browser settings")
    assert await permission_requests(page) == 0
    assert problems.messages == []
