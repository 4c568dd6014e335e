"""The alert rule form's limits in Chromium are the server's (a hysteresis at the
server's limit is saved, just above it refused by both), and the rule list shows every
stored rule (more than one page of the API) and deletes one the first page leaves out.
Split from test_rule_form.py, so that the two run side by side under ``-n``."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.async_api import Browser, Page

from app.services.alerts.conditions import MAX_HYSTERESIS
from tests.conftest import RATE_LIMITS_OFF
from tests.support.browser import PageProblems, ServedApp
from tests.support.rule_form import (
    API_TOKEN,
    DESKTOP,
    WAIT_MS,
    rule_form,
    rule_form_app,
    stored_rules,
    wait_preview,
)

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")


# -- the form's limits are the server's; every stored rule is listed --


async def post_rule(page: Page, served: ServedApp, rule: dict) -> int:
    """POST /api/alerts/rules with the API token; the status."""
    response = await page.request.post(
        served.base + "/api/alerts/rules",
        data=json.dumps(rule),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    return response.status


# A threshold each family takes (no threshold: the confluence rules).
TYPICAL_THRESHOLDS = {
    "price": 50.0,
    "change": 50.0,
    "funding": 0.001,
    "open_interest_change": 5.0,
    "long_short": 2.0,
    "component": 50.0,
}


def plain(value: float) -> str:
    """``value`` as en-US types it, never with an exponent: 0.015, 50."""
    return f"{value:f}".rstrip("0").rstrip(".")


@pytest.mark.parametrize("kind", sorted(MAX_HYSTERESIS))
async def test_the_forms_hysteresis_limit_is_the_servers(
    browser: Browser, served: ServedApp, kind: str
) -> None:
    """At the server's limit the form says "Will save" and the server stores it; just
    above it the form refuses, as the server does."""
    limit = MAX_HYSTERESIS[kind]
    beyond = limit * 1.5
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "en-US")
    await page.select_option("#rule-kind", kind)
    rule: dict = {"kind": kind, "level": "info"}
    typical = TYPICAL_THRESHOLDS.get(kind.rpartition("_")[0])
    if typical is not None:
        await page.fill("#rule-threshold", plain(typical))
        rule["threshold"] = typical
    if kind.startswith("component_"):
        await page.select_option("#rule-component", "orderflow")
        rule["component"] = "orderflow"
    await page.fill("#rule-hysteresis", plain(beyond))
    refused = await wait_preview(page, "Not saved: ")
    assert f"Hysteresis: at most {plain(limit)}" in refused, refused
    assert await post_rule(page, served, rule | {"hysteresis": beyond}) == 400
    await page.fill("#rule-hysteresis", plain(limit))
    will = await wait_preview(page, "Will save: ")
    assert f"hysteresis {limit:g} " in will, will
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [stored] = await stored_rules(page, served)
    assert (stored["kind"], stored["hysteresis"]) == (kind, limit)
    assert problems.messages == []


RULE_TEXTS = "nodes => nodes.map(n => n.textContent)"


async def listed_titles(page: Page) -> list[str]:
    texts = await page.eval_on_selector_all("#rules-list .rule-text", RULE_TEXTS)
    return sorted(text.rsplit(" · ", 1)[-1] for text in texts)


async def test_every_stored_rule_is_listed_and_deletable(browser: Browser, tmp_path: Path) -> None:
    """56 rules (more than the API's default page of 50): the list shows all 56, and one
    the default page leaves out can be deleted from it."""
    problems = PageProblems()
    async with rule_form_app(tmp_path, VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF) as served:
        page = await rule_form(browser, served, problems, "en-US")
        titles = [f"rule {n:02d}" for n in range(1, 57)]
        for title in titles:
            rule = {"kind": "price_above", "threshold": 10, "level": "info", "title": title}
            assert await post_rule(page, served, rule) == 201
        await page.reload()
        await page.wait_for_function(
            "() => document.querySelectorAll('#rules-list li').length === 56", timeout=WAIT_MS
        )
        assert await listed_titles(page) == titles
        first_page = {r["title"] for r in await stored_rules(page, served)}  # default 50
        assert len(first_page) == 50
        [left_out, *_] = sorted(set(titles) - first_page)
        await page.click(".rules summary")
        await page.fill("#api-token", API_TOKEN)
        await page.click("#token-form button[type=submit]")
        await page.click(f"#rules-list li:has-text('{left_out}') .rule-delete")
        await page.wait_for_function(
            "() => document.querySelectorAll('#rules-list li').length === 55", timeout=WAIT_MS
        )
        assert await listed_titles(page) == [t for t in titles if t != left_out]
        response = await page.request.get(served.base + "/api/alerts/rules?limit=200")
        assert (await response.json())["total"] == 55
        assert problems.messages == []
        await page.context.close()


async def test_the_rule_list_pages_until_the_servers_total(
    browser: Browser, served: ServedApp
) -> None:
    """A server holding more than one page (total 250 with pages of at most 200):
    the list fetches the next page too and shows all 250."""
    problems = PageProblems()
    rules = [
        {"id": f"r{n:04d}", "kind": "price_above", "symbol": "BTCUSDT", "threshold": n,
         "level": "info", "title": f"rule {n:04d}"}
        for n in range(250)
    ]  # fmt: skip
    asked: list[tuple[int, int]] = []

    async def answer(route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        offset = int(query.get("offset", ["0"])[0])
        limit = min(200, int(query.get("limit", ["50"])[0]))
        asked.append((offset, limit))
        page_rules = rules[offset : offset + limit]
        body = {"rules": page_rules, "total": len(rules), "offset": offset, "limit": limit}
        await route.fulfill(json=body)

    context = await browser.new_context(viewport=DESKTOP, locale="en-US", timezone_id="UTC")
    await context.route("**/api/alerts/rules*", answer)
    page = await context.new_page()
    problems.watch(page)
    await page.goto(served.base + "/")
    await page.wait_for_function(
        "() => document.querySelectorAll('#rules-list li').length === 250", timeout=WAIT_MS
    )
    assert await listed_titles(page) == sorted(r["title"] for r in rules)
    assert asked == [(0, 200), (200, 200)]
    assert problems.messages == []
    await context.close()
