"""A pair delisted while pages are open, in Chromium, with the app on the real ccxt
against the loopback fake Bybit: the open desktop page (table row, watchlist, chart
header) and phone page (card) mark it from the live updates, a new page shows it
marked, and the marks go when the exchange lists it again. A watchlist holding a pair
the service no longer serves can still be changed, and a refused save says why."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, Page

from app.main.embedded import create_app
from app.state import EXTENSION, ServiceState
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, exchange_settings
from tests.support.browser import PAGE_GRACE_SECONDS, PHONE, PageProblems, open_page, text_of
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


WAIT_MS = 20_000
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
SOL_ROW = "#symbols-body tr[data-symbol='SOLUSDT']"
SOL_CARD = "#cards article[data-key='SOLUSDT']"
SOL_WATCHED = "#watchlist li[data-key='SOLUSDT']"
WATCHED_KEYS = "nodes => nodes.map(n => n.dataset.key)"


@pytest_asyncio.fixture(loop_scope="session")
async def fake() -> AsyncIterator[FakeBybit]:
    async with FakeBybit() as exchange:
        yield exchange


@contextlib.asynccontextmanager
async def served_bybit(
    fake: FakeBybit, clock: ManualClock, **environ: str
) -> AsyncIterator[tuple[str, ServiceState]]:
    """The app on ccxt against ``fake`` over real HTTP: (base URL, its state)."""
    settings = exchange_settings(fake.base_url, SYMBOLS, **environ)
    app = create_app(settings, clock=clock)
    async with serve_app(app, graceful_timeout=PAGE_GRACE_SECONDS) as base:
        state: ServiceState = app.extensions[EXTENSION]
        await eventually(lambda: state.warmed, seconds=30)
        yield base.replace("ws://", "http://"), state


async def refresh(state: ServiceState, clock: ManualClock) -> None:
    """A refresh a minute later (the markets are checked again), announced live."""
    clock.advance(61)
    await state.pipeline.refresh(force=True)


async def wait_marked(page: Page, selector: str, marked: bool) -> None:
    """Until ``selector`` is marked (class ``delisted``) or unmarked."""
    await page.wait_for_function(
        "([selector, marked]) => {"
        "  const node = document.querySelector(selector);"
        "  return !!node && node.classList.contains('delisted') === marked; }",
        arg=[selector, marked],
        timeout=WAIT_MS,
    )


def refused_save(message: str) -> bool:
    """Chromium's own line for a watchlist save answered 400 (refused) or 503 (store
    down), or for an alerts read answered 503 while Redis (their store too) is down —
    the page reads the alerts again whenever it polls."""
    refused = "status of 400" in message or "status of 503" in message
    alerts_down = "/api/alerts" in message and "status of 503" in message
    return "Failed to load resource" in message and (
        ("/api/session/watchlist" in message and refused) or alerts_down
    )


async def badge_of(page: Page, selector: str) -> str:
    return await text_of(page, f"{selector} .badge-listing")


async def test_open_and_new_pages_mark_a_delisted_pair_until_it_is_relisted(
    browser: Browser, fake: FakeBybit, clock: ManualClock
) -> None:
    problems = PageProblems()
    async with served_bybit(fake, clock) as (base, state):
        desktop = await open_page(browser, base + "/", problems)
        phone = await open_page(browser, base + "/mobile", problems, **PHONE)
        await desktop.wait_for_selector(SOL_ROW, timeout=WAIT_MS)
        await phone.wait_for_selector(SOL_CARD, timeout=WAIT_MS)
        await desktop.click(f"{SOL_ROW} button.star")  # watched
        await desktop.wait_for_selector(SOL_WATCHED, timeout=WAIT_MS)
        await desktop.click(f"{SOL_ROW} td.symbol")  # charted
        assert await text_of(desktop, "#chart-symbol") == "SOLUSDT"
        assert not await desktop.is_visible("#chart-listing")
        await wait_marked(desktop, SOL_ROW, False)

        fake.delist("SOLUSDT")
        await refresh(state, clock)
        await wait_marked(desktop, SOL_ROW, True)
        assert await badge_of(desktop, SOL_ROW) == "no longer listed"
        assert await text_of(desktop, f"{SOL_ROW} td.price") == "—"
        assert await text_of(desktop, f"{SOL_ROW} td.score") == "—"
        title = await desktop.get_attribute(f"{SOL_ROW} .badge-listing", "title")
        assert title and "no longer lists" in title and "last price" in title
        await wait_marked(desktop, SOL_WATCHED, True)
        assert await badge_of(desktop, SOL_WATCHED) == "no longer listed"
        assert await text_of(desktop, "#chart-listing") == "no longer listed"
        await wait_marked(phone, SOL_CARD, True)
        assert await badge_of(phone, SOL_CARD) == "no longer listed"
        assert await text_of(phone, f"{SOL_CARD} .card-score-value") == "—"
        assert await badge_of(desktop, "#symbols-body tr[data-symbol='BTCUSDT']") == ""

        fresh = await open_page(browser, base + "/", problems)
        await wait_marked(fresh, SOL_ROW, True)
        fresh_phone = await open_page(browser, base + "/mobile", problems, **PHONE)
        await wait_marked(fresh_phone, SOL_CARD, True)

        fake.relist("SOLUSDT")
        await refresh(state, clock)
        for page, selector in ((desktop, SOL_ROW), (desktop, SOL_WATCHED), (phone, SOL_CARD)):
            await wait_marked(page, selector, False)
        assert not await desktop.is_visible("#chart-listing")
        assert not await desktop.is_visible(f"{SOL_ROW} .badge-listing")
        await desktop.wait_for_function(
            f"() => document.querySelector(\"{SOL_ROW} td.price\").textContent !== '—'",
            timeout=WAIT_MS,
        )
        await wait_marked(fresh, SOL_ROW, False)
        assert problems.messages == [], problems.messages
        for page in (desktop, phone, fresh, fresh_phone):
            await page.context.close()  # before the server stops under them


async def test_a_watchlist_with_a_pair_no_longer_served_can_be_changed(
    browser: Browser, fake: FakeBybit, clock: ManualClock, redis
) -> None:
    """Saved while SOLUSDT was listed; after a restart on which the exchange no longer
    lists it, the page shows it marked "not served", a change keeps it (marked, and
    says so), and it can be removed; with the session store down, a save says the
    server's reason."""
    problems = PageProblems()
    shared = {
        "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
        "VIRTUOSO_SECRET_KEY": "a-session-key-for-the-page-test",
        # The rate limits' Redis calls are bounded to 100 ms, and their time-outs count
        # on the one Redis breaker: on a busy machine it opened, and the sessions (the
        # watchlist) were not read. This test is not about rate limits.
        "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
    }
    context = await browser.new_context()  # one cookie jar across both servers
    async with served_bybit(fake, clock, **shared) as (base, _):
        page = await context.new_page()
        problems.watch(page)
        await page.goto(base + "/")
        await page.wait_for_selector(SOL_ROW, timeout=WAIT_MS)
        for symbol in ("SOLUSDT", "BTCUSDT"):
            await page.click(f"#symbols-body tr[data-symbol='{symbol}'] button.star")
            await page.wait_for_selector(f"#watchlist li[data-key='{symbol}']", timeout=WAIT_MS)
        assert problems.messages == [], problems.messages
        await page.close()
    fake.delist("SOLUSDT")
    async with served_bybit(fake, clock, **shared) as (base, state):
        # The first app's refresh marked "refreshed" in Redis (for 0.9 of the interval,
        # real time), so the restarted one may have warmed on the first one's views,
        # SOLUSDT still listed; its own refresh comes one interval later, which on a
        # busy machine was past the page's wait. A refresh now is the restart's.
        await refresh(state, clock)
        page = await context.new_page()
        problems.watch(page)
        await page.goto(base + "/")
        await page.wait_for_selector("#symbols-body tr[data-symbol='ETHUSDT']", timeout=WAIT_MS)
        await wait_marked(page, SOL_WATCHED, True)
        assert await badge_of(page, SOL_WATCHED) == "not served"
        await page.click("#symbols-body tr[data-symbol='ETHUSDT'] button.star")
        await page.wait_for_selector("#watchlist li[data-key='ETHUSDT']", timeout=WAIT_MS)
        status = await text_of(page, "#watchlist-status")  # kept, marked, and said so
        assert status == "Kept in your watchlist, not served now: SOLUSDT."
        assert await badge_of(page, SOL_WATCHED) == "not served"
        keys = await page.eval_on_selector_all("#watchlist li", WATCHED_KEYS)
        assert sorted(keys) == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
        await page.click(f"{SOL_WATCHED} .watch-remove")  # no table row: removed from here
        await page.wait_for_selector(SOL_WATCHED, state="detached", timeout=WAIT_MS)

        redis.stop()  # the session store is down: the save fails, the page says why
        await page.click("#symbols-body tr[data-symbol='XRPUSDT'] button.star")
        await page.wait_for_function(
            "() => document.getElementById('watchlist-status').textContent"
            ".includes('sessions cannot be read or saved')",
            timeout=WAIT_MS,
        )
        assert await text_of(page, "#symbols-body tr[data-symbol='XRPUSDT'] button.star") == "☆"
        # Chromium logs the refused requests themselves; nothing on the page threw
        assert [m for m in problems.messages if not refused_save(m)] == [], problems.messages
        await context.close()
