"""Alert rules on derivatives (funding, 1h open-interest change, long/short ratio) and on
the confluence components: what each kind accepts, what it compares, what a missing
value does (nothing), and the words and units of its alerts. The comparison itself (at
or beyond, re-arming, deeper crossings) is checked for every kind in
test_alert_semantics."""

from __future__ import annotations

import itertools
import json
import math

import pytest

from app.market.analytics.confluence import ComponentScore, ConfluenceResult
from app.market.models.confluence_weights import COMPONENTS
from app.market.models.derivatives import HOUR_MS, Derivatives, DerivativesRead
from app.market.models.ticker import Ticker
from app.services.alerts.conditions import DEFAULT_HYSTERESIS, HYSTERESIS_UNITS, MAX_HYSTERESIS
from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.evaluation import market_facts
from app.services.alerts.rules import AlertRule, validate_rule
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot
from tests.conftest import ManualClock

KNOWN = {"BTCUSDT", "ETHUSDT"}
NEW_KINDS = {
    "funding_above": 0.0005,
    "funding_below": -0.0005,
    "open_interest_change_above": 5.0,
    "open_interest_change_below": -5.0,
    "long_short_above": 2.0,
    "long_short_below": 0.5,
    "component_above": 80.0,
    "component_below": 20.0,
}


def data(kind: str, **extra) -> dict:
    """A valid rule of ``kind`` (its component, when it needs one: orderflow)."""
    base: dict = {"kind": kind, "symbol": "BTCUSDT", "threshold": NEW_KINDS[kind]}
    if kind.startswith("component_"):
        base["component"] = "orderflow"
    return base | extra


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_new_kind_is_stored_with_its_default_hysteresis_and_unit(kind: str) -> None:
    rule = validate_rule(data(kind), KNOWN)
    assert rule.threshold == NEW_KINDS[kind]
    assert rule.hysteresis == DEFAULT_HYSTERESIS[kind]
    shown = rule.public_dict(70, 35)
    assert shown["hysteresis_unit"] == HYSTERESIS_UNITS[kind]
    assert shown["component"] == ("orderflow" if kind.startswith("component_") else None)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_each_new_kind_needs_a_threshold(kind: str) -> None:
    without = {k: v for k, v in data(kind).items() if k != "threshold"}
    with pytest.raises(ValueError, match=f"threshold is required for {kind}"):
        validate_rule(without, KNOWN)


@pytest.mark.parametrize(
    ("kind", "accepted", "refused", "words"),
    [
        ("funding_above", [0.05, -0.05, 0.0, 0.0001], [0.0501, -0.06, 1.0], "between -0.05 and"),
        ("funding_below", [-0.05, 0.05], [-0.0500001, 5.0], "fraction per interval"),
        ("open_interest_change_above", [-100, 0, 1e6], [-100.5, 1e6 + 1], "1h open-interest"),
        ("open_interest_change_below", [-100, 50], [-101], "between -100 and 1,000,000"),
        ("long_short_above", [0.0001, 3, 500], [0, -1], "long/short account ratio"),
        ("long_short_below", [1], [0.0, -0.5], "above 0"),
        ("long_short_above", [1_000], [1_000.5, 1e308], "at most 1,000"),
        ("component_above", [0, 100, 55.5], [-1, 100.5], "component score, between 0 and 100"),
        ("component_below", [0, 100], [-0.1, 101], "between 0 and 100"),
    ],
)
def test_thresholds_outside_the_kinds_range_are_refused(
    kind: str, accepted: list[float], refused: list[float], words: str
) -> None:
    for threshold in accepted:
        assert validate_rule(data(kind, threshold=threshold), KNOWN).threshold == threshold
    for threshold in refused:
        with pytest.raises(ValueError, match=f"threshold of {kind} .*{words}"):
            validate_rule(data(kind, threshold=threshold), KNOWN)


