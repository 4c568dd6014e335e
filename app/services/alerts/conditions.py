"""What a threshold rule means, in one place: the comparison, re-arming and "deeper".

One convention for every rule kind: a rule is **met at or beyond its threshold** —
``price_above``, ``change_above`` and ``confluence_long`` when the value is ≥ the
threshold; ``price_below``, ``change_below`` and ``confluence_short`` when it is ≤.
After firing, a rule **re-arms** once the value is back on the other side of the
threshold by the rule's hysteresis (strictly past the threshold, and at or past the
re-arm level), and, while not re-armed, it fires again after its cooldown only for a
**deeper crossing**: a value beyond the last alert's value by the hysteresis.

Hysteresis units depend on the kind (``HYSTERESIS_UNITS``): a percentage of the
threshold for prices, percentage points for the 24 h change, score points for the
confluence score. The defaults (``DEFAULT_HYSTERESIS``) are what a rule without one
gets; stored rules carry the value they use.
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_HYSTERESIS: dict[str, float] = {
    "price_above": 0.5,
    "price_below": 0.5,
    "change_above": 0.5,
    "change_below": 0.5,
    "confluence_long": 5.0,
    "confluence_short": 5.0,
}
HYSTERESIS_UNITS: dict[str, str] = {
    "price_above": "% of the threshold",
    "price_below": "% of the threshold",
    "change_above": "percentage points",
    "change_below": "percentage points",
    "confluence_long": "score points",
    "confluence_short": "score points",
}
# Beyond these a rule would practically never re-arm (a price 50 % away, a score 50 away).
MAX_HYSTERESIS: dict[str, float] = {
    "price_above": 50.0,
    "price_below": 50.0,
    "change_above": 100.0,
    "change_below": 100.0,
    "confluence_long": 50.0,
    "confluence_short": 50.0,
}
_METRICS = {"price": "price", "change": "24h change", "confluence": "confluence score"}


@dataclass(frozen=True, slots=True)
class Condition:
    """One threshold rule's comparison.

    ``direction`` +1: met at or above ``threshold``; −1: at or below. ``hysteresis``
    in the kind's unit; ``relative``: a percentage of the threshold (prices) rather
    than an absolute margin. ``rearm_at``: the level at or past which a fired rule
    re-arms (computed once, so the shown level is exactly the compared one)."""

    metric: str
    direction: int
    threshold: float
    hysteresis: float
    relative: bool
    rearm_at: float

    def met(self, value: float) -> bool:
        """At or beyond the threshold."""
        return value >= self.threshold if self.direction > 0 else value <= self.threshold

    def cleared(self, value: float) -> bool:
        """Back on the other side of the threshold by the hysteresis."""
        if self.direction > 0:
            return value < self.threshold and value <= self.rearm_at
        return value > self.threshold and value >= self.rearm_at

    def deeper_than(self, fired: float) -> float:
        """The level a value must reach (at or beyond) to be a deeper crossing than an
        alert that fired at ``fired``."""
        step = abs(fired) * self.hysteresis / 100 if self.relative else self.hysteresis
        return _tidy(fired + self.direction * step)

    def deeper(self, value: float, fired: float) -> bool:
        """Strictly beyond ``fired`` and at or beyond ``deeper_than(fired)``."""
        level = self.deeper_than(fired)
        if self.direction > 0:
            return value > fired and value >= level
        return value < fired and value <= level

    def describe(self) -> str:
        """E.g. "price at or above 200; re-arms at or below 199 (0.5 % of the threshold)",
        "24h change at or below -5 %; re-arms at or above -4.5 % (0.5 percentage points)"."""
        side, back = ("above", "below") if self.direction > 0 else ("below", "above")
        unit = " %" if self.metric == "24h change" else ""
        return (
            f"{self.metric} at or {side} {number(self.threshold)}{unit}; re-arms at or {back} "
            f"{number(self.rearm_at)}{unit} ({_hysteresis_text(self)})"
        )


def condition_of(
    kind: str,
    threshold: float | None,
    hysteresis: float | None,
    *,
    long_threshold: float,
    short_threshold: float,
) -> Condition | None:
    """The condition of a rule of ``kind`` (None for ``beta_band_change``, which has no
    threshold). Confluence rules use the configured ``long_threshold`` /
    ``short_threshold``; ``hysteresis`` None takes the kind's default."""
    if kind not in DEFAULT_HYSTERESIS:
        return None
    h = DEFAULT_HYSTERESIS[kind] if hysteresis is None else hysteresis
    family, _, side = kind.partition("_")
    direction = 1 if side in ("above", "long") else -1
    if family == "confluence":
        threshold = long_threshold if side == "long" else short_threshold
    if threshold is None:
        raise ValueError(f"a {kind} rule needs a threshold")
    relative = family == "price"
    rearm_at = threshold * (1 - direction * h / 100) if relative else threshold - direction * h
    return Condition(_METRICS[family], direction, threshold, h, relative, _tidy(rearm_at))


def _tidy(level: float) -> float:
    """``level`` at 12 significant digits: 0.995 rather than 0.9950000000000001 (the
    level shown is then exactly the level compared)."""
    return float(f"{level:.12g}")


def number(value: float) -> str:
    """The shortest text that reads back as exactly ``value``: 100000 → "100000",
    100123.5 → "100123.5", 123456.123456789 → "123456.123456789", 1e-07 → "1e-07",
    0.30000000000000004 as itself (a rule never shows a value it does not compare)."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _hysteresis_text(condition: Condition) -> str:
    if condition.relative:
        return f"{number(condition.hysteresis)} % of the threshold"
    unit = "percentage points" if condition.metric == "24h change" else "points"
    return f"{number(condition.hysteresis)} {unit}"
