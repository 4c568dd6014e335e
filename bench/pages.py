"""Page loads in headless Chromium (Debian's /usr/bin/chromium driven by Playwright):
each page's own RUM beacon (time to first byte, DOM ready, first data rendered), cold
(a new browser context: nothing cached) and warm (a reload: scripts and styles
cached)."""

from __future__ import annotations

from typing import Any

from playwright.async_api import Browser, async_playwright

from bench.loadgen.stats import LatencySummary

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
]
PAGES = {
    "desktop": ("/", {"width": 1440, "height": 1000}),
    "mobile": ("/mobile", {"width": 375, "height": 812}),
}


async def page_loads(base: str, loads: int) -> dict[str, Any]:
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        try:
            results = {}
            for device, (path, viewport) in PAGES.items():
                results[device] = await _device(browser, base + path, viewport, loads)
            return results
        finally:
            await browser.close()


async def _device(browser: Browser, url: str, viewport: dict, loads: int) -> dict[str, Any]:
    cold: list[dict] = []
    warm: list[dict] = []
    payload_bytes = []
    for _ in range(loads):
        context = await browser.new_context(viewport=viewport)
        page = await context.new_page()
        async with (
            page.expect_request(lambda r: r.url.endswith("/api/rum")) as beacon,
            page.expect_response(lambda r: "/api/dashboard/" in r.url) as data,
        ):
            await page.goto(url)
        cold.append((await beacon.value).post_data_json)
        payload_bytes.append(len(await (await data.value).body()))
        async with page.expect_request(lambda r: r.url.endswith("/api/rum")) as beacon:
            await page.reload()
        warm.append((await beacon.value).post_data_json)
        await context.close()
    return {
        "cold": _phases(cold),
        "warm": _phases(warm),
        "data_payload_bytes": max(payload_bytes),
    }


def _phases(beacons: list[dict]) -> dict[str, Any]:
    return {
        phase: LatencySummary.from_ms([b[f"{phase}_ms"] for b in beacons])
        for phase in ("ttfb", "dom_ready", "first_data")
    }
