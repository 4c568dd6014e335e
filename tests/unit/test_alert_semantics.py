"""One meaning for every threshold rule, at its exact boundaries: met at or beyond the
threshold, re-armed at or past the re-arm level, fired again after the cooldown for a
crossing deeper by the hysteresis; and the prices between two evaluations (1m candles)."""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest

from app.market.models.candles import Candles
from app.services.alerts.conditions import DEFAULT_HYSTERESIS, condition_of
from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.price_trail import PriceTrails
from app.services.alerts.rules import AlertRule, validate_rule
from tests.conftest import ManualClock

LONG, SHORT = 70.0, 35.0
# kind → (threshold given, the metric's threshold, +1 at or above / −1 at or below)
KINDS = {
    "price_above": (200.0, 200.0, 1),
    "price_below": (200.0, 200.0, -1),
    "change_above": (5.0, 5.0, 1),
    "change_below": (-5.0, -5.0, -1),
    "confluence_long": (None, LONG, 1),
    "confluence_short": (None, SHORT, -1),
    "funding_above": (0.0005, 0.0005, 1),
    "funding_below": (-0.0003, -0.0003, -1),
    "open_interest_change_above": (5.0, 5.0, 1),
    "open_interest_change_below": (-4.0, -4.0, -1),
    "long_short_above": (2.0, 2.0, 1),
    "long_short_below": (0.6, 0.6, -1),
    "component_above": (80.0, 80.0, 1),
    "component_below": (20.0, 20.0, -1),
}
COMPONENT = "orderflow"  # what the component rules of these tests watch


def facts_for(kind: str, value: float) -> list[MarketFacts]:
    """Facts whose ``kind`` metric is exactly ``value``."""
    if kind.startswith("price_"):
        return [MarketFacts("BTCUSDT", value, 0.0)]
    if kind.startswith("change_"):
        return [MarketFacts("BTCUSDT", 100.0, value)]
    family = kind.rpartition("_")[0]
    if family == "funding":
        return [MarketFacts("BTCUSDT", 100.0, 0.0, funding_rate=value)]
    if family == "open_interest_change":
        return [MarketFacts("BTCUSDT", 100.0, 0.0, open_interest_change_1h_pct=value)]
    if family == "long_short":
        return [MarketFacts("BTCUSDT", 100.0, 0.0, long_short_ratio=value)]
    if family == "component":
        return [MarketFacts("BTCUSDT", 100.0, 0.0, components={COMPONENT: value})]
    return [MarketFacts("BTCUSDT", 100.0, 0.0, confluence_score=value)]


class Run:
    def __init__(
        self,
        kind: str,
        cooldown: int = 0,
        hysteresis: float | None = None,
        threshold: float | None = None,
    ) -> None:
        given, self.threshold, self.direction = KINDS[kind]
        if threshold is not None:
            given = self.threshold = threshold
        self.kind, self.clock, self.state = kind, ManualClock(), None
        counter = itertools.count()
        self.engine = AlertEngine(LONG, SHORT, self.clock, id_factory=lambda: f"a{next(counter)}")
        component = COMPONENT if kind.startswith("component_") else None
        self.rule = AlertRule(
            id="r",
            kind=kind,
            symbol="BTCUSDT",
            threshold=given,
            cooldown_seconds=cooldown,
            hysteresis=hysteresis,
            component=component,
            created_at_ms=0,
        )
        self.condition = condition_of(
            kind,
            given,
            hysteresis,
            long_threshold=LONG,
            short_threshold=SHORT,
            component=component,
        )

    def at(self, value: float, seconds: float = 1.0) -> list:
        self.clock.advance(seconds)
        alerts, state = self.engine.evaluate([self.rule], facts_for(self.kind, value), self.state)
        self.state = json.loads(json.dumps(state))
        return alerts

    def short_of(self, value: float) -> float:
        """The float next to ``value`` on the side that is not yet beyond it."""
        return math.nextafter(value, -math.inf * self.direction)

    def past(self, value: float) -> float:
        return math.nextafter(value, math.inf * self.direction)


