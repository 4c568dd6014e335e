"""The rule form's compound rules (kind ``conditions``) and message templates in
Chromium (issue 20): condition rows added and removed (1 to 5), each offering only the
comparisons, states and timeframes its metric accepts (the server's own lists); a rule
of two conditions joined by "any" stored as meant; a template with an unknown variable
refused with the server's message and nothing stored; a valid template stored. Every
check of what was stored reads GET /api/alerts/rules."""

from __future__ import annotations

import json

import pytest
from playwright.async_api import Browser, Locator, Page, expect

from app.market.models.confluence_weights import COMPONENTS
from app.services.alerts.compound import MAX_CONDITIONS, METRICS, NUMERIC, STATES, TIMEFRAMES_OF
from tests.browser.test_keyboard import unnamed_controls
from tests.support.browser import PageProblems, ServedApp, artifact, text_of
from tests.support.rule_form import (
    API_TOKEN,
    WAIT_MS,
    preview,
    rule_form,
    stored_rules,
    wait_preview,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

RULES = "/api/alerts/rules"


def field(page: Page, row: int, name: str) -> Locator:
    """A control of condition row ``row`` (1-based) by its accessible name's field."""
    return page.get_by_label(f"Condition {row} {name}", exact=True)


async def compound_form(browser: Browser, served: ServedApp, problems: PageProblems, locale: str):
    page = await rule_form(browser, served, problems, locale)
    await page.select_option("#rule-kind", "conditions")
    await expect(page.locator("#rule-conditions")).to_be_visible()
    return page


async def options(select: Locator) -> list[str]:
    return await select.evaluate("(s) => [...s.options].map((o) => o.value)")


async def rows(page: Page) -> int:
    return await page.locator("#rule-condition-list li.condition").count()


async def test_a_rule_of_two_conditions_joined_by_any_is_stored_as_meant(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "de-DE")
    await page.select_option("#rule-symbol", "BTCUSDT")
    assert await page.locator("#rule-threshold").is_hidden()
    assert await page.locator("#rule-hysteresis").is_hidden()
    await field(page, 1, "metric").select_option("price")
    await field(page, 1, "comparison").select_option("above")
    await field(page, 1, "value").fill("60.000,5")  # the de-DE way
    await page.click("#rule-condition-add")
    # the new row has the focus: it is set from the keyboard
    assert await page.evaluate(
        "document.activeElement.getAttribute('aria-label') === 'Condition 2 metric'"
    )
    await field(page, 2, "metric").select_option("signal")
    await field(page, 2, "comparison").select_option("becomes")
    await field(page, 2, "state").select_option("long")
    await field(page, 2, "timeframe").select_option("5m")
    await page.select_option("#rule-join", "any")
    assert await unnamed_controls(page) == []  # every row's control is named
    await page.locator(".panel-alerts").screenshot(path=str(artifact("rule-form-compound")))
    text = await wait_preview(page, "Will save: BTCUSDT: any of:")
    assert text == (
        "Will save: BTCUSDT: any of: price at or above 60.000,5; signal (5m) becomes long"
        " · cooldown 300 s · warning"
    ), text
    async with page.expect_request(lambda r: r.method == "POST" and RULES in r.url) as sent:
        await page.click("#rule-form button[type=submit]")
    body = json.loads((await sent.value).post_data or "{}")
    assert body == {
        "kind": "conditions",
        "level": "warning",
        "symbol": "BTCUSDT",
        "conditions": [
            {"metric": "price", "comparison": "above", "value": 60000.5},
            {"metric": "signal", "comparison": "becomes", "value": "long", "timeframe": "5m"},
        ],
        "join": "any",
        "cooldown_seconds": 300,
    }
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert (rule["kind"], rule["join"], rule["symbol"], rule["template"]) == (
        "conditions",
        "any",
        "BTCUSDT",
        None,
    )
    assert rule["conditions"] == [
        {
            "metric": "price",
            "comparison": "above",
            "value": 60000.5,
            "timeframe": None,
            "component": None,
        },
        {
            "metric": "signal",
            "comparison": "becomes",
            "value": "long",
            "timeframe": "5m",
            "component": None,
        },
    ]
    # the list shows the server's description
    assert rule["description"] == "any of: price at or above 60000.5; signal (5m) becomes long"
    assert await text_of(page, "#rules-list .rule-text") == (
        f"warning · BTCUSDT · {rule['description']}"
    )
    assert problems.messages == []


async def test_each_metric_offers_only_what_it_accepts(browser: Browser, served: ServedApp) -> None:
    """Comparisons, states, timeframes and the component as the server's compound.py
    accepts them: a timeframe only where one applies, required for volume_spike."""
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "en-US")
    assert await options(field(page, 1, "metric")) == list(METRICS)
    for metric in METRICS:
        await field(page, 1, "metric").select_option(metric)
        comparisons = await options(field(page, 1, "comparison"))
        timeframe = field(page, 1, "timeframe")
        if metric in NUMERIC:
            assert comparisons == ["above", "below"], metric
            assert await field(page, 1, "value").is_visible()
            assert await field(page, 1, "state").is_hidden()
        else:
            assert comparisons == ["is", "becomes", "changes"], metric
            assert await field(page, 1, "value").is_hidden()
            assert await options(field(page, 1, "state")) == list(STATES[metric])
            await field(page, 1, "comparison").select_option("changes")
            assert await field(page, 1, "state").is_hidden()  # changes takes no value
            await field(page, 1, "comparison").select_option("is")
        if metric not in TIMEFRAMES_OF:
            assert await timeframe.is_hidden(), metric
        else:
            assert await timeframe.is_visible(), metric
            offered = await options(timeframe)
            # volume_spike: a timeframe is required (no "none"); the others may go without
            none = [] if metric == "volume_spike" else [""]
            assert offered == [*none, *TIMEFRAMES_OF[metric]], metric
        component = field(page, 1, "component")
        assert await component.is_visible() == (metric == "component")
        if metric == "component":
            assert await options(component) == list(COMPONENTS)
    # a volume spike is saved with its timeframe (the first one offered)
    await field(page, 1, "metric").select_option("volume_spike")
    await field(page, 1, "value").fill("3")
    text = await wait_preview(page, "Will save: ")
    assert text.startswith("Will save: every symbol: volume spike (1m) at or above 3 · "), text
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert rule["conditions"][0]["timeframe"] == "1m"
    assert problems.messages == []


