"""Compound rules (kind ``conditions``): every metric and comparison, all against any,
unknown values, timeframes accepted and refused, edge trigger, cooldown and the state
carried through JSON."""

from __future__ import annotations

import itertools
import json
from dataclasses import replace

import pytest

from app.market.models.candles import Candles
from app.services.alerts.compound_engine import TimeframeFacts
from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.evaluation import volume_spike
from app.services.alerts.rules import AlertRule, validate_rule
from tests.conftest import ManualClock

KNOWN = ("BTCUSDT", "ETHUSDT")
BASE = MarketFacts(
    "BTCUSDT",
    100.0,
    2.0,
    confluence_score=60.0,
    beta_band="neutral",
    funding_rate=0.0001,
    open_interest_change_1h_pct=3.0,
    long_short_ratio=1.5,
    components={"orderflow": 55.0, "volume": None},
    signal="neutral",
    timeframes={
        "5m": TimeframeFacts(
            confluence_score=72.0,
            signal="long",
            components={"orderflow": 81.0},
            volume_spike=2.5,
            beta_band="high",
        ),
        "1h": TimeframeFacts(confluence_score=40.0, signal="neutral"),
    },
)


def compound(*conditions: dict, join: str = "all", **kw) -> AlertRule:
    body = {"kind": "conditions", "symbol": "BTCUSDT", "conditions": list(conditions), "join": join}
    rule = validate_rule({**body, **kw}, KNOWN, created_at_ms=0)
    return rule.model_copy(update={"id": kw.get("title") or "r1"})


class Runner:
    """Ticks the engine, carrying its state through JSON as it is persisted."""

    def __init__(self, clock: ManualClock) -> None:
        counter = itertools.count()
        self.engine = AlertEngine(clock=clock, id_factory=lambda: f"a{next(counter)}")
        self.clock, self.state = clock, None

    def tick(self, rules: list[AlertRule], fact: MarketFacts, seconds: float = 1.0) -> list:
        self.clock.advance(seconds)
        alerts, state = self.engine.evaluate(rules, [fact], self.state)
        self.state = json.loads(json.dumps(state))
        return alerts


def fires(condition: dict, fact: MarketFacts = BASE) -> bool:
    """Whether a one-condition rule fires on its first look at ``fact``."""
    alerts, _ = AlertEngine().evaluate([compound(condition)], [fact], None)
    return bool(alerts)


NUMERIC_CASES = [
    ({"metric": "price", "comparison": "above", "value": 100}, True),
    ({"metric": "price", "comparison": "above", "value": 100.01}, False),
    ({"metric": "price", "comparison": "below", "value": 100}, True),
    ({"metric": "price", "comparison": "below", "value": 99}, False),
    ({"metric": "change_24h_pct", "comparison": "above", "value": 1.5}, True),
    ({"metric": "change_24h_pct", "comparison": "below", "value": -1}, False),
    ({"metric": "volume_spike", "comparison": "above", "value": 2, "timeframe": "5m"}, True),
    ({"metric": "volume_spike", "comparison": "below", "value": 2, "timeframe": "5m"}, False),
    ({"metric": "confluence", "comparison": "above", "value": 70}, False),
    ({"metric": "confluence", "comparison": "above", "value": 70, "timeframe": "5m"}, True),
    ({"metric": "confluence", "comparison": "below", "value": 45, "timeframe": "1h"}, True),
    ({"metric": "component", "component": "orderflow", "comparison": "above", "value": 50}, True),
    (
        {
            "metric": "component",
            "component": "orderflow",
            "comparison": "above",
            "value": 80,
            "timeframe": "5m",
        },
        True,
    ),
    ({"metric": "component", "component": "orderflow", "comparison": "below", "value": 50}, False),
    ({"metric": "funding_rate", "comparison": "above", "value": 0.0001}, True),
    ({"metric": "funding_rate", "comparison": "below", "value": 0}, False),
    ({"metric": "open_interest_change_pct", "comparison": "above", "value": 2}, True),
    ({"metric": "open_interest_change_pct", "comparison": "below", "value": 2}, False),
    ({"metric": "long_short_ratio", "comparison": "below", "value": 1.5}, True),
    ({"metric": "long_short_ratio", "comparison": "above", "value": 2}, False),
    ({"metric": "signal", "comparison": "is", "value": "neutral"}, True),
    ({"metric": "signal", "comparison": "is", "value": "long", "timeframe": "5m"}, True),
    ({"metric": "signal", "comparison": "is", "value": "long", "timeframe": "1h"}, False),
    ({"metric": "beta_band", "comparison": "is", "value": "neutral"}, True),
    ({"metric": "beta_band", "comparison": "is", "value": "high", "timeframe": "5m"}, True),
    ({"metric": "beta_band", "comparison": "is", "value": "low"}, False),
]


