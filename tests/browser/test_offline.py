"""The mobile page as an installable, offline-capable web app: its manifest and icons,
the service worker's headers and shell, and — in headless Chromium against the app on
real HTTP — a reload without network that shows the last data marked offline and
stale with its age, then fresh data again as soon as the network returns."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.sources.simulated import SimulatedMarket
from app.web.pages import assets
from app.web.security import content_security_policy
from tests.conftest import ManualClock, make_settings, started_app
from tests.support.browser import PHONE, PageProblems, ServedApp, screenshot, text_of

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


WAIT_MS = 15_000
DATA_URL = "/api/dashboard/mobile"
BTC_CARD_PRICE = "#cards .card[data-key='BTCUSDT'] .card-price"
SHELL_PREFIX = re.compile(r"^self\.VIRTUOSO_SHELL = (\{.*?\});\n", re.DOTALL)


@pytest_asyncio.fixture(loop_scope="session")
async def web_app(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    async for test_app in started_app(make_settings(), SimulatedMarket(seed=7, clock=clock), clock):
        yield test_app


def shell_of(worker: str) -> dict:
    match = SHELL_PREFIX.match(worker)
    assert match, "GET /sw.js does not start with the shell it keeps"
    return json.loads(match.group(1))


# --- manifest, icons, worker script -----------------------------------------------


async def test_manifest_is_valid_and_its_icons_exist(web_app: QuartTestApp) -> None:
    client = web_app.test_client()
    response = await client.get("/manifest.webmanifest")
    assert response.status_code == 200
    assert response.mimetype == "application/manifest+json"
    manifest = json.loads(await response.get_data(as_text=True))
    assert manifest["name"] and manifest["short_name"] == "Virtuoso"
    assert manifest["start_url"] == "/mobile" and manifest["scope"] == "/mobile"
    assert manifest["display"] == "standalone"
    assert re.fullmatch(r"#[0-9a-f]{6}", manifest["theme_color"])
    assert re.fullmatch(r"#[0-9a-f]{6}", manifest["background_color"])
    found = set()
    for icon in manifest["icons"]:
        assert icon["type"] == "image/png"
        image = await client.get(icon["src"])
        assert image.status_code == 200, icon["src"]
        assert image.mimetype == "image/png"
        data = await image.get_data()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width = int.from_bytes(data[16:20], "big")
        height = int.from_bytes(data[20:24], "big")
        assert icon["sizes"] == f"{width}x{height}", icon["src"]
        found.add((icon["sizes"], icon["purpose"]))
    for size in ("192x192", "512x512"):
        assert (size, "any") in found and (size, "maskable") in found


async def test_mobile_shell_links_the_manifest_desktop_does_not(web_app: QuartTestApp) -> None:
    client = web_app.test_client()
    mobile = await (await client.get("/mobile")).get_data(as_text=True)
    head = mobile.split("</head>")[0]
    assert '<link rel="manifest" href="/manifest.webmanifest">' in head
    assert '<meta name="theme-color"' in head
    assert 'id="badge-offline"' in mobile
    desktop = await (await client.get("/?view=desktop")).get_data(as_text=True)
    assert "manifest" not in desktop


async def test_service_worker_script_headers_and_shell(web_app: QuartTestApp) -> None:
    client = web_app.test_client()
    response = await client.get("/sw.js")
    assert response.status_code == 200
    assert response.mimetype == "text/javascript"
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["Content-Security-Policy"] == content_security_policy()
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    worker = await response.get_data(as_text=True)
    shell = shell_of(worker)
    assert shell["data"] == [DATA_URL]
    assert shell["shell"][0] == "/mobile"
    assert assets.url("mobile.js") in shell["shell"]
    assert assets.url("mobile.css") in shell["shell"]
    assert not any("desktop" in url or "candles-" in url for url in shell["shell"])
    chunks = [url for url in shell["shell"] if "/chunk-" in url]
    assert chunks, "the mobile bundle's chunks are part of the shell"
    for url in shell["shell"]:  # every shell URL answers, so the worker installs
        assert (await client.get(url)).status_code == 200, url
    assert re.fullmatch(r"[0-9a-f]{16}", shell["version"])
    # the same build gives the same version (a browser sees no change, keeps its caches)
    again = shell_of(await (await client.get("/sw.js")).get_data(as_text=True))
    assert again["version"] == shell["version"]


async def test_a_new_build_changes_the_worker_version(
    web_app: QuartTestApp, tmp_path, monkeypatch
) -> None:
    """A rebuilt bundle (new content hash) gives a new shell version, hence new cache
    names; the old caches are deleted when the new worker activates."""
    client = web_app.test_client()
    before = shell_of(await (await client.get("/sw.js")).get_data(as_text=True))
    for path in assets.directory.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    mobile = tmp_path / "mobile.js"
    mobile.write_text(mobile.read_text() + "\n// rebuilt\n")
    monkeypatch.setattr(assets, "directory", tmp_path)
    monkeypatch.setattr(assets, "_versions", {})
    after = shell_of(await (await client.get("/sw.js")).get_data(as_text=True))
    assert after["version"] != before["version"]
    assert after["shell"] != before["shell"]


# --- in Chromium, with the network switched off ------------------------------------


def price_text(value: float) -> str:
    return f"{value:,.2f}"


async def wait_text(page: Page, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([selector, text]) => document.querySelector(selector)?.textContent.trim() === text",
        arg=[selector, text],
        timeout=WAIT_MS,
    )


KEPT_BTC_PRICE = """async (url) => {
    for (const name of await caches.keys()) {
        if (!name.startsWith('virtuoso-mobile-data-')) continue;
        const saved = await (await caches.open(name)).match(url);
        if (!saved) continue;
        const row = (await saved.json()).confluence_scores.find((r) => r.symbol === 'BTCUSDT');
        return row ? row.price : null;
    }
    return null;
}"""


async def wait_kept_btc_price(page: Page, price: float) -> None:
    """Until the payload the worker keeps (in the page's CacheStorage) has BTC at ``price``
    (polled here: wait_for_function does not await a predicate's promise)."""
    kept = None
    for _ in range(WAIT_MS // 100):
        kept = await page.evaluate(KEPT_BTC_PRICE, DATA_URL)
        if kept == price:
            return
        await page.wait_for_timeout(100)
    raise AssertionError(f"the worker keeps BTC at {kept}, not {price}")


def network_off(message: str) -> bool:
    """Chromium's own report of a request it could not send because the network is off
    (the WebSocket's reconnect attempts, the page-load beacon POST): expected offline."""
    return "net::ERR_INTERNET_DISCONNECTED" in message and (
        "WebSocket connection to" in message or "/api/rum" in message
    )


async def phone(browser: Browser) -> tuple[BrowserContext, Page, PageProblems]:
    context = await browser.new_context(**PHONE)
    page = await context.new_page()
    problems = PageProblems()
    problems.watch(page)
    return context, page, problems


async def test_offline_reload_shows_the_last_payload_then_refreshes_online(
    browser: Browser, served: ServedApp
) -> None:
    context, page, problems = await phone(browser)
    await page.goto(served.base + "/mobile")
    first = served.state.pipeline.latest.tickers["BTCUSDT"].last
    await wait_text(page, BTC_CARD_PRICE, price_text(first))
    await page.wait_for_function(
        "() => navigator.serviceWorker.controller !== null", timeout=WAIT_MS
    )
    assert await page.evaluate("navigator.serviceWorker.controller.scriptURL") == (
        served.base + "/sw.js"
    )
    assert not await page.locator("#badge-offline").is_visible()
    # Chromium's own verdict: the manifest parses and the page is installable.
    cdp = await context.new_cdp_session(page)
    manifest = await cdp.send("Page.getAppManifest")
    assert manifest["url"] == served.base + "/manifest.webmanifest"
    assert manifest["errors"] == []
    installability = await cdp.send("Page.getInstallabilityErrors")
    # (a Playwright context is an incognito profile, where Chromium never offers install)
    errors = [e["errorId"] for e in installability["installabilityErrors"]]
    assert [e for e in errors if e != "in-incognito"] == []
    await cdp.detach()

    # A new snapshot arrives live (WebSocket): the page re-reads the payload through the
    # worker, which keeps it — the offline page will show this one.
    snapshot = await served.next_snapshot()
    assert snapshot is not None
    second = snapshot.tickers["BTCUSDT"].last
    assert second != first
    await wait_text(page, BTC_CARD_PRICE, price_text(second))
    await wait_kept_btc_price(page, second)

    # No network: the reload is answered by the worker (shell and last payload).
    await context.set_offline(True)
    await page.reload()
    await wait_text(page, BTC_CARD_PRICE, price_text(second))
    assert await page.locator("#cards .card").count() > 1
    await page.wait_for_selector("#badge-offline:not([hidden])", timeout=WAIT_MS)
    assert await text_of(page, "#badge-offline") == "offline"
    await page.wait_for_selector("#badge-stale:not([hidden])", timeout=WAIT_MS)
    assert re.search(r"\d", await text_of(page, "#stale-age")), "no age on the STALE badge"
    assert re.search(r"\d", await text_of(page, "#hd-age")), "no data age in the header"
    await screenshot(page, "mobile-offline")

    # Back online: fresh data at once (a snapshot made while offline), marks gone.
    snapshot = await served.next_snapshot()
    assert snapshot is not None
    third = snapshot.tickers["BTCUSDT"].last
    assert third != second
    await context.set_offline(False)
    await wait_text(page, BTC_CARD_PRICE, price_text(third))
    await page.wait_for_selector("#badge-offline", state="hidden", timeout=WAIT_MS)
    await page.wait_for_selector("#badge-stale", state="hidden", timeout=WAIT_MS)
    await wait_kept_btc_price(page, third)
    assert [m for m in problems.messages if not network_off(m)] == []
    await context.close()


async def test_desktop_page_is_never_controlled(browser: Browser, served: ServedApp) -> None:
    context, page, problems = await phone(browser)
    await page.goto(served.base + "/mobile")
    await page.wait_for_function(
        "() => navigator.serviceWorker.controller !== null", timeout=WAIT_MS
    )
    await page.goto(served.base + "/?view=desktop")
    await page.wait_for_selector("#symbols-body tr", timeout=WAIT_MS)
    assert await page.evaluate("navigator.serviceWorker.controller") is None
    assert problems.messages == []
    await context.close()


async def test_a_deploy_replaces_the_cached_shell(
    browser: Browser, served: ServedApp, tmp_path, monkeypatch
) -> None:
    """A new build gives /sw.js new bytes: the browser installs the new worker, which
    keeps the new shell under a new version and deletes the old caches on activate."""
    context, page, problems = await phone(browser)
    await page.goto(served.base + "/mobile")
    await page.wait_for_function(
        "() => navigator.serviceWorker.controller !== null", timeout=WAIT_MS
    )
    before = sorted(await page.evaluate("() => caches.keys()"))
    assert len(before) == 2 and all(name.startswith("virtuoso-mobile-") for name in before)
    old_version = before[0].rsplit("-", 1)[1]

    for path in assets.directory.iterdir():  # the "deploy": mobile.js rebuilt
        (tmp_path / path.name).write_bytes(path.read_bytes())
    rebuilt = tmp_path / "mobile.js"
    rebuilt.write_text(rebuilt.read_text() + "\n// rebuilt\n")
    monkeypatch.setattr(assets, "directory", tmp_path)
    monkeypatch.setattr(assets, "_versions", {})
    new_url = assets.url("mobile.js")

    await page.evaluate(
        "async () => (await navigator.serviceWorker.getRegistration('/mobile')).update()"
    )
    after: list[str] = []
    for _ in range(WAIT_MS // 100):
        after = await page.evaluate("() => caches.keys()")
        if after and not any(name.endswith(old_version) for name in after):
            break
        await page.wait_for_timeout(100)
    assert after and not any(name.endswith(old_version) for name in after), after
    shell_cache = next(name for name in after if "-shell-" in name)
    cached = await page.evaluate(
        "async (name) => (await (await caches.open(name)).keys()).map((r) => r.url)",
        shell_cache,
    )
    assert served.base + new_url in cached
    await page.reload()
    assert await page.locator(f"script[src='{new_url}']").count() == 1
    assert problems.messages == []
    await context.close()
