"""One time zone on every part of a page (issue 15, item 9), in Chromium with the
browser's time zone set per context: the page names the user's zone once
(#time-zone), and the chart's time axis and crosshair, the alert list and the header's
data time all show times in that zone — they agree with each other and with Python's
zoneinfo for the same instants, daylight-saving change included."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import pytest_asyncio
from playwright.async_api import Browser, BrowserContext, Page, Route

from tests.support.browser import (
    FEW_SYMBOLS,
    PHONE,
    PageProblems,
    ServedApp,
    screenshot,
    served_app,
    text_of,
)

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


API_TOKEN = "time-zone-test-token"
WAIT_MS = 15_000
DESKTOP = {"width": 1440, "height": 1000}
ZONES = ["Asia/Tokyo", "America/New_York", "UTC"]
# Hourly candles across New York's fall-back (2026-11-01 06:00 UTC: 02:00 EDT → 01:00 EST).
CANDLES_FROM = datetime(2026, 10, 31, 12, tzinfo=UTC)
CANDLE_COUNT = 36
# The crosshair's label once it is drawn (on an animation frame): two frames, then the
# label, in one round trip.
CROSSHAIR_AFTER_FRAMES = (
    "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame("
    "() => done(document.getElementById('chart').dataset.crosshairTime || ''))))"
)


@pytest_asyncio.fixture(loop_scope="session")
async def served(tmp_path: Path) -> AsyncIterator[ServedApp]:
    async with served_app(
        VIRTUOSO_API_TOKEN=API_TOKEN, VIRTUOSO_DATA_DIR=str(tmp_path), VIRTUOSO_SYMBOLS=FEW_SYMBOLS
    ) as app:
        yield app


def zoned(epoch_ms: float, zone: str) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, ZoneInfo(zone))


def zone_label(zone: str) -> str:
    """The page's label for `zone` now (the offset of this instant, as the browser's)."""
    if zone == "UTC":
        return "times in UTC"
    offset = datetime.now(ZoneInfo(zone)).utcoffset() or timedelta()
    hours, rest = divmod(int(offset.total_seconds()), 3600)
    minutes = f":{abs(rest) // 60:02d}" if rest else ""
    return f"times in {zone} (UTC{hours:+d}{minutes})"


def event_time(epoch_ms: float, zone: str) -> str:
    """An alert's time as the list shows it: the time today, date and time otherwise."""
    at = zoned(epoch_ms, zone)
    today = datetime.now(ZoneInfo(zone)).date()
    return f"{at:%H:%M:%S}" if at.date() == today else f"{at:%d %b %H:%M:%S}"


def tick_label_fits(epoch_s: int, label: str, zone: str) -> bool:
    """A time-axis label is its tick's instant in `zone` at some granularity."""
    at = zoned(epoch_s * 1000, zone)
    return label in {f"{at:%Y}", f"{at:%b}", f"{at:%d}", f"{at:%H:%M}", f"{at:%H:%M:%S}"}


def pairs(data: str | None) -> list[tuple[int, str]]:
    """ "epoch seconds=label|…" → [(seconds, label), …]."""
    out = []
    for item in (data or "").split("|"):
        if item:
            seconds, label = item.split("=", 1)
            out.append((int(seconds), label))
    return out


def dst_candles() -> list[list[float]]:
    start = int(CANDLES_FROM.timestamp() * 1000)
    rows = []
    for i in range(CANDLE_COUNT):
        price = 80_000 + 150 * (i % 7)
        rows.append([start + i * 3_600_000, price, price + 120, price - 90, price + 40, 12.5])
    return rows


async def fixed_candles(route: Route) -> None:
    await route.fulfill(
        json={"symbol": "BTCUSDT", "timeframe": "1h", "candles": dst_candles(), "stale": False},
        headers={"ETag": '"dst"', "Cache-Control": "no-store"},
    )


async def new_page(
    browser: Browser, problems: PageProblems, zone: str, **options
) -> tuple[BrowserContext, Page]:
    context = await browser.new_context(timezone_id=zone, locale="en-US", **options)
    await context.route("**/api/market/candles/BTCUSDT*", fixed_candles)
    page = await context.new_page()
    problems.watch(page)
    return context, page


async def fire_alert(page: Page, served: ServedApp, level: str) -> dict:
    """A rule BTC is above, a snapshot that fires it; the alert as the API lists it."""
    response = await page.request.post(
        served.base + "/api/alerts/rules",
        data={"kind": "price_above", "symbol": "BTCUSDT", "threshold": 1, "level": level},
        headers={"Authorization": f"Bearer {API_TOKEN}"},
    )
    assert response.status == 201, await response.text()
    await served.next_snapshot()
    listed = await page.request.get(served.base + "/api/alerts")
    [alert] = (await listed.json())["alerts"]
    return alert


async def wait_attribute(page: Page, selector: str, name: str) -> str:
    await page.wait_for_function(
        "([selector, name]) => !!document.querySelector(selector)?.getAttribute(name)",
        arg=[selector, name],
        timeout=WAIT_MS,
    )
    return await page.get_attribute(selector, name) or ""


async def crosshair_times(page: Page) -> list[tuple[int, str]]:
    """The crosshair's time label at a few points across the chart."""
    box = await page.locator("#chart").bounding_box()
    assert box is not None
    seen = []
    for fraction in (0.2, 0.5, 0.8):
        await page.mouse.move(box["x"] + box["width"] * fraction, box["y"] + box["height"] / 2)
        await page.wait_for_function(
            "(previous) => (document.getElementById('chart').dataset.crosshairTime || '')"
            " !== previous",
            arg=seen[-1] if seen else "",
            timeout=WAIT_MS,
        )
        seen.append(await page.get_attribute("#chart", "data-crosshair-time") or "")
    return pairs("|".join(seen))