@pytest.mark.parametrize(("condition", "expected"), NUMERIC_CASES)
def test_each_metric_and_comparison_reads_its_value(condition: dict, expected: bool) -> None:
    assert fires(condition) is expected


@pytest.mark.parametrize(
    "condition",
    [
        {"metric": "component", "component": "volume", "comparison": "above", "value": 0},
        {"metric": "volume_spike", "comparison": "above", "value": 0, "timeframe": "1d"},
        {"metric": "confluence", "comparison": "above", "value": 0, "timeframe": "4h"},
        {"metric": "signal", "comparison": "is", "value": "neutral", "timeframe": "30m"},
        {"metric": "beta_band", "comparison": "changes", "timeframe": "4h"},
    ],
)
def test_an_unknown_value_is_never_met(condition: dict) -> None:
    assert not fires(condition)
    assert not fires(condition, replace(BASE, timeframes={}))


def test_a_value_that_is_not_finite_is_unknown() -> None:
    condition = {"metric": "change_24h_pct", "comparison": "above", "value": 1}
    assert not fires(condition, replace(BASE, change_24h_pct=float("nan")))
    assert not fires(condition, replace(BASE, change_24h_pct=float("inf")))


def test_unknown_derivatives_block_all_but_not_any(clock: ManualClock) -> None:
    no_perpetual = replace(BASE, funding_rate=None)
    price = {"metric": "price", "comparison": "above", "value": 50}
    funding = {"metric": "funding_rate", "comparison": "above", "value": 0}
    run = Runner(clock)
    assert run.tick([compound(price, funding)], no_perpetual) == []
    [alert] = run.tick([compound(price, funding, join="any", title="any")], no_perpetual)
    assert alert.values["funding_rate"] is None and alert.values["price"] == 100.0
    assert [c["met"] for c in alert.values["conditions"]] == [True, False]


def test_all_needs_every_condition_any_needs_one(clock: ManualClock) -> None:
    high = {"metric": "price", "comparison": "above", "value": 150}
    signal = {"metric": "signal", "comparison": "is", "value": "long", "timeframe": "5m"}
    run = Runner(clock)
    assert run.tick([compound(high, signal)], BASE) == []
    [alert] = run.tick([compound(high, signal, join="any", title="any")], BASE)
    assert alert.kind == "conditions" and alert.values["join"] == "any"
    assert (
        alert.message
        == "BTCUSDT any of: price at or above 150; signal (5m) is long — signal_5m long"
    )


def test_becomes_and_changes_compare_with_the_previous_known_state(clock: ManualClock) -> None:
    becomes = compound({"metric": "signal", "comparison": "becomes", "value": "long"})
    changes = compound({"metric": "beta_band", "comparison": "changes"}, title="changes")
    rules, run = [becomes, changes], Runner(clock)
    assert run.tick(rules, BASE) == []  # the first look only records the states
    assert run.tick(rules, replace(BASE, signal=None, beta_band=None)) == []  # unknown
    [alert] = run.tick(rules, replace(BASE, signal="long"))  # neutral → long
    assert alert.rule_id == "r1" and alert.values["conditions"][0]["previous"] == "neutral"
    [alert] = run.tick(rules, replace(BASE, signal="long", beta_band="high"))
    assert alert.rule_id == "changes" and alert.values["beta_band"] == "high"
    assert alert.values["conditions"][0]["previous"] == "neutral"
    assert run.tick(rules, replace(BASE, signal="long", beta_band="high")) == []


def test_fires_once_rearms_when_false_and_honours_the_cooldown(clock: ManualClock) -> None:
    rules = [
        compound({"metric": "price", "comparison": "above", "value": 100}, cooldown_seconds=60)
    ]
    run = Runner(clock)
    assert len(run.tick(rules, BASE)) == 1
    assert run.tick(rules, BASE) == []  # still true: fired once
    assert run.tick(rules, replace(BASE, price=99.0)) == []  # false: re-arms
    assert run.tick(rules, BASE, seconds=10) == []  # true again within the cooldown
    assert run.tick(rules, replace(BASE, price=99.0)) == []
    assert len(run.tick(rules, BASE, seconds=60)) == 1  # after the cooldown