@pytest.mark.parametrize("kind", ["component_above", "component_below"])
def test_a_component_rule_needs_a_known_component(kind: str) -> None:
    for component in COMPONENTS:
        assert validate_rule(data(kind, component=component), KNOWN).component == component
    missing = {k: v for k, v in data(kind).items() if k != "component"}
    with pytest.raises(ValueError, match=f"component is required for {kind} .*price_structure"):
        validate_rule(missing, KNOWN)
    with pytest.raises(ValueError, match="component: unknown component 'funding'; one of"):
        validate_rule(data(kind, component="funding"), KNOWN)
    with pytest.raises(ValueError, match="component: "):
        validate_rule(data(kind, component=3), KNOWN)


@pytest.mark.parametrize(
    "kind",
    [k for k in NEW_KINDS if not k.startswith("component_")]
    + ["price_above", "change_below", "confluence_long", "beta_band_change"],
)
def test_only_component_rules_take_a_component(kind: str) -> None:
    rule = {"kind": kind, "component": "sentiment"}
    if kind in NEW_KINDS:
        rule["threshold"] = NEW_KINDS[kind]
    elif kind in ("price_above", "change_below"):
        rule["threshold"] = 1
    with pytest.raises(ValueError, match=f"component is not allowed for {kind} .*component_above"):
        validate_rule(rule, KNOWN)


@pytest.mark.parametrize("kind", NEW_KINDS)
def test_the_hysteresis_is_bounded_in_the_kinds_unit(kind: str) -> None:
    limit = MAX_HYSTERESIS[kind]
    assert validate_rule(data(kind, hysteresis=limit), KNOWN).hysteresis == limit
    unit = HYSTERESIS_UNITS[kind]
    with pytest.raises(ValueError, match=rf"hysteresis of {kind} is in {unit.split(' (')[0]}"):
        validate_rule(data(kind, hysteresis=limit * 1.01), KNOWN)


@pytest.mark.parametrize(
    ("kind", "extra", "words"),
    [
        (
            "funding_above",
            {},
            "funding rate at or above 0.0005 (0.05 %) per funding interval; re-arms at or "
            "below 0.00045 (0.045 %) (0.00005 = 0.005 % funding rate)",
        ),
        (
            "funding_below",
            {"threshold": -0.0003, "hysteresis": 0.0001},
            "funding rate at or below -0.0003 (-0.03 %) per funding interval; re-arms at or "
            "above -0.0002 (-0.02 %) (0.0001 = 0.01 % funding rate)",
        ),
        (
            "open_interest_change_above",
            {},
            "1h open interest change at or above 5 % (open interest now against 1 h ago); "
            "re-arms at or below 4.5 % (0.5 percentage points)",
        ),
        (
            "long_short_below",
            {},
            "long/short ratio at or below 0.5 (accounts long ÷ short); re-arms at or above "
            "0.55 (0.05 ratio units)",
        ),
        (
            "component_above",
            {"component": "sentiment"},
            "sentiment component at or above 80 (all timeframes combined); re-arms at or "
            "below 75 (5 points)",
        ),
    ],
)
def test_the_description_names_the_value_its_unit_and_the_rearm_level(
    kind: str, extra: dict, words: str
) -> None:
    rule = validate_rule(data(kind, **extra), KNOWN)
    assert rule.public_dict(70, 35)["description"] == words


# -- the engine on facts ---------------------------------------------------------------------


def engine(clock: ManualClock) -> AlertEngine:
    counter = itertools.count()
    return AlertEngine(clock=clock, id_factory=lambda: f"a{next(counter)}")


def rule(kind: str, threshold: float, symbol: str | None = "BTCUSDT", **kw) -> AlertRule:
    return AlertRule(
        id=kw.pop("id", kind), kind=kind, symbol=symbol, threshold=threshold, created_at_ms=0, **kw
    )


def fact(symbol: str = "BTCUSDT", **kw) -> MarketFacts:
    return MarketFacts(symbol, 100.0, 0.0, **kw)


