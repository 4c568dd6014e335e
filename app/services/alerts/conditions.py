"""What a threshold rule means, in one place: the comparison, re-arming and "deeper".

One convention for every rule kind: a rule is **met at or beyond its threshold** —
the ``…_above`` kinds and ``confluence_long`` when the value is ≥ the threshold, the
``…_below`` kinds and ``confluence_short`` when it is ≤. After firing, a rule
**re-arms** once the value is back on the other side of the threshold by the rule's
hysteresis (strictly past the threshold, and at or past the re-arm level), and, while
not re-armed, it fires again after its cooldown only for a **deeper crossing**: a value
beyond the last alert's value by the hysteresis.

Each family of kinds (``FAMILIES``) watches one value in one unit: the price (quote
currency), the 24 h change (%), the confluence score and a confluence component
(0–100), the funding rate (a fraction per funding interval, as the exchange gives it:
0.0005 = 0.05 %), the 1 h open-interest change (%) and the long/short account ratio
(accounts long ÷ short). Hysteresis units follow (``HYSTERESIS_UNITS``): a percentage of
the threshold for prices, an absolute margin in the value's own unit for every other
family (percentage points, score points, a funding rate, a ratio). The defaults
(``DEFAULT_HYSTERESIS``) are what a rule without one gets; stored rules carry the value
they use.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal


@dataclass(frozen=True, slots=True)
class Family:
    """The value a family of kinds watches: ``metric`` in words, ``unit`` appended to
    its numbers (" %" or ""), the hysteresis default, largest value and unit (in words),
    and whether the hysteresis is ``relative`` (a percentage of the threshold)."""

    metric: str
    unit: str
    hysteresis: float
    max_hysteresis: float
    hysteresis_unit: str
    relative: bool = False


# Beyond the max hysteresis a rule would practically never re-arm (a price 50 % away, a
# score 50 away, a funding rate 1 % per interval away).
FAMILIES: dict[str, Family] = {
    "price": Family("price", "", 0.5, 50.0, "% of the threshold", relative=True),
    "change": Family("24h change", " %", 0.5, 100.0, "percentage points"),
    "confluence": Family("confluence score", "", 5.0, 50.0, "score points"),
    "funding": Family("funding rate", "", 0.00005, 0.01, "funding rate (a fraction, absolute)"),
    "open_interest_change": Family(
        "1h open interest change", " %", 0.5, 100.0, "percentage points"
    ),
    "long_short": Family("long/short ratio", "", 0.05, 10.0, "ratio units (absolute)"),
    "component": Family("component", "", 5.0, 50.0, "score points"),
}
_SIDES = {"above": 1, "long": 1, "below": -1, "short": -1}
THRESHOLD_KINDS: frozenset[str] = frozenset(
    f"{family}_{side}"
    for family in FAMILIES
    if family != "confluence"
    for side in ("above", "below")
)
HYSTERESIS_KINDS = (*sorted(THRESHOLD_KINDS), "confluence_long", "confluence_short")
DEFAULT_HYSTERESIS: dict[str, float] = {
    kind: FAMILIES[kind.rpartition("_")[0]].hysteresis for kind in HYSTERESIS_KINDS
}
HYSTERESIS_UNITS: dict[str, str] = {
    kind: FAMILIES[kind.rpartition("_")[0]].hysteresis_unit for kind in HYSTERESIS_KINDS
}
MAX_HYSTERESIS: dict[str, float] = {
    kind: FAMILIES[kind.rpartition("_")[0]].max_hysteresis for kind in HYSTERESIS_KINDS
}


@dataclass(frozen=True, slots=True)
class Condition:
    """One threshold rule's comparison.

    ``direction`` +1: met at or above ``threshold``; −1: at or below. ``hysteresis``
    in the kind's unit; ``relative``: a percentage of the threshold (prices) rather
    than an absolute margin. ``rearm_at``: the level at or past which a fired rule
    re-arms (computed once, so the shown level is exactly the compared one).
    ``family``: the key of ``FAMILIES``; ``component``: the confluence component a
    ``component_*`` rule watches (None for the others)."""

    metric: str
    direction: int
    threshold: float
    hysteresis: float
    relative: bool
    rearm_at: float
    family: str = "price"
    component: str | None = None

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

    def show(self, value: float) -> str:
        """A value of this rule's metric with its unit, exactly as compared: "200",
        "-5 %", a funding rate as the fraction and in percent "0.0005 (0.05 %)"."""
        if self.family == "funding":
            return f"{fixed(value)} ({fixed(_tidy(value * 100))} %)"
        return f"{number(value)}{FAMILIES[self.family].unit}"

    def describe(self) -> str:
        """E.g. "price at or above 200; re-arms at or below 199 (0.5 % of the threshold)",
        "24h change at or below -5 %; re-arms at or above -4.5 % (0.5 percentage points)",
        "funding rate at or above 0.0005 (0.05 %) per funding interval; re-arms at or
        below 0.00045 (0.045 %) (0.00005 = 0.005 % funding rate)"."""
        side, back = ("above", "below") if self.direction > 0 else ("below", "above")
        metric = self.metric if self.component is None else f"{self.component} {self.metric}"
        return (
            f"{metric} at or {side} {self.show(self.threshold)}{_QUALIFIER.get(self.family, '')};"
            f" re-arms at or {back} {self.show(self.rearm_at)} ({_hysteresis_text(self)})"
        )


# What the value is, where the metric's name alone does not say it.
_QUALIFIER = {
    "funding": " per funding interval",
    "open_interest_change": " (open interest now against 1 h ago)",
    "long_short": " (accounts long ÷ short)",
    "component": " (all timeframes combined)",
}


def condition_of(
    kind: str,
    threshold: float | None,
    hysteresis: float | None,
    *,
    long_threshold: float,
    short_threshold: float,
    component: str | None = None,
) -> Condition | None:
    """The condition of a rule of ``kind`` (None for ``beta_band_change``, which has no
    threshold). Confluence rules use the configured ``long_threshold`` /
    ``short_threshold``; ``hysteresis`` None takes the kind's default; ``component``:
    the component a ``component_*`` rule watches. Raises ValueError for a threshold
    kind without a threshold."""
    if kind not in DEFAULT_HYSTERESIS:
        return None
    h = DEFAULT_HYSTERESIS[kind] if hysteresis is None else hysteresis
    family, _, side = kind.rpartition("_")
    direction = _SIDES[side]
    if family == "confluence":
        threshold = long_threshold if side == "long" else short_threshold
    if threshold is None:
        raise ValueError(f"a {kind} rule needs a threshold")
    relative = FAMILIES[family].relative
    rearm_at = threshold * (1 - direction * h / 100) if relative else threshold - direction * h
    return Condition(
        FAMILIES[family].metric,
        direction,
        threshold,
        h,
        relative,
        _tidy(rearm_at),
        family,
        component if family == "component" else None,
    )


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


def fixed(value: float) -> str:
    """Like ``number`` but never in exponent notation: 5e-05 → "0.00005"."""
    if float(value).is_integer() and abs(value) < 1e15:
        return str(int(value))
    return format(Decimal(repr(float(value))), "f")


def _hysteresis_text(condition: Condition) -> str:
    h = condition.hysteresis
    if condition.relative:
        return f"{number(h)} % of the threshold"
    if condition.family == "funding":
        return f"{fixed(h)} = {fixed(_tidy(h * 100))} % funding rate"
    if condition.family == "long_short":
        return f"{number(h)} ratio units"
    if FAMILIES[condition.family].unit == " %":
        return f"{number(h)} percentage points"
    return f"{number(h)} points"
