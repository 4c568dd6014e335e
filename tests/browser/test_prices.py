"""Readable prices (issue 14, item 6): frontend/src/prices.js formats by the market's
tick size, else by significant digits, with 0.0ₙ… for 4+ zeros after the decimal
point — tested alone under node, then on the desktop page in Chromium with a payload
holding a coin priced around 1e-8 (table, watchlist, the chart's price axis)."""

from __future__ import annotations

import json
import math
import re
import subprocess
from pathlib import Path

import pytest
from playwright.async_api import Browser, Route

from tests.support.browser import PageProblems, ServedApp, screenshot
from tests.support.frontend_modules import INF, NAN, call_module

ROOT = Path(__file__).resolve().parents[2]
WAIT_MS = 15_000


def fmt(cases: list[tuple]) -> list[str]:
    return call_module("prices.js", [["formatPrice", *case] for case in cases])


# price → text without a tick size (significant digits)
BY_MAGNITUDE = {
    1e-8: "0.0₇1",
    1.14e-8: "0.0₇114",
    1.23456789e-8: "0.0₇12346",  # 5 significant digits
    1e-30: "0.0₂₉1",  # a two-digit count
    0.00001234: "0.0₄1234",
    0.00009999: "0.0₄9999",
    0.0001: "0.0001",  # 3 zeros: written out
    0.001234: "0.001234",
    0.1234567: "0.12346",
    0.5: "0.50",
    0.999996: "1.00",  # rounds up to 1
    1: "1.00",
    1.23456: "1.2346",
    99.5: "99.50",
    999.99: "999.99",
    1000: "1,000.00",
    86459.2: "86,459.20",
    1234567.891: "1,234,567.89",
    0: "0.00",
    -0.5: "-0.50",
    -1.14e-8: "-0.0₇114",
    -86459.2: "-86,459.20",
}


def test_prices_by_magnitude_without_a_tick_size() -> None:
    prices = list(BY_MAGNITUDE)
    assert fmt([(p,) for p in prices]) == [BY_MAGNITUDE[p] for p in prices]


def test_missing_prices_are_a_dash() -> None:
    assert fmt([(None,), (NAN,), (INF,), (NAN, 1e-8)]) == ["—"] * 4
    assert call_module("prices.js", [["formatPrice"]]) == ["—"]  # undefined


# (price, tick size) → text: the tick's decimals, trailing zeros kept
BY_TICK = [
    ((1.14e-8, 1e-10), "0.0₇114"),
    ((1.1e-8, 1e-10), "0.0₇110"),
    ((1.14e-8, 1e-12), "0.0₇11400"),
    ((1e-8, 1e-8), "0.0₇1"),
    ((0.00001234, 1e-8), "0.0₄1234"),
    ((0.5, 0.0001), "0.5000"),
    ((2.5, 0.25), "2.50"),
    ((2.6, 0.25), "2.50"),  # rounded to the tick
    ((86459.2, 0.1), "86,459.2"),
    ((86459.2, 0.01), "86,459.20"),
    ((86459.2, 5), "86,460"),
    ((1, 1), "1"),
    ((0, 1e-8), "0.00000000"),
    ((-1.1e-8, 1e-10), "-0.0₇110"),
    ((0.001, 0.01), "0.001"),  # below its tick: the tick is wrong, significant digits
    ((0.5, 0), "0.50"),  # not a tick size: ignored
    ((0.5, -0.01), "0.50"),
    ((0.5, NAN), "0.50"),
    ((0.5, None), "0.50"),
]


def test_prices_by_tick_size() -> None:
    assert fmt([case for case, _ in BY_TICK]) == [text for _, text in BY_TICK]


def test_tick_size_of_a_payload_row() -> None:
    rows = [
        {"tick_size": 1e-10},
        {"price_precision": 8},
        {"price_precision": 0},
        {"tick_size": 0.5, "price_precision": 8},  # tick_size wins
        {"tick_size": 0, "price_precision": 2},
        {"tick_size": "0.01"},
        {"price_precision": 2.5},
        {"price_precision": -1},
        {},
        None,
    ]
    got = call_module("prices.js", [["tickOf", row] for row in rows])
    want = [1e-10, 1e-8, 1, 0.5, 0.01, None, None, None, None, None]
    assert [g is None for g in got] == [w is None for w in want]
    for g, w in zip(got, want, strict=True):
        if w is not None:
            assert math.isclose(g, w, rel_tol=1e-12)


def test_tick_decimals() -> None:
    ticks = [0.5, 0.25, 0.0025, 0.1, 0.3, 1e-8, 1e-10, 5e-12, 1, 5, 10]
    assert call_module("prices.js", [["tickDecimals", t] for t in ticks]) == [
        1,
        2,
        4,
        1,
        1,
        8,
        10,
        12,
        0,
        0,
        0,
    ]


def test_chart_price_format_has_a_step_below_the_prices_range() -> None:
    """minMove a power of ten: the tick's decimals, else 5 significant digits; the old
    fixed 8 decimals left a 1e-8 coin a single price step, and no axis labels."""
    got = call_module(
        "prices.js",
        [
            ["chartPriceFormat", 1.14e-8],
            ["chartPriceFormat", 1.14e-8, 1e-10],
            ["chartPriceFormat", 1.14e-8, 5e-12],
            ["chartPriceFormat", 0.5],
            ["chartPriceFormat", 99.5],
            ["chartPriceFormat", 86459.2],
            ["chartPriceFormat", 86459.2, 0.1],
            ["chartPriceFormat", 86459.2, 5],
            ["chartPriceFormat", None],
        ],
    )
    steps = [(g["precision"], g["minMove"]) for g in got]
    assert steps == [
        (12, 1e-12),
        (10, 1e-10),
        (12, 1e-12),
        (5, 1e-5),
        (4, 1e-4),
        (2, 0.01),
        (1, 0.1),
        (0, 1),
        (4, 1e-4),
    ]
    assert all(g["type"] == "price" for g in got)