async def test_a_condition_value_is_read_the_locales_way_or_refused(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "de-DE")
    await field(page, 1, "metric").select_option("price")
    refused = await wait_preview(page, "Not saved: ")
    assert refused == "Not saved: Condition 1 value: required for price", refused
    await field(page, 1, "value").fill("1.234")  # thousands or decimals? (de-DE)
    assert "ambiguous" in await wait_preview(page, "Not saved: Condition 1 value: ")
    assert await field(page, 1, "value").get_attribute("aria-invalid") == "true"
    await field(page, 1, "metric").select_option("confluence")
    await field(page, 1, "value").fill("101")
    assert await wait_preview(page, "Not saved: ") == "Not saved: Condition 1 value: at most 100"
    assert await page.get_attribute("#rule-form button[type=submit]", "aria-disabled") == "true"
    await page.click("#rule-form button[type=submit]", force=True)
    await expect(page.locator("#rules-status")).to_have_text(
        "Not saved: Condition 1 value: at most 100"
    )
    assert await page.evaluate(
        "document.activeElement.getAttribute('aria-label') === 'Condition 1 value'"
    )
    await field(page, 1, "value").fill("72,5")
    text = await wait_preview(page, "Will save: ")
    assert text.startswith(
        "Will save: every symbol: confluence (all timeframes combined) at or above 72,5"
    ), text
    assert await stored_rules(page, served) == []
    assert problems.messages == []


async def test_a_template_with_an_unknown_variable_is_refused_with_the_servers_message(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "en-US")
    await field(page, 1, "metric").select_option("signal")
    await field(page, 1, "comparison").select_option("changes")
    await field(page, 1, "timeframe").select_option("1h")
    assert await text_of(page, "#rule-template-values") == "This rule's values: values.signal_1h."
    await page.fill("#rule-template", "{{ symbol }}: {{ values.signal_5m }}")  # not this rule's
    text = await wait_preview(page, "Will save: ")
    assert text.endswith(" · message from the template"), text
    async with page.expect_request(lambda r: r.method == "POST" and RULES in r.url) as sent:
        await page.click("#rule-form button[type=submit]")
    body = (await sent.value).post_data or "{}"
    assert json.loads(body)["template"] == "{{ symbol }}: {{ values.signal_5m }}"
    await page.wait_for_function(
        "() => document.getElementById('rules-status').textContent.startsWith('Could not')",
        timeout=WAIT_MS,
    )
    # the same body sent again: the status is the server's own message
    answer = await page.request.post(
        served.base + RULES,
        data=body,
        headers={"Authorization": f"Bearer {API_TOKEN}", "Content-Type": "application/json"},
    )
    assert answer.status == 400
    message = (await answer.json())["message"]
    assert "signal_5m" in message and message.startswith("template: ")
    assert await text_of(page, "#rules-status") == f"Could not create the rule: {message}"
    assert await page.get_attribute("#rule-template", "aria-invalid") == "true"
    assert await stored_rules(page, served) == []
    assert [m for m in problems.messages if "status of 400" not in m] == []


