"""The alert engine: edge-triggered firing, hysteresis, cooldown, persisted state."""

from __future__ import annotations

import itertools
import json

from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.rules import AlertRule
from tests.conftest import ManualClock

KNOWN = ("BTCUSDT", "ETHUSDT", "SOLUSDT")


def rule(kind: str, symbol: str | None = "BTCUSDT", threshold: float | None = None, **kw):
    return AlertRule(
        id=kw.pop("id", kind), kind=kind, symbol=symbol, threshold=threshold, created_at_ms=0, **kw
    )


def facts(price: float = 100.0, change: float = 0.0, score=None, band=None, symbol="BTCUSDT"):
    return [MarketFacts(symbol, price, change, score, band)]


class Runner:
    """Feeds the engine tick after tick, carrying the state (through JSON, as persisted)."""

    def __init__(self, engine: AlertEngine, clock: ManualClock) -> None:
        self.engine, self.clock, self.state = engine, clock, None
        self.alerts: list = []

    def tick(self, rules, market, seconds: float = 1.0) -> list:
        self.clock.advance(seconds)
        alerts, state = self.engine.evaluate(rules, market, self.state)
        self.state = json.loads(json.dumps(state))
        self.alerts += alerts
        return alerts


def make(clock: ManualClock, **kw) -> Runner:
    counter = itertools.count()
    return Runner(AlertEngine(clock=clock, id_factory=lambda: f"a{next(counter)}", **kw), clock)


def test_price_above_fires_on_the_crossing_with_a_readable_message(clock) -> None:
    run, rules = make(clock), [rule("price_above", threshold=100_000)]
    assert run.tick(rules, facts(99_000)) == []
    [alert] = run.tick(rules, facts(100_123.5))
    assert alert.message == "BTCUSDT at or above 100000: 100123.5"
    assert alert.values == {
        "price": 100_123.5,
        "threshold": 100_000,
        "hysteresis": 0.5,
        "last_price": 100_123.5,
        "observed": "last price",
    }
    assert (alert.rule_id, alert.symbol, alert.level, alert.status) == (
        "price_above",
        "BTCUSDT",
        "warning",
        "pending",
    )
    assert alert.created_at_ms == int(clock.now * 1000)
    assert alert.title == "BTCUSDT price above"
    assert run.tick(rules, facts(101_000)) == []  # still above: no new alert


def test_a_condition_already_true_fires_once(clock) -> None:
    run, rules = make(clock), [rule("price_below", threshold=50, title="cheap")]
    [alert] = run.tick(rules, facts(40))
    assert alert.title == "cheap" and alert.message == "BTCUSDT at or below 50: 40"
    assert run.tick(rules, facts(39)) == []


def test_a_price_oscillating_around_the_threshold_fires_once(clock) -> None:
    run = make(clock)
    rules = [rule("price_above", threshold=100.0, cooldown_seconds=0)]
    for i in range(100):
        run.tick(rules, facts(100.1 if i % 2 else 99.9), seconds=60)
    assert len(run.alerts) == 1
    run.tick(rules, facts(99.4), seconds=60)  # cleared by more than 0.5 %: re-armed
    assert len(run.tick(rules, facts(100.2), seconds=60)) == 1


def test_price_below_rearms_above_the_margin(clock) -> None:
    run, rules = make(clock), [rule("price_below", threshold=100.0, cooldown_seconds=0)]
    assert len(run.tick(rules, facts(99))) == 1
    run.tick(rules, facts(100.4))  # above, but within 0.5 %
    assert run.tick(rules, facts(99)) == []
    run.tick(rules, facts(100.6))
    assert len(run.tick(rules, facts(99))) == 1


def test_cooldown_swallows_crossings_within_it(clock) -> None:
    run, rules = make(clock), [rule("price_above", threshold=100.0, cooldown_seconds=300)]
    assert len(run.tick(rules, facts(101))) == 1
    run.tick(rules, facts(90), seconds=10)
    assert run.tick(rules, facts(101), seconds=10) == []  # re-armed, but cooling down
    run.tick(rules, facts(90), seconds=300)
    assert len(run.tick(rules, facts(101))) == 1  # after the cooldown


def test_change_rules_use_points_of_hysteresis(clock) -> None:
    run = make(clock)
    rules = [
        rule("change_above", threshold=5, cooldown_seconds=0),
        rule("change_below", threshold=-5, cooldown_seconds=0),
    ]
    [up] = run.tick(rules, facts(change=6.5))
    assert up.message == "BTCUSDT 24h change at or above 5%: 6.5%"
    assert run.tick(rules, facts(change=4.6)) == []  # 5 − 0.5 not reached: still fired
    assert run.tick(rules, facts(change=5.5)) == []
    run.tick(rules, facts(change=4.4))
    assert [a.kind for a in run.tick(rules, facts(change=5.1))] == ["change_above"]
    [down] = run.tick(rules, facts(change=-7))
    assert down.message == "BTCUSDT 24h change at or below -5%: -7%"