def test_change_percentages_keep_their_sign() -> None:
    script = (
        "import { formatPercent } from './src/dom.js';"
        "const values = [-3.456, 0, 2.5, -0.001, null, NaN];"
        "console.log(JSON.stringify(values.map((v) => formatPercent(v))));"
    )
    # dom.js touches `document` only inside functions: importable under node
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script],
        cwd=ROOT / "frontend",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == ["-3.46%", "0.00%", "+2.50%", "-0.00%", "—", "—"]


# --- in the browser ------------------------------------------------------------------

TINY = "TINYUSDT"
TINY_PRICE = 1.1e-8
TINY_TICK = 1e-10
TINY_VOLUME = 3.34e17  # coins traded: a coin this cheap trades in these numbers
COMPACT = re.compile(r"^0\.0₇\d+$")


def tiny_candles(count: int = 60) -> list[list[float]]:
    """Hourly candles wandering between about 1.0e-8 and 1.2e-8."""
    start = 1_700_000_000_000
    rows = []
    for i in range(count):
        close = TINY_PRICE * (1 + 0.08 * math.sin(i / 5))
        open_ = TINY_PRICE * (1 + 0.08 * math.sin((i - 1) / 5))
        rows.append(
            [
                start + i * 3_600_000,
                open_,
                max(open_, close) * 1.01,
                min(open_, close) * 0.99,
                close,
                1e12,
            ]
        )
    return rows


async def inject_tiny_coin(route: Route) -> None:
    """The real dashboard payload with one more symbol priced ~1e-8 (tick 1e-10)."""
    response = await route.fetch()
    if response.status != 200:
        await route.fulfill(response=response)
        return
    body = await response.json()
    row = {
        "symbol": TINY,
        "price": TINY_PRICE,
        "change_24h": 12.5,
        "volume_24h": TINY_VOLUME,
        "tick_size": TINY_TICK,
    }
    body["symbols"].append(row)
    await route.fulfill(response=response, json=body)


async def tiny_candles_route(route: Route) -> None:
    await route.fulfill(
        json={"symbol": TINY, "timeframe": "1h", "candles": tiny_candles(), "stale": False},
        headers={"ETag": '"tiny"', "Cache-Control": "no-store"},
    )


@pytest.mark.asyncio(loop_scope="session")  # the shared Chromium (tests/support/browser.py)
async def test_a_coin_priced_around_1e8_is_readable_in_the_table_and_the_chart(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    context = await browser.new_context(viewport={"width": 1440, "height": 1000})
    await context.route("**/api/dashboard/data*", inject_tiny_coin)
    await context.route(f"**/api/market/candles/{TINY}*", tiny_candles_route)
    # the server keeps only symbols it knows in a watchlist: this one is watched here
    await context.route(
        "**/api/session/watchlist", lambda route: route.fulfill(json={"watchlist": [TINY]})
    )
    page = await context.new_page()
    problems.watch(page)
    await page.goto(served.base + "/")
    cell = f"#symbols-body tr[data-symbol='{TINY}'] td.price"
    await page.wait_for_selector(cell, timeout=WAIT_MS)
    # the table by its tick size: 1.1e-8 at tick 1e-10 is 0.0000000110
    assert (await page.text_content(cell)) == "0.0₇110"
    assert await page.get_attribute(cell, "title") == "0.000000011"
    # its volume readable too (issue 15, item 9): not "334013434.00B"
    volume = f"#symbols-body tr[data-symbol='{TINY}'] td.volume_24h"
    assert (await page.text_content(volume)) == "3.34×10¹⁷"
    # BTC keeps its 2 decimals
    btc = await page.text_content("#symbols-body tr[data-symbol='BTCUSDT'] td.price") or ""
    assert re.fullmatch(r"\d{1,3}(,\d{3})*\.\d\d", btc), btc

    # charted: the series' step is the tick size and the axis has distinct labels
    await page.click(f"#symbols-body tr[data-symbol='{TINY}'] button.chart-symbol")
    chart = page.locator("#chart")
    await page.wait_for_function(
        "() => document.getElementById('chart').dataset.minMove === '1e-10'", timeout=WAIT_MS
    )
    assert await chart.get_attribute("data-precision") == "10"
    # the axis is redrawn on a later frame than the format is applied: wait for labels of
    # this coin's prices (the ones before are BTC's); a wrong format still fails below
    await page.wait_for_function(
        """() => {
            const labels = (document.getElementById('chart').dataset.axisLabels || '').split('|');
            return labels.length >= 3 && labels.every((label) => label.startsWith('0.'));
        }""",
        timeout=WAIT_MS,
    )
    labels = (await chart.get_attribute("data-axis-labels") or "").split("|")
    assert len(set(labels)) == len(labels) >= 3, labels
    assert all(COMPACT.match(label) for label in labels), labels
    assert await page.text_content("#chart-symbol") == TINY
    await screenshot(page, "tiny-prices")

    # the watchlist shows it by the table's tick size too
    item = f"#watchlist li[data-key='{TINY}'] .quote-price"
    await page.wait_for_selector(item, timeout=WAIT_MS)
    assert (await page.text_content(item)) == "0.0₇110"
    assert problems.messages == []
    await context.unroute_all(behavior="ignoreErrors")
    await context.close()
