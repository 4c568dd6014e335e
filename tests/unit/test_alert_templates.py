"""Message templates: rendered with the values that fired, refused on save for each
kind of bad template, and a template failing at evaluation falls back to the default
message (counted, logged once)."""

from __future__ import annotations

import logging

import pytest

from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.rules import validate_rule
from app.services.alerts.templates import MAX_OUTPUT, render

KNOWN = ("BTCUSDT",)
FACT = MarketFacts("BTCUSDT", 101.5, 2.0, confluence_score=75.0, signal="long")


def fired(body: dict) -> str:
    rule = validate_rule({"symbol": "BTCUSDT", **body}, KNOWN)
    [alert], _ = AlertEngine().evaluate([rule], [FACT], None)
    return alert.message


def test_a_threshold_rule_renders_its_values() -> None:
    template = (
        "{{ symbol }} {{ kind }} [{{ level|upper }}] {{ values.price }} ≥ {{ values.threshold }}"
        " ({{ title }}; was: {{ message }})"
    )
    message = fired({"kind": "price_above", "threshold": 100, "template": template})
    assert message == (
        "BTCUSDT price_above [WARNING] 101.5 ≥ 100.0 (BTCUSDT price above; was: BTCUSDT at or "
        "above 100: 101.5)"
    )


def test_a_compound_rule_renders_each_condition() -> None:
    template = (
        "{{ symbol }} {{ values.join }}: {% for c in values.conditions %}{{ c.name }}="
        "{{ c.value }}{{ '✓' if c.met else '✗' }} {% endfor %}"
        "score {{ values.confluence|round(1) }} at {{ price }}"
    )
    body = {
        "kind": "conditions",
        "join": "any",
        "conditions": [
            {"metric": "confluence", "comparison": "above", "value": 70},
            {"metric": "signal", "comparison": "is", "value": "short"},
        ],
        "template": template,
    }
    assert fired(body) == ("BTCUSDT any: confluence=75.0✓ signal=long✗ score 75.0 at 101.5")


def test_the_output_is_bounded() -> None:
    text = render("{% for i in range(100) %}{{ 'x' * 100 }}{% endfor %}", {})
    assert len(text) == MAX_OUTPUT and text.endswith("…")


BAD = {
    "syntax": [
        "{{ symbol ",
        "{% if symbol %}no end",
        "{% for %}{% endfor %}",
        "{{ values.price | }}",
        "{% endif %}",
    ],
    "unknown variable": [
        "{{ sym }}",
        "{{ values.funding_rate }}",  # a price rule has no funding rate
        "{{ values.price.nope }}",
        "{{ secret }}",
        "{{ values['threshold2'] }}",
    ],
    "sandbox violation": [
        "{{ ''.__class__.__mro__ }}",
        "{{ symbol.__class__.__base__.__subclasses__() }}",
        "{{ values.__init__.__globals__ }}",
        "{{ range.__globals__ }}",
        "{{ (symbol|attr('__class__')) }}",
        "{{ values.clear() }}",
        "{{ values.conditions.append(1) if values.conditions is defined else values.update({}) }}",
    ],
    "bounds": [
        "{% for i in range(1000) %}{% endfor %}",
        "{{ 'x' * 100000 }}",
        "{{ 9 ** 999999 }}",
        "{{ '%99999999s' % 1 }}",
        "{{ 'x'.center(99999999) }}",
        "{{ '{:>99999999}'.format(1) }}",
        "{{ 'x'|center(99999999) }}",
        "{% for a in range(9) %}{% for b in range(9) %}{% for c in range(9) %}{% endfor %}"
        "{% endfor %}{% endfor %}",
        "{% macro boom() %}{{ boom() }}{% endmacro %}{{ boom() }}",
        "{% include 'x' %}",
        "{% extends 'base' %}",
        "{% import 'x' as y %}",
    ],
    "wrong type for a filter": ["{{ price|dictsort }}", "{{ symbol|truncate(-5) }}"],
    "work": [
        "{% set s = 'abcdefghij' * 30 %}{% for a in s %}{% for b in s %}"
        "{% set x = s|replace('a', 'b') %}{% endfor %}{% endfor %}{{ symbol }}",
        "{% set s = 'abcdefghij' * 30 %}{% for a in s %}{% for b in s %}"
        "{% if loop.index > 5 and loop.first and loop.length > 3 %}{% endif %}"
        "{% endfor %}{% endfor %}{{ symbol }}",
        "{% for c in symbol recursive %}{{ loop(c) }}{% endfor %}",
    ],
    "blank": ["", "   ", "{% if symbol == 'none' %}{{ symbol }}{% endif %}"],
    # Growth without ``*``: each doubling passes alone; fifty would take gigabytes.
    "growth": [
        "{% set s = 'aaaaaaaaaa' %}" + "{% set s = s ~ s %}" * 12 + "{{ s|length }}",
        "{% set s = 'xxxxxxxxxx' %}" + "{% set s = s.replace('x', s) %}" * 4,
        "{% set s = 'xxxxxxxxxx' %}" + "{% set s = s|replace('x', s) %}" * 4,
        "{% set s = 'xxxxxxxxxx' %}" + "{% set s = s|join(s) %}" * 4,
        "{% set l = range(100)|list %}" + "{% set l = l + l %}" * 6,
        "{% set n = 99999999999 %}" + "{% set n = n * n %}" * 9 + "{{ n > 0 }}",
        "{{ range(9)|slice(99999999)|list|length }}",
        "{% set b %}{{ symbol }}{% endset %}{{ b }}",
        "{% filter upper %}{{ symbol }}{% endfilter %}",
    ],
}


