"""Turns market facts into alerts: edge-triggered, with hysteresis and a cooldown.

For each (rule, symbol) the engine keeps a small state entry:

* ``armed``: the rule may fire. A new entry starts armed, so a condition already true
  when the rule is created fires once. Firing disarms; the entry re-arms only once the
  condition has cleared by the hysteresis margin (price: threshold × (1 ∓ h/100);
  24 h change: threshold ∓ h points; confluence: below long − 5 / above short + 5).
* ``last_fired_ms``: no second alert within the rule's ``cooldown_seconds``. A crossing
  during the cooldown is swallowed (the entry disarms as if it had fired).
* ``band``: the last beta band seen (``beta_band_change`` fires when it changes; the
  first observation only records it).

So a price hovering at a threshold fires once, not once per tick. ``evaluate`` is pure:
it never mutates its inputs, and the state is a plain JSON-able dict for persistence::

    {"version": 1, "entries": {"<rule_id>|<symbol>": {"armed": true,
                                                      "last_fired_ms": null, "band": null}}}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from app.services.alert_rules import Alert, AlertRule, new_id

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class MarketFacts:
    """What the alert rules look at for one symbol, from one market snapshot."""

    symbol: str
    price: float
    change_24h_pct: float
    confluence_score: float | None = None
    beta_band: str | None = None


def _num(value: float) -> str:
    """100000 → "100000", 100123.5 → "100123.5", 0.5 → "0.5"."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.10g}"


class AlertEngine:
    def __init__(
        self,
        long_threshold: float = 70.0,
        short_threshold: float = 35.0,
        hysteresis_pct: float = 0.5,
        clock: Callable[[], float] = time.time,
        *,
        confluence_margin: float = 5.0,
        id_factory: Callable[[], str] = new_id,
    ) -> None:
        if hysteresis_pct < 0 or confluence_margin < 0:
            raise ValueError("hysteresis_pct and confluence_margin must be >= 0")
        self.long_threshold = long_threshold
        self.short_threshold = short_threshold
        self.hysteresis_pct = hysteresis_pct
        self.confluence_margin = confluence_margin
        self._clock = clock  # epoch seconds
        self._new_id = id_factory

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
                if fact is None:
                    continue
                key = f"{rule.id}|{symbol}"
                entry = entries.setdefault(
                    key, {"armed": True, "last_fired_ms": None, "band": None}
                )
                alert = self._step(rule, fact, entry, now)
                if alert is not None:
                    alerts.append(alert)
        return alerts, {"version": STATE_VERSION, "entries": entries}

    # -- one (rule, symbol) ------------------------------------------------------------

    def _step(self, rule: AlertRule, fact: MarketFacts, entry: dict, now: int) -> Alert | None:
        if rule.kind == "beta_band_change":
            band, last = fact.beta_band, entry.get("band")
            if band is None:
                return None
            entry["band"] = band
            if last is None or band == last:
                return None
            values: dict[str, Any] = {"band": band, "previous_band": last}
            message = f"{fact.symbol} beta band changed: {last} → {band}"
            return self._fire(rule, fact, entry, now, values, message)

        judged = self._judge(rule, fact)
        if judged is None:
            return None  # no data for this kind (e.g. no confluence score yet)
        condition, cleared, values, message = judged
        if not entry.get("armed", True):
            if cleared:
                entry["armed"] = True
            return None
        if not condition:
            return None
        entry["armed"] = False
        return self._fire(rule, fact, entry, now, values, message)

    def _fire(
        self, rule: AlertRule, fact: MarketFacts, entry: dict, now: int, values: dict, message: str
    ) -> Alert | None:
        last = entry.get("last_fired_ms")
        if last is not None and now - last < rule.cooldown_seconds * 1000:
            return None
        entry["last_fired_ms"] = now
        return Alert(
            id=self._new_id(),
            rule_id=rule.id,
            kind=rule.kind,
            symbol=fact.symbol,
            level=rule.level,
            title=rule.title or f"{fact.symbol} {rule.kind.replace('_', ' ')}",
            message=message,
            values=values,
            created_at_ms=now,
        )

    def _judge(
        self, rule: AlertRule, fact: MarketFacts
    ) -> tuple[bool, bool, dict[str, Any], str] | None:
        """(condition true, cleared by the hysteresis margin, values, message)."""
        s, h, t = fact.symbol, self.hysteresis_pct, rule.threshold
        match rule.kind:
            case "price_above" | "price_below":
                assert t is not None
                p = fact.price
                values = {"price": p, "threshold": t}
                if rule.kind == "price_above":
                    return p > t, p < t * (1 - h / 100), values, f"{s} above {_num(t)}: {_num(p)}"
                return p < t, p > t * (1 + h / 100), values, f"{s} below {_num(t)}: {_num(p)}"
            case "change_above" | "change_below":
                assert t is not None
                c = fact.change_24h_pct
                values = {"change_24h_pct": c, "threshold": t}
                if rule.kind == "change_above":
                    text = f"{s} 24h change above {_num(t)}%: {_num(c)}%"
                    return c > t, c < t - h, values, text
                text = f"{s} 24h change below {_num(t)}%: {_num(c)}%"
                return c < t, c > t + h, values, text
            case "confluence_long" | "confluence_short":
                score = fact.confluence_score
                if score is None:
                    return None
                if rule.kind == "confluence_long":
                    t = self.long_threshold
                    values = {"confluence_score": score, "threshold": t}
                    text = f"{s} confluence {_num(score)} reached the long threshold {_num(t)}"
                    return score >= t, score < t - self.confluence_margin, values, text
                t = self.short_threshold
                values = {"confluence_score": score, "threshold": t}
                text = f"{s} confluence {_num(score)} reached the short threshold {_num(t)}"
                return score <= t, score > t + self.confluence_margin, values, text
        return None