@pytest.mark.parametrize("kind", KINDS)
def test_a_rule_is_met_exactly_at_its_threshold_and_not_short_of_it(kind: str) -> None:
    run = Run(kind)
    assert run.at(run.short_of(run.threshold)) == []
    [alert] = run.at(run.threshold)
    assert alert.kind == kind
    assert "at or" in alert.message


@pytest.mark.parametrize("kind", KINDS)
def test_a_fired_rule_rearms_exactly_at_its_rearm_level(kind: str) -> None:
    run = Run(kind)
    assert run.condition is not None
    rearm = run.condition.rearm_at
    assert len(run.at(run.threshold)) == 1
    back = -run.direction  # the re-arm level lies on the other side of the threshold
    assert (rearm - run.threshold) * back > 0
    assert run.at(math.nextafter(rearm, math.inf * run.direction)) == []  # not quite back
    assert run.at(run.threshold) == []  # so not re-armed
    assert run.at(rearm) == []  # exactly at the re-arm level: re-armed
    assert len(run.at(run.threshold)) == 1


@pytest.mark.parametrize("kind", KINDS)
def test_a_deeper_crossing_fires_again_after_the_cooldown_only(kind: str) -> None:
    run = Run(kind, cooldown=300)
    assert run.condition is not None
    first = run.past(run.threshold)
    assert len(run.at(first)) == 1
    deeper = run.condition.deeper_than(first)
    assert run.at(deeper, seconds=10) == []  # deeper, but within the cooldown
    assert run.at(run.short_of(deeper), seconds=600) == []  # after it, but not deep enough
    [again] = run.at(deeper)
    assert again.kind == kind
    # The next one is measured from the value just reported.
    assert run.at(deeper, seconds=600) == []


def test_a_stablecoin_hovering_at_its_peg_reports_the_depeg_later() -> None:
    """price_below 1.0: fires once near 1.0, stays quiet while hovering within the
    hysteresis, and reports the later fall to 0.95 (the issue's depeg case)."""
    run = Run("price_below", cooldown=300, threshold=1.0)
    assert len(run.at(0.999)) == 1
    for i in range(30):  # 30 minutes hovering between 0.998 and 1.004: never re-armed
        assert run.at(1.004 if i % 2 else 0.998, seconds=60) == []
    [depeg] = run.at(0.95, seconds=60)
    assert depeg.values["price"] == 0.95
    assert depeg.message == "BTCUSDT at or below 1: 0.95"


def test_the_hysteresis_is_the_rules_own() -> None:
    run = Run("price_below", hysteresis=0.1, threshold=1.0)  # re-arms at or above 1.001
    assert len(run.at(0.999)) == 1
    assert run.at(1.001) == []
    assert len(run.at(0.9995)) == 1  # a new crossing after re-arming
    tight = Run("price_above", hysteresis=0.0)  # re-arms as soon as strictly below
    assert len(tight.at(200)) == 1
    assert tight.at(200) == []  # still at the threshold: not re-armed
    assert tight.at(199.99) == []
    assert len(tight.at(200)) == 1


