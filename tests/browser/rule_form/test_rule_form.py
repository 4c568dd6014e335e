"""The alert rule form in Chromium, in the user's locale (issue 15, item 8): numbers are
typed the way the locale writes them and stored as meant, or refused with the reason
before anything is sent; the form shows what it is about to save. Every check of what
was stored reads GET /api/alerts/rules."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser

from tests.conftest import eventually
from tests.support.browser import PageProblems, ServedApp, artifact, text_of
from tests.support.rule_form import (
    DESKTOP,
    WAIT_MS,
    preview,
    rule_form,
    stored_rules,
    wait_preview,
)

# On the session's event loop: the page tests share one Chromium (tests/support/browser.py).
pytestmark = pytest.mark.asyncio(loop_scope="session")

NNBSP = "\u202f"


# (locale, 86459.5 as typed there, as the preview shows it there)
TYPED = [
    ("en-US", "86,459.5", "86,459.5"),
    ("de-DE", "86.459,5", "86.459,5"),
    ("fr-FR", f"86{NNBSP}459,5", f"86{NNBSP}459,5"),
    ("fr-FR", "86 459,5", f"86{NNBSP}459,5"),  # a plain space, as a keyboard types it
    ("hi-IN", "86,459.5", "86,459.5"),
    ("ja-JP", "８６４５９．５", "86,459.5"),  # full-width, as a Japanese IME types it
    ("de-DE", "86459.5", "86.459,5"),  # "." can only be a decimal point here
]


@pytest.mark.parametrize(("locale", "typed", "shown"), TYPED)
async def test_a_threshold_typed_the_locales_way_is_stored_as_meant(
    browser: Browser, served: ServedApp, locale: str, typed: str, shown: str
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, locale)
    await page.select_option("#rule-kind", "price_above")
    await page.select_option("#rule-symbol", "BTCUSDT")
    await page.fill("#rule-threshold", typed)
    await page.fill("#rule-cooldown", "600")
    text = await wait_preview(page, "Will save: ")
    assert text.startswith(f"Will save: BTCUSDT: price at or above {shown} · "), text
    assert "cooldown 600 s" in text
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["kind"], rule["symbol"], rule["threshold"], rule["cooldown_seconds"]) == (
        "price_above",
        "BTCUSDT",
        86459.5,
        600,
    )
    assert problems.messages == []


# (locale, kind, field, typed, words of the refusal)
REFUSALS = [
    ("en-US", "price_above", "#rule-threshold", "86459,5", "groups of 3 digits"),
    ("en-US", "price_above", "#rule-threshold", "86.459,5", "no grouping after it"),
    ("en-US", "price_above", "#rule-threshold", "1,2,3", "groups of 3 digits"),
    ("de-DE", "price_below", "#rule-threshold", "1.234", "ambiguous"),
    ("fr-FR", "price_above", "#rule-threshold", "1e5", "no exponent"),
    ("en-US", "price_above", "#rule-threshold", "-5", "must not be negative"),
    ("en-US", "price_above", "#rule-threshold", "0", "must be above 0"),
    ("en-US", "price_above", "#rule-cooldown", "30.5", "whole numbers only"),
    ("de-DE", "price_above", "#rule-cooldown", "100000", "at most 86.400"),
    ("en-US", "price_above", "#rule-hysteresis", "-1", "must not be negative"),
    ("ja-JP", "change_above", "#rule-hysteresis", "1,5", "groups of 3 digits"),
    # few digits, but a double cannot hold them: Infinity, never "∞" sent as null
    ("en-US", "price_above", "#rule-threshold", "1" + "0" * 400, "too large"),
    ("de-DE", "change_below", "#rule-threshold", "-1" + "0" * 400, "too large"),
    ("en-US", "price_below", "#rule-threshold", "0." + "0" * 400 + "1", "too small"),
]


@pytest.mark.parametrize(("locale", "kind", "field", "typed", "words"), REFUSALS)
async def test_a_number_that_would_mean_something_else_is_refused_before_sending(
    browser: Browser, served: ServedApp, locale: str, kind: str, field: str, typed: str, words: str
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, locale)
    await page.select_option("#rule-kind", kind)
    if field != "#rule-threshold":
        await page.fill("#rule-threshold", "50")
    posts: list[str] = []
    page.on(
        "request",
        lambda r: posts.append(r.url) if r.method == "POST" and "/rules" in r.url else None,
    )
    await page.fill(field, typed)
    text = await wait_preview(page, "Not saved: ")
    assert words in text, text
    assert await page.get_attribute(field, "aria-invalid") == "true"
    assert await page.get_attribute("#rule-form button[type=submit]", "aria-disabled") == "true"

    # a click on the (aria-disabled) button, or Enter in a field, is refused with the reason
    await page.focus("#rule-title")
    await page.click("#rule-form button[type=submit]", force=True)
    await page.wait_for_function(
        "() => document.getElementById('rules-status').textContent.startsWith('Not saved: ')",
        timeout=WAIT_MS,
    )
    assert words in await text_of(page, "#rules-status")
    assert await page.evaluate(f"document.activeElement === document.querySelector('{field}')")
    await page.press("#rule-title", "Enter")
    assert posts == []
    assert await stored_rules(page, served) == []

    # corrected, it saves
    await page.fill(field, "2")
    await wait_preview(page, "Will save: ")
    assert await page.get_attribute(field, "aria-invalid") is None
    await page.click("#rule-form button[type=submit]")
    await eventually(lambda: posts != [], seconds=15)
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    assert len(await stored_rules(page, served)) == 1
    assert problems.messages == []


async def test_change_rules_take_negative_thresholds_and_the_preview_follows_the_kind(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "de-DE")
    await page.select_option("#rule-kind", "change_below")
    await page.fill("#rule-threshold", "−2,5")  # a typographic minus
    text = await wait_preview(page, "Will save: ")
    assert text.startswith("Will save: every symbol: 24h change at or below -2,5 % · "), text
    assert "hysteresis 0,5 percentage points (default)" in text
    assert "cooldown 300 s ·" in text  # the field's value
    await page.fill("#rule-cooldown", "")
    await wait_preview(page, "Will save: ")
    assert "cooldown 300 s (default)" in await preview(page)

    # confluence rules: no threshold field; their default hysteresis is the placeholder
    await page.select_option("#rule-kind", "confluence_long")
    assert await page.locator("#rule-threshold").is_hidden()
    assert await page.get_attribute("#rule-hysteresis", "placeholder") == "default 5"
    assert await text_of(page, "#rule-hysteresis-unit") == "score points"
    # the configured long threshold (the page's setting), as de-DE writes it
    long = float(await page.get_attribute("body", "data-long-threshold") or "nan")
    assert (await preview(page)).startswith(
        f"Will save: every symbol: confluence score at or above {long:g} · ".replace(".", ",")
        + "hysteresis 5 score points (default)"
    ), await preview(page)
    # beta band change: no hysteresis at all
    await page.select_option("#rule-kind", "beta_band_change")
    assert await page.locator("#rule-hysteresis").is_hidden()
    assert "hysteresis" not in await preview(page)

    await page.select_option("#rule-kind", "change_below")
    async with page.expect_request(
        lambda r: r.method == "POST" and "/api/alerts/rules" in r.url
    ) as sent:
        await page.click("#rule-form button[type=submit]")
    body = json.loads((await sent.value).post_data or "{}")
    # an empty hysteresis or cooldown is not sent: the server's default applies
    assert body == {"kind": "change_below", "level": "warning", "threshold": -2.5}
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["threshold"], rule["cooldown_seconds"]) == (-2.5, 300)
    assert problems.messages == []


async def test_the_rule_list_falls_back_to_kind_and_threshold_without_a_description(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    context = await browser.new_context(viewport=DESKTOP, locale="de-DE", timezone_id="UTC")
    rule = {
        "id": "abc123def456",
        "kind": "price_above",
        "symbol": "BTCUSDT",
        "threshold": 86459.5,
        "level": "critical",
        "title": None,
    }
    await context.route(
        "**/api/alerts/rules*",
        lambda route: route.fulfill(json={"rules": [rule], "total": 1, "offset": 0, "limit": 50}),
    )
    page = await context.new_page()
    problems.watch(page)
    await page.goto(served.base + "/")
    await page.wait_for_selector("#rules-list li", state="attached", timeout=WAIT_MS)
    assert await page.locator("#rules-list .rule-text").text_content() == (
        "critical · BTCUSDT · price_above 86.459,5"
    )
    assert problems.messages == []
    await context.close()


# -- needs the backend's hysteresis (landed in 42bf507: RuleInput.hysteresis, description) --


async def test_hysteresis_round_trips_and_the_list_shows_the_servers_description(
    browser: Browser, served: ServedApp
) -> None:
    """The one test that depends on the server accepting `hysteresis`."""
    problems = PageProblems()
    page = await rule_form(browser, served, problems, "de-DE")
    await page.select_option("#rule-kind", "price_above")
    await page.select_option("#rule-symbol", "BTCUSDT")
    assert await page.get_attribute("#rule-hysteresis", "placeholder") == "default 0,5"
    assert await text_of(page, "#rule-hysteresis-unit") == "% of the threshold"
    await page.fill("#rule-threshold", "200")
    await page.fill("#rule-hysteresis", "0,25")
    text = await wait_preview(page, "Will save: ")
    assert "hysteresis 0,25 % of the threshold ·" in text, text
    await page.locator(".panel-alerts").screenshot(path=str(artifact("rule-form-de-DE")))
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["threshold"], rule["hysteresis"]) == (200, 0.25)
    assert rule["description"]
    listed = await text_of(page, "#rules-list .rule-text")
    assert listed == f"warning · BTCUSDT · {rule['description']}"
    assert problems.messages == []
