"""Turns market facts into alerts: edge-triggered, with per-rule hysteresis, a cooldown,
and every price seen since the last evaluation.

Comparisons (``conditions``): a rule is met at or beyond its threshold; after
firing it re-arms once the value is back past its re-arm level (the rule's
hysteresis); while not re-armed it fires again, after the cooldown, only for a deeper
crossing (beyond the last alert's value by the hysteresis).

Prices between evaluations: price and 24 h change rules walk the ``trail`` of prices
the service saw since the last evaluation (the 1m candles' open/low/high/close,
oldest first; see ``alerts.price_trail``), then the current price, so a spike that
crossed a threshold and came back between two snapshots still fires. A (rule, symbol)
seen for the first time looks at the current value only (a rule does not fire for
what happened before it existed). Every other kind (confluence, derivatives,
components) compares the snapshot's current value only, and cannot fire while that
value is unknown (None: a symbol without a perpetual, a component unavailable). At
most one alert per (rule, symbol) and evaluation,
and at most ``MAX_ALERTS_PER_EVALUATION`` in all (the rest fire at the next one).

For each (rule, symbol) the engine keeps a small state entry:

* ``armed``: the rule may fire. A new entry starts armed, so a condition already true
  when the rule is created fires once. Firing disarms.
* ``last_fired_ms`` / ``fired_value``: the last alert's time and value; no second alert
  within the rule's ``cooldown_seconds`` (a crossing during the cooldown is swallowed:
  the entry disarms as if it had fired, and ``fired_value`` stays the reported one).
* ``band``: the last beta band seen (``beta_band_change`` fires when it changes; the
  first observation only records it).
* ``seen`` (``conditions`` rules only): condition index → the last known state of a
  state metric (``alerts.compound_engine``: the joined conditions fire when they
  become true, re-arm when false, and keep the cooldown).

A rule's ``template`` (``alerts.templates``) renders the alert's message; one that
fails falls back to the default message (``template_failures`` counts them, the first
failure of each rule is logged).

``evaluate`` is pure: it never mutates its inputs, and the state is a plain JSON-able
dict for persistence::

    {"version": 1, "entries": {"<rule_id>|<symbol>": {"armed": true, "last_fired_ms": null,
                                                      "fired_value": null, "band": null}}}
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from app.services.alerts import compound_engine
from app.services.alerts.compound_engine import TimeframeFacts
from app.services.alerts.conditions import Condition, condition_of
from app.services.alerts.messages import LAST, threshold_alert
from app.services.alerts.rules import Alert, AlertRule, new_id
from app.services.alerts.templates import TemplateFailed, render, template_context

log = logging.getLogger(__name__)

STATE_VERSION = 1
# A burst (e.g. 200 every-symbol rules all true at once) goes out over several
# evaluations, so a page reading its alerts is never flooded past its queue (1,000).
MAX_ALERTS_PER_EVALUATION = 250

Point = tuple[float, str]  # (value, where it was seen: "1m high", "last price", ...)


@dataclass(frozen=True, slots=True)
class MarketFacts:
    """What the alert rules look at for one symbol, from one market snapshot.

    ``trail``: prices seen since the previous evaluation, oldest first, before
    ``price`` (the current last price), each with where it was seen. Derivatives (None
    for a symbol without a perpetual, or when the exchange sent no usable value):
    ``funding_rate`` a fraction per funding interval, ``open_interest_change_1h_pct``
    the open interest now against 1 h ago in %, ``long_short_ratio`` accounts long ÷
    short. ``components``: the combined (all-timeframes) confluence component scores,
    0–100, None for one unavailable. ``signal``: the combined confluence signal (long,
    short, neutral); ``timeframes``: timeframe → that timeframe's readings (confluence,
    signal, components, volume spike, beta band) for the ``conditions`` rules. A rule
    whose value is None cannot fire."""

    symbol: str
    price: float
    change_24h_pct: float
    confluence_score: float | None = None
    beta_band: str | None = None
    trail: tuple[Point, ...] = ()
    funding_rate: float | None = None
    open_interest_change_1h_pct: float | None = None
    long_short_ratio: float | None = None
    components: Mapping[str, float | None] = field(default_factory=dict)
    signal: str | None = None
    timeframes: Mapping[str, TimeframeFacts] = field(default_factory=dict)


class AlertEngine:
    def __init__(
        self,
        long_threshold: float = 70.0,
        short_threshold: float = 35.0,
        clock: Callable[[], float] = time.time,
        *,
        id_factory: Callable[[], str] = new_id,
        max_alerts: int = MAX_ALERTS_PER_EVALUATION,
    ) -> None:
        """``long_threshold``/``short_threshold``: the confluence scores (0–100) the
        confluence rules compare with; ``clock``: epoch seconds; ``max_alerts``: alerts
        one evaluation makes at most (the (rule, symbol) pairs after it are left as they
        are, so an armed one fires at the next evaluation)."""
        if max_alerts < 1:
            raise ValueError("max_alerts must be >= 1")
        self.max_alerts = max_alerts
        self.long_threshold = long_threshold
        self.short_threshold = short_threshold
        self._clock = clock  # epoch seconds
        self._new_id = id_factory
        self.template_failures = 0  # renders that fell back to the default message
        self._failed_templates: set[str] = set()  # rule ids whose failure was logged

    def evaluate(
        self,
        rules: Sequence[AlertRule],
        facts: Iterable[MarketFacts] | Mapping[str, MarketFacts],
        state: Mapping[str, Any] | None,
        *,
        now_ms: int | None = None,
    ) -> tuple[list[Alert], dict[str, Any]]:
        """The alerts that fire now and the new state (the inputs are left untouched).

        State entries of rules no longer in ``rules`` are dropped.
        """
        now = int(self._clock() * 1000) if now_ms is None else now_ms
        by_symbol = {f.symbol: f for f in (facts.values() if isinstance(facts, Mapping) else facts)}
        old = (
            (state or {}).get("entries", {})
            if (state or {}).get("version") == STATE_VERSION
            else {}
        )
        rule_ids = {rule.id for rule in rules}
        entries = {key: dict(value) for key, value in old.items() if key.split("|")[0] in rule_ids}
        alerts: list[Alert] = []
        for rule in rules:
            symbols = [rule.symbol] if rule.symbol is not None else sorted(by_symbol)
            for symbol in symbols:
                fact = by_symbol.get(symbol)
                if fact is None or len(alerts) >= self.max_alerts:
                    continue  # no data; or a burst: the rest waits for the next evaluation
                key = f"{rule.id}|{symbol}"
                is_new = key not in entries
                entry = entries.setdefault(
                    key, {"armed": True, "last_fired_ms": None, "fired_value": None, "band": None}
                )
                alert = self._step(rule, fact, entry, now, is_new)
                if alert is not None:
                    alerts.append(alert)
        return alerts, {"version": STATE_VERSION, "entries": entries}

    # -- one (rule, symbol) ------------------------------------------------------------

    def _step(
        self, rule: AlertRule, fact: MarketFacts, entry: dict, now: int, is_new: bool
    ) -> Alert | None:
        if rule.kind == "beta_band_change":
            return self._band_step(rule, fact, entry, now)
        if rule.kind == "conditions":
            return self._compound_step(rule, fact, entry, now)
        condition = condition_of(
            rule.kind,
            rule.threshold,
            rule.hysteresis,
            long_threshold=self.long_threshold,
            short_threshold=self.short_threshold,
            component=rule.component,
        )
        assert condition is not None
        path = self._path(rule, fact, is_new)
        if not path:
            return None  # no data for this kind (no confluence score yet, no perpetual…)
        fired: Point | None = None
        for point in path:
            if fired is None and self._fires_at(condition, entry, point[0], now, rule):
                fired = point
            if not entry["armed"] and condition.cleared(point[0]):
                entry["armed"] = True
        if fired is None:
            return None
        return self._alert(rule, fact, now, condition, fired)

    def _fires_at(
        self, condition: Condition, entry: dict, value: float, now: int, rule: AlertRule
    ) -> bool:
        """Whether ``value`` makes an alert now; updates the entry (disarm, last fired)."""
        if entry["armed"]:
            if not condition.met(value):
                return False
            entry["armed"] = False
        else:
            last = entry.get("fired_value")
            if last is None or not condition.deeper(value, last):
                return False
        if not self._cooled(entry, now, rule):
            return False  # swallowed: disarmed, fired_value stays the reported one
        entry["last_fired_ms"], entry["fired_value"] = now, value
        return True

    @staticmethod
    def _cooled(entry: dict, now: int, rule: AlertRule) -> bool:
        last = entry.get("last_fired_ms")
        return last is None or now - last >= rule.cooldown_seconds * 1000

    def _path(self, rule: AlertRule, fact: MarketFacts, is_new: bool) -> list[Point]:
        """The values the rule compares, oldest first (only the current one for a new
        entry); empty when the value is unknown."""
        points = [(fact.price, LAST)] if is_new else [*fact.trail, (fact.price, LAST)]
        if rule.kind.startswith("price_"):
            return points
        if rule.kind.startswith("change_"):
            change = fact.change_24h_pct
            if not math.isfinite(change):
                return []
            reference = fact.price / (1 + change / 100)  # the 24 h reference price
            # The current point is the ticker's own change, exactly (no round trip).
            return [
                (change if where == LAST else (p / reference - 1) * 100, where)
                for p, where in points
            ]
        value = _reading(rule, fact)
        if value is None or not math.isfinite(value):
            return []
        return [(value, rule.kind.rpartition("_")[0].replace("_", " "))]

    def _band_step(self, rule: AlertRule, fact: MarketFacts, entry: dict, now: int) -> Alert | None:
        band, last = fact.beta_band, entry.get("band")
        if band is None:
            return None
        entry["band"] = band
        if last is None or band == last or not self._cooled(entry, now, rule):
            return None
        entry["last_fired_ms"] = now
        values: dict[str, Any] = {"band": band, "previous_band": last}
        message = f"{fact.symbol} beta band changed: {last} → {band}"
        return self._make(rule, fact, now, values, message)

    def _compound_step(
        self, rule: AlertRule, fact: MarketFacts, entry: dict, now: int
    ) -> Alert | None:
        values = compound_engine.step(rule, fact, entry, lambda: self._cooled(entry, now, rule))
        if values is None:
            return None
        entry["last_fired_ms"] = now
        return self._make(
            rule, fact, now, values, compound_engine.message(rule, fact.symbol, values)
        )

    def _alert(
        self, rule: AlertRule, fact: MarketFacts, now: int, condition: Condition, fired: Point
    ) -> Alert:
        value, where = fired
        values, message = threshold_alert(condition, fact.symbol, fact.price, value, where)
        return self._make(rule, fact, now, values, message)

    def _make(
        self, rule: AlertRule, fact: MarketFacts, now: int, values: dict, message: str
    ) -> Alert:
        title = rule.title or _default_title(rule, fact.symbol)
        return Alert(
            id=self._new_id(),
            rule_id=rule.id,
            kind=rule.kind,
            symbol=fact.symbol,
            level=rule.level,
            title=title,
            message=self._message(rule, fact, title, values, message),
            values=values,
            created_at_ms=now,
        )

    def _message(
        self, rule: AlertRule, fact: MarketFacts, title: str, values: dict, default: str
    ) -> str:
        """The rule's template rendered, or ``default`` (without a template, or when it
        fails: counted in ``template_failures``, logged once per rule)."""
        if rule.template is None:
            return default
        context = template_context(rule, fact.symbol, title, fact.price, default, values)
        try:
            return render(rule.template, context)
        except TemplateFailed as error:
            self.template_failures += 1
            if rule.id not in self._failed_templates:
                self._failed_templates.add(rule.id)
                log.warning("rule %s: template failed (%s); default message sent", rule.id, error)
            return default


def _reading(rule: AlertRule, fact: MarketFacts) -> float | None:
    """The current value a rule that is neither a price nor a 24 h change rule compares
    (None: unknown, the rule cannot fire)."""
    family = rule.kind.rpartition("_")[0]
    if family == "funding":
        return fact.funding_rate
    if family == "open_interest_change":
        return fact.open_interest_change_1h_pct
    if family == "long_short":
        return fact.long_short_ratio
    if family == "component":
        return fact.components.get(rule.component or "")
    return fact.confluence_score


def _default_title(rule: AlertRule, symbol: str) -> str:
    """E.g. "BTCUSDT price above", "BTCUSDT orderflow component above"."""
    kind = rule.kind.replace("_", " ")
    if rule.component is not None:
        kind = f"{rule.component} {kind}"
    return f"{symbol} {kind}"