@pytest.mark.parametrize(
    ("kind", "threshold", "hysteresis", "words"),
    [
        ("price_above", 200, None, "price at or above 200; re-arms at or below 199 (0.5 %"),
        ("price_below", 1.0, 0.2, "price at or below 1; re-arms at or above 1.002 (0.2 %"),
        ("change_below", -5, 1, "24h change at or below -5 %; re-arms at or above -4 %"),
        ("confluence_long", None, None, "confluence score at or above 70; re-arms at or below 65"),
    ],
)
def test_a_stored_rule_shows_its_hysteresis_and_rearm_level(
    kind: str, threshold: float | None, hysteresis: float | None, words: str
) -> None:
    data: dict = {"kind": kind, "symbol": "BTCUSDT"}
    if threshold is not None:
        data["threshold"] = threshold
    if hysteresis is not None:
        data["hysteresis"] = hysteresis
    rule = validate_rule(data, {"BTCUSDT"})
    assert rule.hysteresis == (DEFAULT_HYSTERESIS[kind] if hysteresis is None else hysteresis)
    shown = rule.public_dict(LONG, SHORT)
    assert shown["description"].startswith(words)
    assert shown["hysteresis"] == rule.hysteresis and shown["hysteresis_unit"]


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        ({"kind": "beta_band_change", "hysteresis": 1}, "not allowed for beta_band_change"),
        (
            {"kind": "price_above", "threshold": 1, "hysteresis": 60},
            "% of the threshold, at most 50",
        ),
        ({"kind": "confluence_long", "hysteresis": 64}, "score points, at most 50"),
        ({"kind": "change_below", "threshold": -1, "hysteresis": 101}, "points, at most 100"),
        ({"kind": "price_above", "threshold": 1, "hysteresis": -1}, "hysteresis"),
        ({"kind": "change_above", "threshold": 1, "hysteresis": "NaN"}, "hysteresis"),
    ],
)
def test_an_impossible_hysteresis_is_refused(data: dict, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_rule(data, {"BTCUSDT"})


# -- prices between evaluations ----------------------------------------------------------


def candles(*rows: tuple[int, float, float, float, float]) -> Candles:
    """1m candles from (minute, open, high, low, close)."""
    return Candles.from_rows(
        "BTCUSDT", "1m", [[m * 60_000, o, h, low, c, 1.0] for m, o, h, low, c in rows]
    )


def test_the_trail_walks_new_candles_in_bar_path_order() -> None:
    trails = PriceTrails()
    assert trails.take("BTCUSDT", candles((0, 100, 101, 99, 100))) == ()  # no "since" yet
    walked = trails.take(
        "BTCUSDT",
        candles((0, 100, 101, 99, 100), (1, 100, 103, 98, 102), (2, 102, 104, 97, 98)),
    )
    assert walked == (
        (100.0, "1m close"),  # minute 0: nothing new but its close
        (100.0, "1m open"),  # minute 1 rose: open, low, high, close
        (98.0, "1m low"),
        (103.0, "1m high"),
        (102.0, "1m close"),
        (102.0, "1m open"),  # minute 2 fell: open, high, low, close
        (104.0, "1m high"),
        (97.0, "1m low"),
        (98.0, "1m close"),
    )


def test_the_forming_candle_contributes_only_what_moved() -> None:
    trails = PriceTrails()
    trails.take("BTCUSDT", candles((5, 100, 101, 99, 100)))
    assert trails.take("BTCUSDT", candles((5, 100, 101, 99, 100.5))) == ((100.5, "1m close"),)
    assert trails.take("BTCUSDT", candles((5, 100, 106, 99, 100.2))) == (
        (106.0, "1m high"),
        (100.2, "1m close"),
    )
    assert trails.take("BTCUSDT", candles((5, 100, 106, 94, 95))) == (
        (94.0, "1m low"),
        (95.0, "1m close"),
    )
    assert trails.take("BTCUSDT", None) == ()  # no candles: nothing, the mark is kept
    assert trails.take("BTCUSDT", candles((5, 100, 106, 94, 95))) == ((95.0, "1m close"),)


def test_a_long_gap_walks_a_bounded_number_of_candles() -> None:
    trails = PriceTrails()
    trails.take("BTCUSDT", candles((0, 1, 1, 1, 1)))
    many = Candles.from_rows(
        "BTCUSDT", "1m", [[m * 60_000, 1.0, 1.0, 1.0, 1.0, 1.0] for m in range(1, 1000)]
    )
    assert len(trails.take("BTCUSDT", many)) == 120 * 4


def trail_facts(price: float, trail=(), change: float = 0.0) -> list[MarketFacts]:
    return [MarketFacts("BTCUSDT", price, change, trail=tuple(trail))]


@pytest.mark.parametrize(
    ("kind", "threshold", "extreme", "where"),
    [
        ("price_above", 200.0, 200.0, "1m high"),  # touched exactly, came back
        ("price_above", 200.0, 204.0, "1m high"),
        ("price_below", 180.0, 179.0, "1m low"),
        ("price_below", 180.0, 180.0, "1m low"),
    ],
)
def test_a_spike_between_two_evaluations_fires(
    kind: str, threshold: float, extreme: float, where: str
) -> None:
    clock = ManualClock()
    engine = AlertEngine(clock=clock, id_factory=lambda: "a")
    rule = AlertRule(id="r", kind=kind, symbol="BTCUSDT", threshold=threshold, created_at_ms=0)
    _, state = engine.evaluate([rule], trail_facts(190.0), None)
    [alert] = engine.evaluate(
        [rule], trail_facts(190.0, [(190.0, "1m open"), (extreme, where)]), state
    )[0]
    assert alert.values["price"] == extreme and alert.values["observed"] == where
    assert alert.values["last_price"] == 190.0
    assert f"({where}; last 190)" in alert.message


def test_change_rules_walk_the_trail_too() -> None:
    engine = AlertEngine(id_factory=lambda: "a")
    rule = AlertRule(id="r", kind="change_above", symbol="BTCUSDT", threshold=5, created_at_ms=0)
    # Last 100 at +2 %: the 24 h reference price is 100 / 1.02; a high of 107.1 is +9.24 %.
    _, state = engine.evaluate([rule], trail_facts(100.0, change=2.0), None)
    [alert] = engine.evaluate([rule], trail_facts(100.0, [(107.1, "1m high")], 2.0), state)[0]
    assert alert.values["change_24h_pct"] == pytest.approx(9.242)


def test_a_new_rule_ignores_what_happened_before_it_existed() -> None:
    engine = AlertEngine(id_factory=lambda: "a")
    rule = AlertRule(id="r", kind="price_above", symbol="BTCUSDT", threshold=200, created_at_ms=0)
    assert engine.evaluate([rule], trail_facts(190.0, [(250.0, "1m high")]), None)[0] == []


def test_a_crossing_and_a_clearing_inside_one_window_rearm_the_rule() -> None:
    """Fired, then within one window the price clears and crosses again: the walk
    re-arms on the low and fires on the later high. In the other order (a high not
    deeper by the hysteresis, then the clearing low) nothing fires: the rule re-arms."""
    clock = ManualClock()
    engine = AlertEngine(clock=clock, id_factory=lambda: "a")
    rule = AlertRule(
        id="r", kind="price_above", symbol="BTCUSDT", threshold=200, cooldown_seconds=0,
        created_at_ms=0,
    )  # fmt: skip
    _, state = engine.evaluate([rule], trail_facts(201.0), None)
    clock.advance(60)
    window = [(201.0, "1m open"), (190.0, "1m low"), (205.0, "1m high"), (203.0, "1m close")]
    [alert] = engine.evaluate([rule], trail_facts(195.0, window), state)[0]
    assert alert.values["price"] == 205.0
    rising_then_falling = [(201.0, "1m open"), (201.5, "1m high"), (190.0, "1m low")]
    clock.advance(60)
    _, state = engine.evaluate([rule], trail_facts(201.0), None)
    assert engine.evaluate([rule], trail_facts(190.0, rising_then_falling), state)[0] == []


def test_prices_between_evaluations_through_the_trails(clock: ManualClock) -> None:
    """PriceTrails feeding the engine: the candle high between two snapshots fires."""
    engine, trails = AlertEngine(clock=clock, id_factory=lambda: "a"), PriceTrails()
    rule = AlertRule(id="r", kind="price_above", symbol="BTCUSDT", threshold=200, created_at_ms=0)
    first = trails.take("BTCUSDT", candles((0, 190, 191, 189, 190)))
    _, state = engine.evaluate([rule], trail_facts(190.0, first), None)
    later = trails.take("BTCUSDT", candles((0, 190, 201, 189, 190), (1, 190, 192, 188, 191)))
    [alert] = engine.evaluate([rule], trail_facts(191.0, later), state)[0]
    assert alert.values["price"] == 201.0 and np.isclose(alert.values["last_price"], 191.0)


@pytest.mark.parametrize(
    ("kind", "threshold", "hysteresis", "rearm"),
    [
        ("price_below", 1.0, 0.5, 1.005),
        ("price_above", 0.3, 0.1, 0.2997),
        ("change_above", 0.3, 0.1, 0.2),
        ("change_below", -0.1, 0.2, 0.1),
        ("price_below", 1e-8, 0.5, 1.005e-8),
    ],
)
def test_the_rearm_level_is_the_decimal_a_user_reads(
    kind: str, threshold: float, hysteresis: float, rearm: float
) -> None:
    """No 0.30000000000000004: the level shown is the one compared, and typing it back
    re-arms the rule."""
    condition = condition_of(kind, threshold, hysteresis, long_threshold=70, short_threshold=35)
    assert condition is not None and condition.rearm_at == rearm
    assert condition.cleared(rearm)


def test_the_trails_marks_round_trip_and_malformed_ones_start_afresh() -> None:
    trails = PriceTrails()
    trails.take("BTCUSDT", candles((5, 100, 101, 99, 100)))
    carried = PriceTrails(json.loads(json.dumps(trails.marks())))
    assert carried.take("BTCUSDT", candles((5, 100, 106, 99, 100))) == (
        (106.0, "1m high"),
        (100.0, "1m close"),
    )
    broken = PriceTrails({"BTCUSDT": "x", "ETHUSDT": [1, 2], "SOLUSDT": None})
    assert broken.marks() == {}
    assert broken.take("BTCUSDT", candles((5, 100, 106, 99, 100))) == ()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("threshold", True),  # not 1
        ("threshold", "2000"),  # a JSON string is not a number
        ("threshold", "86459,5"),
        ("hysteresis", "0.5"),
        ("hysteresis", False),
        ("cooldown_seconds", "300"),
        ("cooldown_seconds", 300.5),
        ("cooldown_seconds", True),
    ],
)
def test_numbers_must_be_json_numbers(field: str, value: object) -> None:
    data = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 2000, field: value}
    with pytest.raises(ValueError, match=field):
        validate_rule(data, {"BTCUSDT"})


def test_numbers_that_mean_one_thing_are_taken_as_such() -> None:
    rule = validate_rule(
        {"kind": "change_below", "threshold": -0.0, "hysteresis": -0.0, "cooldown_seconds": 0},
        {"BTCUSDT"},
    )
    assert math.copysign(1, rule.threshold or 0.0) == 1.0  # -0.0 stored as 0.0
    assert math.copysign(1, rule.hysteresis or 0.0) == 1.0
    with pytest.raises(ValueError, match="between -1,000,000 and 1,000,000"):
        validate_rule({"kind": "change_above", "threshold": 1e15}, {"BTCUSDT"})


def test_a_description_shows_exactly_the_value_compared() -> None:
    rule = validate_rule(
        {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 123456.123456789}, {"BTCUSDT"}
    )
    assert rule.public_dict(LONG, SHORT)["description"].startswith(
        "price at or above 123456.123456789;"
    )
    odd = validate_rule({"kind": "price_above", "threshold": 0.1 + 0.2}, {"BTCUSDT"})
    assert "at or above 0.30000000000000004;" in odd.public_dict(LONG, SHORT)["description"]