@pytest.mark.parametrize(
    ("kind", "threshold", "facts", "message", "values"),
    [
        (
            "funding_above",
            0.0005,
            {"funding_rate": 0.000612},
            "BTCUSDT funding 0.0612 % at or above 0.0500 % per interval",
            {"funding_rate": 0.000612, "funding_rate_pct": 0.0612},
        ),
        (
            "funding_below",
            -0.0001,
            {"funding_rate": -0.00012345},
            "BTCUSDT funding -0.012345 % at or below -0.0100 % per interval",
            {"funding_rate": -0.00012345, "funding_rate_pct": -0.012345},
        ),
        (
            "open_interest_change_above",
            5.0,
            {"open_interest_change_1h_pct": 6.25},
            "BTCUSDT 1h open interest change 6.25 % at or above 5 %",
            {"open_interest_change_pct_1h": 6.25},
        ),
        (
            "long_short_below",
            0.8,
            {"long_short_ratio": 0.75},
            "BTCUSDT long/short ratio 0.75 at or below 0.8",
            {"long_short_ratio": 0.75},
        ),
        (
            "component_above",
            80.0,
            {"components": {"orderflow": 82.5, "sentiment": None}},
            "BTCUSDT orderflow component 82.5 at or above 80",
            {"component": "orderflow", "component_score": 82.5},
        ),
    ],
)
def test_an_alert_shows_the_value_that_fired_with_its_unit(
    clock: ManualClock, kind: str, threshold: float, facts: dict, message: str, values: dict
) -> None:
    component = {"component": "orderflow"} if kind.startswith("component_") else {}
    [alert] = engine(clock).evaluate([rule(kind, threshold, **component)], [fact(**facts)], None)[0]
    assert alert.message == message
    assert alert.values == {
        "threshold": threshold,
        "hysteresis": DEFAULT_HYSTERESIS[kind],
        **values,
    }
    assert alert.kind == kind


def test_the_default_title_names_the_component(clock: ManualClock) -> None:
    rules = [rule("component_below", 30, component="volume"), rule("funding_above", 0.0001)]
    market = [fact(components={"volume": 10.0}, funding_rate=0.0002)]
    titles = [a.title for a in engine(clock).evaluate(rules, market, None)[0]]
    assert titles == ["BTCUSDT volume component below", "BTCUSDT funding above"]


@pytest.mark.parametrize(
    ("kind", "threshold", "unknown"),
    [
        ("funding_above", 0.0, {"funding_rate": None}),
        ("funding_below", 0.0, {"funding_rate": math.nan}),
        ("open_interest_change_below", 0.0, {"open_interest_change_1h_pct": None}),
        ("long_short_above", 0.001, {"long_short_ratio": None}),
        ("component_below", 100.0, {"components": {"sentiment": None}}),  # unavailable
        ("component_below", 100.0, {"components": {}}),  # no confluence at all
    ],
)
def test_an_unknown_value_never_fires_not_even_as_zero(
    clock: ManualClock, kind: str, threshold: float, unknown: dict
) -> None:
    """Thresholds every known value would meet (0 ≤ 100, a ratio ≥ 0.001…): with the
    value None (or NaN) the rule stays quiet — and armed, so it fires once it is known."""
    component = {"component": "sentiment"} if kind.startswith("component_") else {}
    the_rule, run = rule(kind, threshold, **component), engine(clock)
    alerts, state = run.evaluate([the_rule], [fact(**unknown)], None)
    assert alerts == []
    state = json.loads(json.dumps(state))
    clock.advance(60)
    known = {
        "funding_rate": 0.0,
        "open_interest_change_1h_pct": -1.0,
        "long_short_ratio": 1.0,
        "components": {"sentiment": 40.0},
    }
    field = next(iter(unknown))
    [alert] = run.evaluate([the_rule], [fact(**{field: known[field]})], state)[0]
    assert alert.kind == kind


def test_an_every_symbol_rule_fires_only_where_there_are_derivatives(clock: ManualClock) -> None:
    market = [fact("BTCUSDT", funding_rate=0.001), fact("ETHUSDT")]  # ETH: no perpetual
    alerts, state = engine(clock).evaluate(
        [rule("funding_above", 0.0005, symbol=None)], market, None
    )
    assert [a.symbol for a in alerts] == ["BTCUSDT"]
    assert state["entries"]["funding_above|ETHUSDT"]["armed"] is True