async def header_data_time(page: Page, served: ServedApp, zone: str) -> None:
    """The header's data time (the age's title) is the latest data's time in `zone`: the
    latest snapshot's, or the server's now (the alerts list's generated_at)."""
    instants = [served.state.pipeline.latest.fetched_at_ms, int(served.clock.now * 1000)]
    wanted = [f"Data of {zoned(ms, zone):%d %b %Y %H:%M:%S}" for ms in instants]
    await page.wait_for_function(
        "(wanted) => wanted.includes(document.getElementById('hd-age').title)",
        arg=wanted,
        timeout=WAIT_MS,
    )


@pytest.mark.parametrize("zone", ZONES)
async def test_desktop_shows_every_time_in_the_users_zone(
    browser: Browser, served: ServedApp, zone: str
) -> None:
    problems = PageProblems()
    context, page = await new_page(browser, problems, zone, viewport=DESKTOP)
    await page.goto(served.base + "/")
    # the zone, named once
    await page.wait_for_function(
        "() => document.getElementById('time-zone').textContent !== ''", timeout=WAIT_MS
    )
    assert await text_of(page, "#time-zone") == zone_label(zone)
    assert await page.get_by_text(re.compile(r"^times in ")).count() == 1

    # the chart's time axis: each label its tick's instant in the zone
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    labels = pairs(await wait_attribute(page, "#chart", "data-time-labels"))
    assert labels
    assert all(tick_label_fits(s, label, zone) for s, label in labels), labels
    clock_labels = [(s, label) for s, label in labels if re.fullmatch(r"\d\d:\d\d", label)]
    assert clock_labels, labels
    assert all(label == f"{zoned(s * 1000, zone):%H:%M}" for s, label in clock_labels)

    # the crosshair: the candle's time in the zone
    hovered = await crosshair_times(page)
    assert all(label == f"{zoned(s * 1000, zone):%d %b %Y %H:%M}" for s, label in hovered), hovered
    first_candle = int(CANDLES_FROM.timestamp())
    assert all(first_candle <= s < first_candle + CANDLE_COUNT * 3600 for s, _ in hovered)

    # the alert list, in the same zone
    alert = await fire_alert(page, served, "warning")
    item = page.locator("#alerts-list li").first
    await item.wait_for(timeout=WAIT_MS)
    assert await item.locator(".alert-time").text_content() == event_time(
        alert["created_at_ms"], zone
    )

    # the header's data time
    await header_data_time(page, served, zone)
    await screenshot(page, f"time-zone-{zone.replace('/', '-')}")
    assert problems.messages == []
    await context.close()


async def test_the_chart_follows_a_daylight_saving_change(
    browser: Browser, served: ServedApp
) -> None:
    """New York, 2026-11-01: two candles at 01:00 (EDT, then EST), each by its instant."""
    zone = "America/New_York"
    problems = PageProblems()
    context, page = await new_page(browser, problems, zone, viewport=DESKTOP)
    await page.goto(served.base + "/")
    await page.wait_for_selector("#chart canvas", timeout=WAIT_MS)
    await wait_attribute(page, "#chart", "data-time-labels")
    # every candle's crosshair label, asked of the chart's own formatter
    box = await page.locator("#chart").bounding_box()
    assert box is not None
    hovered: dict[int, str] = {}
    for step in range(60):
        x = box["x"] + box["width"] * (0.02 + 0.96 * step / 59)
        await page.mouse.move(x, box["y"] + box["height"] / 2)
        for seconds, label in pairs(await page.evaluate(CROSSHAIR_AFTER_FRAMES)):
            hovered[seconds] = label
    fall_back = int(datetime(2026, 11, 1, 6, tzinfo=UTC).timestamp())
    edt, est = fall_back - 3600, fall_back
    assert {edt, est} <= hovered.keys(), sorted(hovered)
    assert hovered[edt] == hovered[est] == "01 Nov 2026 01:00"
    assert hovered[est + 3600] == "01 Nov 2026 02:00"
    assert all(label == f"{zoned(s * 1000, zone):%d %b %Y %H:%M}" for s, label in hovered.items())
    assert problems.messages == []
    await context.close()


async def test_mobile_names_the_zone_and_shows_alerts_in_it(
    browser: Browser, served: ServedApp
) -> None:
    zone = "Asia/Tokyo"
    problems = PageProblems()
    context, page = await new_page(browser, problems, zone, **PHONE)
    await page.goto(served.base + "/mobile")
    await page.wait_for_function(
        "() => document.getElementById('time-zone').textContent !== ''", timeout=WAIT_MS
    )
    assert await text_of(page, "#time-zone") == "times in Asia/Tokyo (UTC+9)"
    alert = await fire_alert(page, served, "critical")
    item = page.locator("#critical-alerts li").first
    await item.wait_for(timeout=WAIT_MS)
    assert await item.locator(".alert-time").text_content() == event_time(
        alert["created_at_ms"], zone
    )
    await header_data_time(page, served, zone)
    await screenshot(page, "time-zone-mobile-Asia-Tokyo")
    # the label fits the phone: no horizontal scrolling
    assert await page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    assert problems.messages == []
    await context.close()
