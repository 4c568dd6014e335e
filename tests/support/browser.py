"""Headless Chromium for the page tests: Debian's ``/usr/bin/chromium-headless-shell``
(the same Chromium's old headless shell, as Playwright's own headless default; it spends
less than half the full browser's CPU on a page load) driven by Playwright (``make
test`` installs the package; Playwright's own browser download is never used), and the
app served over real HTTP on a free loopback port.

Chromium is told not to reach any host but loopback (``--host-resolver-rules``) and
not to make its background requests (updates, sync, safe browsing)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from playwright.async_api import Browser, ConsoleMessage, Page, async_playwright
from quart import Quart

from app.main.embedded import create_app
from app.services.snapshot import Snapshot
from app.state import EXTENSION, ServiceState
from tests.conftest import ManualClock, eventually, make_settings
from tests.support.markets import CountingMarket
from tests.support.ws_server import serve_app

CHROMIUM = os.environ.get("VIRTUOSO_CHROMIUM", "/usr/bin/chromium-headless-shell")
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("VIRTUOSO_TEST_ARTIFACTS", ROOT / "test-artifacts"))
CHROMIUM_FLAGS = [
    "--no-sandbox",  # root in a container: the sandbox cannot start
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--no-first-run",
    "--no-default-browser-check",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
# A browser context of a 375 px phone (Playwright's new_context options).
PHONE: dict = {
    "viewport": {"width": 375, "height": 812},
    "user_agent": IPHONE,
    "is_mobile": True,
    "has_touch": True,
}


@contextlib.asynccontextmanager
async def chromium() -> AsyncIterator[Browser]:
    if not os.path.exists(CHROMIUM):  # noqa: ASYNC240 (a stat, once per test)
        pytest.fail(f"{CHROMIUM} not found: `make test` installs Debian's chromium-headless-shell")
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class PageProblems:
    """Console errors and uncaught exceptions of one page: a test ends with none."""

    messages: list[str] = field(default_factory=list)

    def watch(self, page: Page) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.messages.append(f"uncaught: {error}"))

    def _console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            self.messages.append(f"console.error: {message.text} ({message.location})")


@dataclass
class ServedApp:
    """The app on real HTTP, on a simulated market a test controls (clock, failures)."""

    base: str
    app: Quart
    market: CountingMarket
    clock: ManualClock
    token: str | None = None  # VIRTUOSO_API_TOKEN, when the app was given one

    @property
    def state(self) -> ServiceState:
        return self.app.extensions[EXTENSION]

    async def api(self, method: str, path: str, body: Any = None) -> dict:
        """Another device's request over real HTTP, with the API token: the JSON answer
        (the test fails on a status of 300 or more)."""
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        async with (
            aiohttp.ClientSession() as session,
            session.request(method, self.base + path, json=body, headers=headers) as response,
        ):
            assert response.status < 300, await response.text()
            return await response.json()

    async def next_snapshot(self, seconds: float = 60.0) -> Snapshot | None:
        """Moves the market on and publishes a snapshot of it now (as the refresh loop
        would). A refresh joins the one in flight, which the loop may have started
        before the move: the second one begins after it."""
        self.clock.advance(seconds)
        await self.state.pipeline.refresh(force=True)
        return await self.state.pipeline.refresh(force=True)


# Pages still open when a test's server stops are dropped after this long, not after the
# 3 s of serve_app: what a page does once its test has ended is not looked at.
# An init script: counts the snapshots the page has handled, by channel, in
# ``window.__snapshots`` (after the page's own handler ran): a message published after
# that count moved reaches the page.
COUNT_SNAPSHOTS = """
const Native = window.WebSocket;
window.__snapshots = {};
window.WebSocket = class extends Native {
  set onmessage(handler) {
    super.onmessage = (event) => {
      handler(event);
      const message = JSON.parse(event.data);
      if (message.type === 'snapshot') {
        window.__snapshots[message.channel] = (window.__snapshots[message.channel] || 0) + 1;
      }
    };
  }
  get onmessage() { return super.onmessage; }
};
"""

PAGE_GRACE_SECONDS = 0.5

# For page tests that name no more symbols than these: a market of three (not the default
# 25) keeps the desktop page's table, and so each page load's CPU, small (0.35 s of
# Chromium's main thread instead of 0.86 s, measured with the DevTools metrics).
FEW_SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


@contextlib.asynccontextmanager
async def served_app(**environ: str) -> AsyncIterator[ServedApp]:
    clock = ManualClock()
    market = CountingMarket(clock)
    app = create_app(make_settings(**environ), source=market, clock=clock)
    async with serve_app(app, graceful_timeout=PAGE_GRACE_SECONDS) as ws_base:
        base = ws_base.replace("ws://", "http://")
        served = ServedApp(base, app, market, clock, environ.get("VIRTUOSO_API_TOKEN"))
        await eventually(lambda: served.state.warmed, seconds=30)
        yield served


async def without_rules(served: ServedApp) -> ServedApp:
    """``served`` with no alert rule stored: the rules an earlier test of a module sharing
    one app left are deleted (through the alert service, as DELETE /api/alerts/rules/<id>
    does, so the cached rule lists are rebuilt)."""
    alerts = served.state.alerts
    for rule in await alerts.list_rules():
        await alerts.delete_rule(rule.id)
    return served


def artifact(name: str) -> Path:
    """A PNG path under the test artifacts directory (kept after the run)."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS / f"{name}.png"


async def screenshot(page: Page, name: str) -> Path:
    """A full-page PNG under the test artifacts directory (kept after the run)."""
    path = artifact(name)
    await page.screenshot(path=str(path), full_page=True)
    return path


# -- fixtures and helpers every page test shares (registered as a plugin by conftest) --


# Every page test runs on the session's event loop (each module's ``pytestmark``), so that
# one Chromium (and one Playwright driver) serves every page test of a pytest process:
# their start was most of each module's first set-up. Async fixtures of page tests say
# ``loop_scope="session"``.


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def session_chromium() -> AsyncIterator[Browser]:
    """Headless Chromium for the page tests of a pytest process (request ``browser``,
    not this)."""
    async with chromium() as launched:
        yield launched


@pytest.fixture
def browser(request: pytest.FixtureRequest, session_chromium: Browser) -> Browser:
    """The process's Chromium for one test; the contexts the test opened are closed when
    it ends.

    A test that also has a ``served...`` fixture gets the app set up first, so that
    its contexts are closed before the server stops: a page still connected would
    otherwise hold the server's shutdown for its whole graceful timeout.
    """
    for name in request.fixturenames:
        if name.startswith("served"):
            request.getfixturevalue(name)
    request.getfixturevalue("_contexts_closed")
    return session_chromium


@pytest_asyncio.fixture(loop_scope="session")
async def _contexts_closed(session_chromium: Browser) -> AsyncIterator[None]:
    yield
    for context in session_chromium.contexts:
        await context.close()


@pytest_asyncio.fixture(loop_scope="session")
async def served() -> AsyncIterator[ServedApp]:
    """The app on a simulated market of three symbols (``FEW_SYMBOLS``) over real HTTP; a
    test module may override it (test_browser.py serves all 25)."""
    async with served_app(VIRTUOSO_SYMBOLS=FEW_SYMBOLS) as app:
        yield app


async def open_page(browser: Browser, url: str, problems: PageProblems, **options) -> Page:
    """A new context and page (``options``: the context's), watched for problems, at ``url``."""
    context = await browser.new_context(**options)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(url)
    return page


async def text_of(page: Page, selector: str) -> str:
    """The stripped text of the first element matching ``selector``."""
    return (await page.locator(selector).first.text_content() or "").strip()