def test_state_round_trips_and_old_state_is_read(clock: ManualClock) -> None:
    rule = compound({"metric": "signal", "comparison": "becomes", "value": "long"})
    old_state = {"version": 1, "entries": {"r1|BTCUSDT": {"armed": True, "last_fired_ms": None}}}
    engine = AlertEngine(clock=clock)
    alerts, state = engine.evaluate([rule], [BASE], old_state)
    assert alerts == [] and state["entries"]["r1|BTCUSDT"]["seen"] == {"0": "neutral"}
    carried = json.loads(json.dumps(state))
    alerts, _ = AlertEngine(clock=clock).evaluate([rule], [replace(BASE, signal="long")], carried)
    assert [a.values["signal"] for a in alerts] == ["long"]


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        (
            {"metric": "price", "comparison": "above", "value": 1, "timeframe": "5m"},
            "no timeframes",
        ),
        (
            {"metric": "funding_rate", "comparison": "above", "value": 0, "timeframe": "1h"},
            "no tim",
        ),
        (
            {"metric": "confluence", "comparison": "above", "value": 1, "timeframe": "2h"},
            "one of 1m",
        ),
        ({"metric": "beta_band", "comparison": "changes", "timeframe": "1d"}, "one of 4h, 1h, 5m"),
        (
            {"metric": "volume_spike", "comparison": "above", "value": 3},
            "required for volume_spike",
        ),
        ({"metric": "price", "comparison": "becomes", "value": 1}, "comparison: price is a number"),
        ({"metric": "signal", "comparison": "above", "value": 1}, "comparison: signal is a state"),
        ({"metric": "signal", "comparison": "becomes", "value": "up"}, "long, short, neutral"),
        ({"metric": "signal", "comparison": "changes", "value": "long"}, "value: not allowed"),
        ({"metric": "price", "comparison": "above", "value": "1"}, "needs a JSON number"),
        ({"metric": "price", "comparison": "above", "value": True}, "value"),
        ({"metric": "price", "comparison": "above", "value": 0}, "above 0"),
        ({"metric": "confluence", "comparison": "above", "value": 101}, "from 0 to 100"),
        ({"metric": "funding_rate", "comparison": "below", "value": -0.5}, "funding rate"),
        ({"metric": "component", "comparison": "above", "value": 5}, "component: required"),
        ({"metric": "price", "component": "volume", "comparison": "above", "value": 5}, "refused"),
        ({"metric": "component", "component": "vibes", "comparison": "above", "value": 5}, "vibe"),
        ({"metric": "gossip", "comparison": "above", "value": 5}, "metric"),
    ],
)
def test_a_bad_condition_is_refused_naming_its_index_and_field(condition: dict, words: str) -> None:
    good = {"metric": "price", "comparison": "above", "value": 1}
    with pytest.raises(ValueError) as refused:
        compound(good, condition)
    assert "conditions.1" in str(refused.value) and words in str(refused.value)


def test_bad_rule_shapes_are_refused() -> None:
    good = {"metric": "price", "comparison": "above", "value": 1}
    for body, words in [
        ({"kind": "conditions"}, "conditions is required"),
        ({"kind": "conditions", "conditions": []}, "at least 1"),
        ({"kind": "conditions", "conditions": [good] * 6}, "at most 5"),
        ({"kind": "conditions", "conditions": [good], "join": "most"}, "join"),
        ({"kind": "conditions", "conditions": [good], "threshold": 1}, "threshold is not"),
        ({"kind": "price_above", "threshold": 1, "conditions": [good]}, "not allowed for"),
        ({"kind": "price_above", "threshold": 1, "join": "any"}, "not allowed for"),
    ]:
        with pytest.raises(ValueError, match=words):
            validate_rule(body, KNOWN)


def test_the_stored_rule_shows_its_conditions_join_and_description() -> None:
    rule = validate_rule(
        {
            "kind": "conditions",
            "conditions": [
                {"metric": "confluence", "comparison": "above", "value": 70, "timeframe": "5m"},
                {"metric": "beta_band", "comparison": "becomes", "value": "high"},
            ],
        },
        KNOWN,
    )
    shown = rule.public_dict(70, 35)
    assert shown["join"] == "all" and shown["conditions"][1]["value"] == "high"
    assert shown["description"] == (
        "all of: confluence (5m) at or above 70; beta band becomes high"
    )
    assert AlertRule.from_dict(json.loads(json.dumps(rule.to_dict()))) == rule


def candles(volumes: list[float]) -> Candles:
    rows = [[i * 300_000, 1.0, 1.0, 1.0, 1.0, v] for i, v in enumerate(volumes)]
    return Candles.from_rows("BTCUSDT", "5m", rows)


def test_volume_spike_is_the_last_closed_volume_against_the_20_before() -> None:
    # 20 candles of 10, the last closed one of 35, the forming one (ignored) of 1000.
    assert volume_spike(candles([7.0] * 5 + [10.0] * 20 + [35.0, 1000.0])) == 3.5
    assert volume_spike(candles([10.0] * 20 + [35.0])) is None  # 20 closed: too few
    assert volume_spike(candles([0.0] * 20 + [35.0, 1.0])) is None  # no volume before