async def test_a_valid_template_is_stored_for_a_compound_and_a_single_rule(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "en-US")
    await field(page, 1, "metric").select_option("component")
    await field(page, 1, "component").select_option("orderflow")
    await field(page, 1, "comparison").select_option("below")
    await field(page, 1, "value").fill("30")
    await field(page, 1, "timeframe").select_option("4h")
    template = "{{ symbol }} orderflow {{ values.component_orderflow_4h }} at {{ price }}"
    await page.fill("#rule-template", f"  {template}\n")
    await wait_preview(page, "Will save: every symbol: orderflow component (4h) at or below 30")
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert rule["template"] == template
    assert rule["conditions"] == [
        {
            "metric": "component",
            "comparison": "below",
            "value": 30,
            "timeframe": "4h",
            "component": "orderflow",
        },
    ]
    assert await page.get_attribute("#rule-template", "aria-invalid") is None
    # any kind takes a template
    await page.select_option("#rule-kind", "price_above")
    assert await page.locator("#rule-conditions").is_hidden()
    assert await text_of(page, "#rule-template-values") == ""
    await page.fill("#rule-threshold", "100")
    await page.fill("#rule-template", "{{ symbol }} above {{ values.threshold }}")
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_function(
        "() => document.querySelectorAll('#rules-list li').length === 2", timeout=WAIT_MS
    )
    single = [r for r in await stored_rules(page, served) if r["kind"] == "price_above"]
    assert [r["template"] for r in single] == ["{{ symbol }} above {{ values.threshold }}"]
    assert [(r["conditions"], r["join"]) for r in single] == [(None, None)]
    assert problems.messages == []


async def test_rows_are_removed_by_keyboard_and_at_most_five_are_offered(
    browser: Browser, served: ServedApp
) -> None:
    problems = PageProblems()
    page = await compound_form(browser, served, problems, "en-US")
    add = page.locator("#rule-condition-add")
    assert await rows(page) == 1
    assert await page.get_by_role("button", name="Remove condition 1").is_hidden()  # 1 at least
    metrics = ["price", "change_24h_pct", "funding_rate", "long_short_ratio", "confluence"]
    for n, metric in enumerate(metrics, start=1):
        if n > 1:
            await add.focus()
            await page.keyboard.press("Enter")
        await field(page, n, "metric").select_option(metric)
        await field(page, n, "value").fill(str(n / 1000))
    assert await rows(page) == MAX_CONDITIONS
    await expect(add).to_be_disabled()
    await expect(add).to_have_text(f"At most {MAX_CONDITIONS} conditions")
    await add.evaluate("(b) => b.click()")  # a click on the disabled button adds nothing
    assert await rows(page) == MAX_CONDITIONS

    # remove the 2nd row from the keyboard: the rows after it are renumbered
    await page.get_by_role("button", name="Remove condition 2").focus()
    await page.keyboard.press("Enter")
    assert await rows(page) == MAX_CONDITIONS - 1
    await expect(add).to_be_enabled()
    await expect(add).to_have_text("Add condition")
    assert await page.evaluate(
        "document.activeElement.getAttribute('aria-label') === 'Condition 2 metric'"
    )
    assert await field(page, 2, "metric").input_value() == "funding_rate"
    await expect(field(page, 5, "metric")).to_have_count(0)
    text = await preview(page)
    assert text.startswith(
        "Will save: every symbol: all of: price at or above 0.001; funding rate at or above "
        "0.003; long short ratio at or above 0.004; confluence (all timeframes combined) at "
        "or above 0.005 · "
    ), text
    await page.click("#rule-form button[type=submit]")
    await page.wait_for_selector("#rules-list li", timeout=WAIT_MS)
    [rule] = await stored_rules(page, served)
    assert [c["metric"] for c in rule["conditions"]] == [
        "price",
        "funding_rate",
        "long_short_ratio",
        "confluence",
    ]
    assert rule["join"] == "all"
    assert problems.messages == []