def test_funding_rearms_by_its_absolute_margin_and_reports_a_deeper_crossing(
    clock: ManualClock,
) -> None:
    """Threshold 0.0005, hysteresis 0.0001: re-arms at or below 0.0004; a deeper crossing
    is 0.0001 beyond the last alert's rate."""
    run, state = engine(clock), None
    the_rule = rule("funding_above", 0.0005, hysteresis=0.0001, cooldown_seconds=60)

    def at(rate: float) -> list:
        nonlocal state
        clock.advance(120)
        alerts, state = run.evaluate([the_rule], [fact(funding_rate=rate)], state)
        return alerts

    assert len(at(0.0005)) == 1
    assert at(0.00055) == [] and at(0.00041) == [] and at(0.0005) == []  # not re-armed
    [deeper] = at(0.0006)  # 0.0001 beyond the last alert's 0.0005
    assert deeper.values["funding_rate"] == 0.0006
    assert at(0.0004) == []  # re-armed
    assert len(at(0.0005)) == 1


# -- the facts from a snapshot and its analysis -----------------------------------------------


def ticker(symbol: str) -> Ticker:
    return Ticker(symbol, 100.0, 99.9, 100.1, 98.0, 101.0, 97.0, 2.0, 10.0, 1000.0, 1)


def combined(scores: dict[str, float | None]) -> ConfluenceResult:
    components = {
        name: ComponentScore(name, scores.get(name), {}, None if scores.get(name) else "n/a")
        for name in COMPONENTS
    }
    return ConfluenceResult(60.0, "neutral", 0.8, components, {})


def test_market_facts_carry_the_derivatives_and_the_combined_components() -> None:
    now = 10 * HOUR_MS
    btc = Derivatives(
        symbol="BTCUSDT",
        contract="BTC/USDT:USDT",
        timestamp_ms=now,
        funding_rate=0.0007,
        open_interest=110.0,
        long_short_ratio=1.8,
        open_interest_history=((now - 2 * HOUR_MS, 90.0), (now - HOUR_MS, 100.0), (now, 105.0)),
    )
    snapshot = Snapshot(
        version=1,
        fetched_at_ms=now,
        source="test",
        exchange="test",
        tickers={"BTCUSDT": ticker("BTCUSDT"), "ETHUSDT": ticker("ETHUSDT")},
        candles={},
        books={},
        derivatives=DerivativesRead(
            by_symbol={"BTCUSDT": btc}, unavailable={"ETHUSDT": "no perpetual listed"}
        ),
    )
    analysis = Analysis(
        confluence={"BTCUSDT": {COMBINED: combined({"orderflow": 81.0, "sentiment": None})}},
        beta=None,
        beta_overview=None,
        overview=None,
        movers=None,
        signals=None,
    )
    facts = {f.symbol: f for f in market_facts(snapshot, analysis)}
    b, e = facts["BTCUSDT"], facts["ETHUSDT"]
    assert (b.funding_rate, b.long_short_ratio) == (0.0007, 1.8)
    assert b.open_interest_change_1h_pct == pytest.approx(10.0)  # 110 now against 100 1 h ago
    assert b.components["orderflow"] == 81.0 and b.components["sentiment"] is None
    assert (e.funding_rate, e.open_interest_change_1h_pct, e.long_short_ratio) == (None,) * 3
    assert e.components == {}
    rules = [
        rule("funding_above", 0.0005, symbol=None),
        rule("open_interest_change_above", 10.0, symbol=None),
        rule("component_below", 100.0, symbol=None, component="sentiment"),
    ]
    alerts, _ = AlertEngine(clock=ManualClock()).evaluate(rules, facts, None)
    assert sorted((a.kind, a.symbol) for a in alerts) == [
        ("funding_above", "BTCUSDT"),
        ("open_interest_change_above", "BTCUSDT"),
    ]
