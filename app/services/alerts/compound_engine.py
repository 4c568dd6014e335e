"""The evaluation of a ``conditions`` rule (``alerts.compound``) for one symbol.

Each condition reads its value from the symbol's ``MarketFacts`` (``reading``; None when
unknown: no such timeframe, no perpetual, a component unavailable…). A condition whose
value is unknown is not met: an ``all`` rule cannot fire then, an ``any`` rule still
counts the others. Prices are the snapshot's last price only (the 1m trail that the
``price_*`` kinds walk is not used here).

Edge-triggered like the single kinds: the rule fires when the joined condition is true
and the entry is armed; firing disarms; the entry re-arms on the first evaluation where
the joined condition is false. Within ``cooldown_seconds`` of the last alert a new
crossing is swallowed (the entry disarms without an alert).

The entry keeps, beside ``armed``/``last_fired_ms``, ``seen``: condition index (a
string) → the last known state of each state metric (``becomes``/``changes`` compare
with it; an unknown reading keeps the last known one).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.services.alerts.compound import NUMERIC, ConditionInput, condition_values
from app.services.alerts.compound import describe_conditions as describe
from app.services.alerts.conditions import number

if TYPE_CHECKING:
    from app.services.alerts.engine import MarketFacts
    from app.services.alerts.rules import AlertRule

Reading = float | str | None


@dataclass(frozen=True, slots=True)
class TimeframeFacts:
    """One timeframe's readings for one symbol: the confluence ``confluence_score``
    (0–100), its ``signal`` and ``components`` scores, the ``volume_spike`` (last closed
    candle's volume ÷ mean of the 20 before it) and the ``beta_band`` there (None each
    when unknown)."""

    confluence_score: float | None = None
    signal: str | None = None
    components: Mapping[str, float | None] = field(default_factory=dict)
    volume_spike: float | None = None
    beta_band: str | None = None


def reading(c: ConditionInput, fact: MarketFacts) -> Reading:
    """The current value ``c`` compares for the symbol of ``fact`` (None: unknown, or a
    number that is not finite)."""
    value = _raw_reading(c, fact)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _raw_reading(c: ConditionInput, fact: MarketFacts) -> Reading:
    if c.timeframe is not None:
        return _timeframe_reading(c, fact.timeframes.get(c.timeframe))
    combined: dict[str, Reading] = {
        "price": fact.price,
        "change_24h_pct": fact.change_24h_pct,
        "confluence": fact.confluence_score,
        "component": fact.components.get(c.component or ""),
        "signal": fact.signal,
        "beta_band": fact.beta_band,
        "funding_rate": fact.funding_rate,
        "open_interest_change_pct": fact.open_interest_change_1h_pct,
        "long_short_ratio": fact.long_short_ratio,
    }
    return combined.get(c.metric)


def _timeframe_reading(c: ConditionInput, facts: TimeframeFacts | None) -> Reading:
    if facts is None:
        return None
    if c.metric == "component":
        return facts.components.get(c.component or "")
    by_metric: dict[str, Reading] = {
        "volume_spike": facts.volume_spike,
        "confluence": facts.confluence_score,
        "signal": facts.signal,
        "beta_band": facts.beta_band,
    }
    return by_metric.get(c.metric)


def met(c: ConditionInput, value: Reading, previous: Reading) -> bool:
    """Whether ``c`` holds for ``value`` (the state before: ``previous``); never for an
    unknown (None) value."""
    if value is None:
        return False
    if c.comparison == "above":
        return isinstance(value, float | int) and value >= c.value  # type: ignore[operator]
    if c.comparison == "below":
        return isinstance(value, float | int) and value <= c.value  # type: ignore[operator]
    if c.comparison == "is":
        return value == c.value
    if c.comparison == "becomes":
        return value == c.value and previous is not None and previous != c.value
    return previous is not None and value != previous  # changes


def step(
    rule: AlertRule, fact: MarketFacts, entry: dict, cooled: Callable[[], bool]
) -> dict[str, Any] | None:
    """The ``values`` of the alert the rule fires now for ``fact`` (None: none), the
    ``entry`` updated (``armed``, ``seen``). ``cooled()``: whether the cooldown since
    the last alert is over; the caller stamps ``last_fired_ms`` when this fires."""
    conditions = rule.conditions or []
    seen = entry.get("seen") or {}
    observed = [reading(c, fact) for c in conditions]
    previous = [seen.get(str(i)) for i in range(len(conditions))]
    results = [met(c, v, p) for c, v, p in zip(conditions, observed, previous, strict=True)]
    entry["seen"] = _seen(conditions, observed, previous)
    joined = all(results) if rule.join != "any" else any(results)
    if not joined:
        entry["armed"] = True
        return None
    if not entry.get("armed", True):
        return None
    entry["armed"] = False
    if not cooled():
        return None  # swallowed: disarmed until the joined condition is false again
    join = rule.join or "all"
    return condition_values(conditions, join, observed, previous, results, fact.price)


def _seen(conditions: list[ConditionInput], observed: list, previous: list) -> dict[str, Any]:
    return {
        str(i): v if v is not None else p
        for i, (c, v, p) in enumerate(zip(conditions, observed, previous, strict=True))
        if c.metric not in NUMERIC and (v is not None or p is not None)
    }


def message(rule: AlertRule, symbol: str, values: Mapping[str, Any]) -> str:
    """E.g. "BTCUSDT all of: price at or above 100; signal (5m) becomes long — price
    101.5, signal_5m long" (the met conditions' values)."""
    shown = [
        f"{item['name']} {_show(item['value'])}" for item in values["conditions"] if item["met"]
    ]
    return f"{symbol} {describe(rule.conditions or [], rule.join or 'all')} — " + ", ".join(shown)


def _show(value: Reading) -> str:
    if isinstance(value, float | int):
        return number(round(float(value), 6))
    return str(value)
