"""Alert rule validation and the JSON round trip of rules and alerts."""

from __future__ import annotations

import pytest

from app.services.alerts.rules import Alert, AlertRule, RuleInput, validate_rule

KNOWN = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}


def test_a_valid_rule_gets_an_id_defaults_and_a_canonical_symbol() -> None:
    rule = validate_rule({"kind": "price_above", "symbol": "btc/usdt", "threshold": 100_000}, KNOWN)
    assert rule.symbol == "BTCUSDT"
    assert rule.threshold == 100_000.0
    assert (rule.level, rule.cooldown_seconds, rule.title, rule.webhook_url) == (
        "warning",
        300,
        None,
        None,
    )
    assert len(rule.id) == 12 and rule.created_at_ms > 0
    other = validate_rule(RuleInput(kind="confluence_long"), KNOWN)
    assert other.symbol is None and other.id != rule.id  # every symbol


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"kind": "price_sideways", "threshold": 1}, "kind: .*'price_above'.*'beta_band_change'"),
        ({"kind": "price_above"}, "threshold is required for price_above"),
        ({"kind": "change_below"}, "threshold is required for change_below"),
        ({"kind": "price_above", "threshold": -5}, "must be a price > 0"),
        ({"kind": "price_above", "threshold": float("nan")}, "threshold: .*finite"),
        ({"kind": "change_above", "threshold": float("inf")}, "threshold: .*finite"),
        ({"kind": "price_above", "threshold": "lots"}, "threshold: "),
        ({"kind": "confluence_long", "threshold": 80}, "threshold is not allowed"),
        ({"kind": "beta_band_change", "threshold": 1}, "threshold is not allowed"),
        ({"kind": "confluence_long", "level": "panic"}, "level: .*'info'.*'critical'"),
        ({"kind": "confluence_long", "cooldown_seconds": -1}, "cooldown_seconds"),
        ({"kind": "confluence_long", "cooldown_seconds": 86_401}, "cooldown_seconds"),
        ({"kind": "confluence_long", "title": "x" * 81}, "title: .*80"),
        ({"kind": "confluence_long", "note": "x" * 501}, "note: .*500"),
        ({"kind": "confluence_long", "webhook_url": "ftp://example.com/x"}, "webhook_url: .*http"),
        ({"kind": "confluence_long", "webhook_url": "http://"}, "webhook_url"),
        ({"kind": "confluence_long", "webhook_url": "https://a.io/" + "x" * 500}, "webhook_url"),
        ({"kind": "confluence_long", "symbol": "$$$"}, "symbol: not a symbol"),
        ({"kind": "confluence_long", "surprise": 1}, "surprise: Extra inputs"),
        ({"threshold": 1}, "kind: Field required"),
    ],
)
def test_bad_rules_are_rejected_with_a_clear_message(data: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_rule(data, KNOWN)


def test_an_unknown_symbol_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown symbol 'DOGEUSDT'; known symbols: BTCUSDT, ETH"):
        validate_rule({"kind": "price_below", "symbol": "doge-usdt", "threshold": 0.1}, KNOWN)


def test_rules_and_alerts_round_trip_through_json() -> None:
    rule = validate_rule(
        {
            "kind": "change_above",
            "symbol": "ETHUSDT",
            "threshold": 5,
            "level": "critical",
            "title": "ETH pumps",
            "webhook_url": "https://hooks.example.com/a",
        },
        KNOWN,
    )
    assert AlertRule.from_dict(rule.to_dict()) == rule
    alert = Alert(
        id="a1",
        rule_id=rule.id,
        kind=rule.kind,
        symbol="ETHUSDT",
        level="critical",
        title="ETH pumps",
        message="ETHUSDT 24h change above 5%: 6.5%",
        values={"change_24h_pct": 6.5, "threshold": 5.0},
        created_at_ms=1,
    )
    assert Alert.from_dict(alert.to_dict()) == alert
    assert alert.to_dict()["status"] == "pending"


def test_status_transitions() -> None:
    alert = Alert(
        id="a", rule_id="r", kind="price_above", symbol="BTCUSDT", level="info", title="t",
        message="m", created_at_ms=1,
    )  # fmt: skip
    acked = alert.with_status("acknowledged", 5)
    assert (acked.status, acked.acknowledged_at_ms) == ("acknowledged", 5)
    resolved = acked.with_status("resolved", 9)
    assert (resolved.status, resolved.resolved_at_ms, resolved.acknowledged_at_ms) == (
        "resolved",
        9,
        5,
    )
    assert alert.with_status("resolved", 3).status == "resolved"
    for bad_from, bad_to in [(acked, "pending"), (resolved, "acknowledged"), (alert, "pending")]:
        with pytest.raises(ValueError, match="cannot go from"):
            bad_from.with_status(bad_to, 10)