def test_a_rule_without_symbol_watches_every_symbol(clock) -> None:
    run, rules = make(clock), [rule("change_above", symbol=None, threshold=3)]
    market = [MarketFacts(s, 1.0, c) for s, c in zip(KNOWN, (4.0, 1.0, 10.0), strict=True)]
    alerts = run.tick(rules, market)
    assert sorted(a.symbol for a in alerts) == ["BTCUSDT", "SOLUSDT"]
    assert run.tick(rules, market) == []
    market[1] = MarketFacts("ETHUSDT", 1.0, 3.5)
    assert [a.symbol for a in run.tick(rules, market)] == ["ETHUSDT"]  # per-symbol state
    by_symbol = {f.symbol: f for f in market}
    assert run.engine.evaluate(rules, by_symbol, run.state)[0] == []  # a mapping works too


def test_confluence_long_and_short_use_the_configured_thresholds(clock) -> None:
    run = make(clock, long_threshold=70, short_threshold=35)
    rules = [
        rule("confluence_long", cooldown_seconds=0),
        rule("confluence_short", cooldown_seconds=0),
    ]
    assert run.tick(rules, facts(score=None)) == []  # no score: nothing to judge
    assert run.tick(rules, facts(score=50)) == []
    [long] = run.tick(rules, facts(score=72))
    assert long.kind == "confluence_long"
    assert long.message == "BTCUSDT confluence 72 at or above the long threshold 70"
    run.tick(rules, facts(score=66))  # above 70 − 5: still fired
    assert run.tick(rules, facts(score=71)) == []
    run.tick(rules, facts(score=64))
    assert len(run.tick(rules, facts(score=70))) == 1
    [short] = run.tick(rules, facts(score=30))
    assert short.kind == "confluence_short" and short.values["threshold"] == 35
    run.tick(rules, facts(score=39))  # below 35 + 5
    assert run.tick(rules, facts(score=34)) == []
    run.tick(rules, facts(score=41))
    assert len(run.tick(rules, facts(score=35))) == 1


def test_beta_band_change_fires_on_a_change_after_the_first_observation(clock) -> None:
    run, rules = make(clock), [rule("beta_band_change", symbol=None, cooldown_seconds=0)]
    assert run.tick(rules, facts(band="low")) == []  # first observation only records
    assert run.tick(rules, facts(band="low")) == []
    assert run.tick(rules, facts(band=None)) == []  # unknown: keeps the last band
    [alert] = run.tick(rules, facts(band="high"))
    assert alert.message == "BTCUSDT beta band changed: low → high"
    assert alert.values == {"band": "high", "previous_band": "low"}
    assert len(run.tick(rules, facts(band="neutral"))) == 1


def test_state_is_json_and_evaluate_is_pure(clock) -> None:
    engine = AlertEngine(clock=clock, id_factory=lambda: "x")
    rules = [rule("price_above", threshold=100), rule("beta_band_change")]
    market = facts(101, band="low")
    alerts, state = engine.evaluate(rules, market, None)
    assert json.loads(json.dumps(state)) == state
    assert state["entries"]["price_above|BTCUSDT"]["armed"] is False
    assert state["entries"]["beta_band_change|BTCUSDT"]["band"] == "low"
    frozen = json.dumps(state)
    again, state2 = engine.evaluate(rules, market, state)
    assert json.dumps(state) == frozen  # input untouched
    assert again == []
    assert engine.evaluate(rules, market, None)[0] == alerts  # deterministic
    # A deleted rule's state is dropped.
    _, pruned = engine.evaluate(rules[1:], market, state2)
    assert list(pruned["entries"]) == ["beta_band_change|BTCUSDT"]
    # An unknown state version starts afresh.
    assert len(engine.evaluate(rules, market, {"version": 99})[0]) == 1


def test_a_burst_goes_out_over_several_evaluations(clock) -> None:
    """Every rule true at once for every symbol: at most max_alerts per evaluation, the
    rest at the next ones, none lost and none twice."""
    run = make(clock, max_alerts=4)
    rules = [rule("price_above", symbol=None, threshold=1.0, id=f"r{i}") for i in range(3)]
    market = [MarketFacts(s, 10.0, 0.0) for s in KNOWN]  # 3 rules × 3 symbols = 9
    sizes = [len(run.tick(rules, market)) for _ in range(4)]
    assert sizes == [4, 4, 1, 0]
    fired = {(a.rule_id, a.symbol) for a in run.alerts}
    assert len(fired) == 9 == len(run.alerts)