@pytest.mark.parametrize(
    ("why", "template"), [(why, t) for why, items in BAD.items() for t in items]
)
def test_a_bad_template_is_refused_on_save_with_the_reason(why: str, template: str) -> None:
    with pytest.raises(ValueError, match="template: ") as refused:
        validate_rule({"kind": "price_above", "threshold": 100, "template": template}, KNOWN)
    if why == "sandbox violation":
        assert "sandbox violation" in str(refused.value) or "Undefined" in str(refused.value)


def test_a_too_long_template_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 1000 characters"):
        validate_rule({"kind": "price_above", "threshold": 1, "template": "x" * 1001}, KNOWN)


def test_a_compound_template_may_name_only_its_conditions() -> None:
    body = {
        "kind": "conditions",
        "conditions": [{"metric": "price", "comparison": "above", "value": 1}],
    }
    validate_rule({**body, "template": "{{ values.price }} {{ values.last_price }}"}, KNOWN)
    with pytest.raises(ValueError, match="has no attribute 'signal'"):
        validate_rule({**body, "template": "{{ values.signal }}"}, KNOWN)


def test_a_template_failing_at_evaluation_falls_back_once_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    rule = validate_rule(
        {
            "kind": "price_above",
            "symbol": "BTCUSDT",
            "threshold": 100,
            "cooldown_seconds": 0,
            "template": "{{ price }}",
        },
        KNOWN,
    )
    # A template that fails only on real values (stored before a change, say).
    broken = rule.model_copy(update={"template": "{{ values.price / (values.price - 101.5) }}"})
    engine = AlertEngine()
    state = None
    messages = []
    with caplog.at_level(logging.WARNING):
        for price in (101.5, 90.0, 101.5):
            alerts, state = engine.evaluate([broken], [MarketFacts("BTCUSDT", price, 0.0)], state)
            messages += [a.message for a in alerts]
    assert messages == ["BTCUSDT at or above 100: 101.5"] * 2
    assert engine.template_failures == 2
    assert sum("template failed" in r.message for r in caplog.records) == 1


def test_a_template_giving_no_text_on_real_values_sends_the_default_message() -> None:
    body = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 100, "cooldown_seconds": 0}
    # the sample price (1.0) gives text, so the save check passes
    rule = validate_rule({**body, "template": "{% if price < 100 %}cheap{% endif %}"}, KNOWN)
    engine = AlertEngine()
    alerts, _ = engine.evaluate([rule], [MarketFacts("BTCUSDT", 101.5, 0.0)], None)
    assert [a.message for a in alerts] == ["BTCUSDT at or above 100: 101.5"]
    assert engine.template_failures == 1


def test_a_template_raising_anything_on_real_values_sends_the_default_message() -> None:
    body = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 100, "cooldown_seconds": 0}
    template = "{% if price < 100 %}{{ price }}{% else %}{{ price|dictsort }}{% endif %}"
    rule = validate_rule({**body, "template": template}, KNOWN)  # fine on the sample (1.0)
    engine = AlertEngine()
    alerts, _ = engine.evaluate([rule], [MarketFacts("BTCUSDT", 101.5, 0.0)], None)
    assert [a.message for a in alerts] == ["BTCUSDT at or above 100: 101.5"]
    assert engine.template_failures == 1
