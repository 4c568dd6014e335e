"""The rule form's derivatives and component kinds in Chromium: a funding rule (a
fraction per funding interval, shown in percent too) and a component rule (with its
component select) created through the form; a value the form refuses as the server
does; and the server's own message shown when it refuses what the page sent."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from tests.support.browser import PageProblems, ServedApp, text_of
from tests.support.rule_form import (
    API_TOKEN,
    WAIT_MS,
    preview,
    rule_form,
    stored_rules,
    wait_preview,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_a_funding_rule_is_created_through_the_form(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "de-DE")
    await page.select_option("#rule-kind", "funding_above")
    await page.select_option("#rule-symbol", "BTCUSDT")
    assert await page.locator("#rule-threshold").is_visible()
    assert await page.locator("#rule-component").is_hidden()
    unit = await text_of(page, "#rule-threshold-unit")
    assert unit == "fraction per funding interval (0.0005 = 0.05 %)"
    assert await page.get_attribute("#rule-threshold", "placeholder") == "e.g. 0,0005"
    assert await text_of(page, "#rule-hysteresis-unit") == "funding rate (a fraction, absolute)"
    assert await page.get_attribute("#rule-hysteresis", "placeholder") == "default 0,00005"
    await page.fill("#rule-threshold", "0,0005")
    text = await wait_preview(page, "Will save: ")
    assert text.startswith(
        "Will save: BTCUSDT: funding rate at or above 0,0005 (0,05 %) per funding interval · "
        "hysteresis 0,00005 funding rate (a fraction, absolute) (default) · "
    ), text
    async with page.expect_request(
        lambda r: r.method == "POST" and "/api/alerts/rules" in r.url
    ) as sent:
        await page.click("#rule-form button[type=submit]")
    body = json.loads((await sent.value).post_data or "{}")
    assert body == {
        "kind": "funding_above",
        "level": "warning",
        "symbol": "BTCUSDT",
        "threshold": 0.0005,
        "cooldown_seconds": 300,
    }
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["kind"], rule["threshold"], rule["hysteresis"]) == (
        "funding_above",
        0.0005,
        0.00005,
    )
    listed = await text_of(page, "#rules-list .rule-text")
    assert listed == f"warning · BTCUSDT · {rule['description']}"
    assert "0.0005 (0.05 %) per funding interval" in listed
    assert problems.messages == []


async def test_a_component_rule_is_created_with_its_component(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "en-US")
    await page.select_option("#rule-kind", "component_below")
    assert await page.locator("#rule-component").is_visible()
    assert await text_of(page, "#rule-threshold-unit") == "score 0–100 (all timeframes combined)"
    await page.select_option("#rule-component", "sentiment")
    await page.fill("#rule-threshold", "25")
    text = await wait_preview(page, "Will save: every symbol: sentiment component at or below 25")
    assert "hysteresis 5 score points (default)" in text, text
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["kind"], rule["component"], rule["threshold"], rule["symbol"]) == (
        "component_below",
        "sentiment",
        25,
        None,
    )
    assert "sentiment component at or below 25" in await text_of(page, "#rules-list .rule-text")
    # another kind: the component select goes away and no component is sent
    await page.select_option("#rule-kind", "long_short_above")
    assert await page.locator("#rule-component").is_hidden()
    assert await text_of(page, "#rule-threshold-unit") == "accounts long ÷ short"
    await page.fill("#rule-threshold", "1.5")
    async with page.expect_request(
        lambda r: r.method == "POST" and "/api/alerts/rules" in r.url
    ) as sent:
        await page.click("#rule-form button[type=submit]")
    assert "component" not in json.loads((await sent.value).post_data or "{}")
    await page.wait_for_function(
        "() => document.querySelectorAll('#rules-list li').length === 2", timeout=WAIT_MS
    )
    assert problems.messages == []


# (kind, typed, the form's words, a rule the server refuses the same way, the server's words)
LIMITS = [
    ("funding_above", "0.06", "Threshold: at most 0.05", 0.06, "between -0.05 and 0.05"),
    ("funding_below", "-0.5", "Threshold: at least -0.05", -0.5, "between -0.05 and 0.05"),
    ("open_interest_change_below", "-120", "at least -100", -120, "between -100 and"),
    ("long_short_above", "0", "must be above 0", 0, "ratio (long ÷ short), above 0, at most 1,000"),
    ("long_short_below", "1001", "at most 1,000", 1001, "above 0, at most 1,000"),
    ("component_above", "101", "Threshold: at most 100", 101, "between 0 and 100"),
]


@pytest.mark.parametrize(("kind", "typed", "words", "sent", "server_words"), LIMITS)
async def test_the_form_refuses_what_the_server_refuses(
    browser: Browser,
    served: ServedApp,
    kind: str,
    typed: str,
    words: str,
    sent: float,
    server_words: str,
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "en-US")
    await page.select_option("#rule-kind", kind)
    await page.fill("#rule-threshold", typed)
    refused = await wait_preview(page, "Not saved: ")
    assert words in refused, refused
    assert await page.get_attribute("#rule-threshold", "aria-invalid") == "true"
    rule = {"kind": kind, "threshold": sent}
    if kind.startswith("component_"):
        rule["component"] = "volume"
    response = await page.request.post(
        served.base + "/api/alerts/rules",
        data=json.dumps(rule),
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    assert response.status == 400
    assert server_words in (await response.json())["message"]
    assert await stored_rules(page, served) == []
    assert problems.messages == []


async def test_a_value_the_server_refuses_is_shown_with_the_servers_message(
    browser: Browser, served: ServedApp
) -> None:
    """A page older than the server (it offers a component the server no longer has):
    the form sends it, the server refuses, and the status shows the server's message."""
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "en-US")
    await page.select_option("#rule-kind", "component_above")
    await page.evaluate(
        """() => {
        const option = document.createElement('option');
        option.value = 'vibes';
        option.textContent = 'vibes';
        document.getElementById('rule-component').append(option);
    }"""
    )
    await page.select_option("#rule-component", "vibes")
    await page.fill("#rule-threshold", "70")
    await wait_preview(page, "Will save: every symbol: vibes component at or above 70")
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_function(
        "() => document.getElementById('rules-status').textContent.startsWith('Could not')",
        timeout=WAIT_MS,
    )
    status = await text_of(page, "#rules-status")
    assert status == (
        "Could not create the rule: component: unknown component 'vibes'; one of technical, "
        "volume, orderflow, sentiment, orderbook, price_structure"
    ), status
    assert await stored_rules(page, served) == []
    assert (await preview(page)).startswith("Will save: ")  # the form itself saw no problem
    unexpected = [m for m in problems.messages if "status of 400" not in m]
    assert unexpected == []
