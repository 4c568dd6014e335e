"""Compound rules (kind ``conditions``): one to five conditions on the service's metrics,
joined by ``all`` (every condition met) or ``any`` (at least one met).

A condition names a ``metric`` and a ``comparison``:

* numeric metrics (``NUMERIC``) compare with ``above`` (met at or above ``value``) or
  ``below`` (met at or below it) — the same "at or beyond" convention as the single
  kinds (``alerts.conditions``);
* state metrics (``STATES``: ``signal`` long/short/neutral, ``beta_band`` the beta risk
  bands) compare with ``is`` (the state equals ``value``), ``becomes`` (it equals
  ``value`` now and was another known state at the previous evaluation) or
  ``changes`` (it differs from the previous known state; no ``value``).

Metrics and their units: ``price`` (quote currency), ``change_24h_pct`` (%),
``volume_spike`` (last closed candle's volume ÷ mean of the 20 before it, on a
``timeframe``; required), ``confluence`` (score 0–100), ``component`` (a named
confluence component's score 0–100), ``signal`` (the confluence signal), ``beta_band``,
``funding_rate`` (a fraction per funding interval), ``open_interest_change_pct`` (1 h, %),
``long_short_ratio`` (accounts long ÷ short). ``timeframe`` is accepted only by the
metrics of ``TIMEFRAMES_OF`` (none given: the combined confluence, the headline beta).
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from app.market.models.confluence_weights import COMPONENTS
from app.market.models.timeframes import TIMEFRAMES
from app.services.alerts.conditions import number

Metric = Literal[
    "price",
    "change_24h_pct",
    "volume_spike",
    "confluence",
    "component",
    "signal",
    "beta_band",
    "funding_rate",
    "open_interest_change_pct",
    "long_short_ratio",
]
Comparison = Literal["above", "below", "is", "becomes", "changes"]
Join = Literal["all", "any"]
METRICS: tuple[str, ...] = Metric.__args__  # type: ignore[attr-defined]
MAX_CONDITIONS = 5
VOLUME_SPIKE_PERIOD = 20  # candles averaged (the usual relative-volume length)
MAX_VOLUME_SPIKE = 1_000.0
BETA_TIMEFRAMES = ("4h", "1h", "5m")  # the beta windows (``analytics.beta.BETA_WINDOWS``)
BETA_BANDS = ("high", "moderate", "neutral", "low", "defensive")
SIGNALS = ("long", "short", "neutral")

# Numeric metric → (lowest, highest, whether the lowest is excluded, what it is).
NUMERIC: dict[str, tuple[float, float, bool, str]] = {
    "price": (0.0, math.inf, True, "a price"),
    "change_24h_pct": (-1_000_000.0, 1_000_000.0, False, "a 24h change in %"),
    "volume_spike": (0.0, MAX_VOLUME_SPIKE, False, "a volume ratio (last ÷ mean of 20)"),
    "confluence": (0.0, 100.0, False, "a confluence score"),
    "component": (0.0, 100.0, False, "a component score"),
    "funding_rate": (-0.05, 0.05, False, "a funding rate as a fraction per interval"),
    "open_interest_change_pct": (-100.0, 1_000_000.0, False, "a 1h open-interest change in %"),
    "long_short_ratio": (0.0, 1_000.0, True, "a long/short account ratio"),
}
STATES: dict[str, tuple[str, ...]] = {"signal": SIGNALS, "beta_band": BETA_BANDS}
TIMEFRAMES_OF: dict[str, tuple[str, ...]] = {
    "volume_spike": TIMEFRAMES,
    "confluence": TIMEFRAMES,
    "component": TIMEFRAMES,
    "signal": TIMEFRAMES,
    "beta_band": BETA_TIMEFRAMES,
}

NumberValue = Annotated[float, Field(strict=True, allow_inf_nan=False)]
StateValue = Annotated[str, Field(strict=True, max_length=40)]


class ConditionInput(BaseModel):
    """One condition of a ``conditions`` rule, e.g. ``{"metric": "price", "comparison":
    "above", "value": 60000}``, ``{"metric": "signal", "comparison": "becomes", "value":
    "long", "timeframe": "5m"}``, ``{"metric": "component", "component": "orderflow",
    "comparison": "below", "value": 30}``. Raises ValueError naming the field at fault."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: Metric = Field(description="what is compared: " + ", ".join(METRICS))
    comparison: Comparison = Field(
        description="above/below (numeric metrics: met at or beyond value); is/becomes/"
        "changes (signal, beta_band)"
    )
    value: NumberValue | StateValue | None = Field(
        default=None,
        description="a JSON number for above/below (in the metric's unit); a state for "
        f"is/becomes (signal: {', '.join(SIGNALS)}; beta_band: {', '.join(BETA_BANDS)}); "
        "none for changes",
    )
    timeframe: str | None = Field(
        default=None,
        max_length=8,
        description="volume_spike (required), confluence, component, signal: "
        f"{', '.join(TIMEFRAMES)}; beta_band: {', '.join(BETA_TIMEFRAMES)}; none: the "
        "combined confluence / the headline beta",
    )
    component: str | None = Field(
        default=None, max_length=40, description="for metric component: " + ", ".join(COMPONENTS)
    )

    @model_validator(mode="after")
    def _consistent(self) -> ConditionInput:
        _check_timeframe(self)
        if (self.component is None) == (self.metric == "component"):
            raise ValueError(
                f"component: required for metric component (one of {', '.join(COMPONENTS)}),"
                " refused for the others"
            )
        if self.component is not None and self.component not in COMPONENTS:
            raise ValueError(
                f"component: unknown {self.component!r}; one of {', '.join(COMPONENTS)}"
            )
        if self.metric in NUMERIC:
            _check_number(self)
        else:
            _check_state(self)
        return self

    @property
    def name(self) -> str:
        """The key of this condition's value in an alert's ``values``: metric, component
        and timeframe joined by "_" (``price``, ``confluence_5m``,
        ``component_orderflow_1h``, ``volume_spike_5m``)."""
        return "_".join(p for p in (self.metric, self.component, self.timeframe) if p)

    def describe(self) -> str:
        """E.g. "price at or above 60000", "signal (5m) becomes long", "beta band changes"."""
        what = self.metric.replace("_", " ")
        if self.component is not None:
            what = f"{self.component} component"
        if self.timeframe is not None:
            what += f" ({self.timeframe})"
        elif self.metric in ("confluence", "component", "signal"):
            what += " (all timeframes combined)"
        if self.comparison in ("above", "below"):
            assert isinstance(self.value, float)
            return f"{what} at or {self.comparison} {number(self.value)}"
        if self.comparison == "changes":
            return f"{what} changes"
        return f"{what} {self.comparison} {self.value}"


def _check_timeframe(c: ConditionInput) -> None:
    allowed = TIMEFRAMES_OF.get(c.metric)
    if c.timeframe is None:
        if c.metric == "volume_spike":
            raise ValueError(f"timeframe: required for volume_spike ({', '.join(TIMEFRAMES)})")
        return
    if allowed is None:
        raise ValueError(f"timeframe: {c.metric} has no timeframes (leave timeframe out)")
    if c.timeframe not in allowed:
        raise ValueError(
            f"timeframe: {c.timeframe[:8]!r} is not a {c.metric} timeframe; one of "
            + ", ".join(allowed)
        )


def _check_number(c: ConditionInput) -> None:
    if c.comparison not in ("above", "below"):
        raise ValueError(f"comparison: {c.metric} is a number: above or below")
    if not isinstance(c.value, float) or not math.isfinite(c.value):
        raise ValueError(f"value: {c.metric} {c.comparison} needs a JSON number")
    low, high, open_low, what = NUMERIC[c.metric]
    inside = (low < c.value if open_low else low <= c.value) and c.value <= high
    if not inside:
        side = "above" if open_low else "from"
        upper = "" if math.isinf(high) else f" to {number(high)}"
        raise ValueError(f"value: {what}, {side} {number(low)}{upper}")


def _check_state(c: ConditionInput) -> None:
    states = STATES[c.metric]
    if c.comparison in ("above", "below"):
        raise ValueError(f"comparison: {c.metric} is a state: is, becomes or changes")
    if c.comparison == "changes":
        if c.value is not None:
            raise ValueError("value: not allowed for changes")
        return
    if c.value not in states:
        raise ValueError(f"value: {c.metric} {c.comparison} one of {', '.join(states)}")


def describe_conditions(conditions: tuple[ConditionInput, ...] | list, join: str) -> str:
    """E.g. "all of: price at or above 60000; signal (5m) becomes long" (one condition:
    just its description)."""
    parts = [c.describe() for c in conditions]
    if len(parts) == 1:
        return parts[0]
    return f"{join} of: " + "; ".join(parts)


def condition_values(
    conditions: tuple[ConditionInput, ...] | list,
    join: str,
    observed: list,
    previous: list,
    met: list[bool],
    price: float,
) -> dict[str, Any]:
    """An alert's ``values`` for a ``conditions`` rule: ``join``, ``last_price``, each
    condition's observed value under its ``name`` (None: unknown) and ``conditions``,
    one dict per condition in order: ``name``, ``description``, ``value`` (observed),
    ``previous`` (the state before, for state metrics; else None) and ``met``."""
    values: dict[str, Any] = {"join": join, "last_price": price}
    values.update({c.name: v for c, v in zip(conditions, observed, strict=True)})
    values["conditions"] = [
        {"name": c.name, "description": c.describe(), "value": v, "previous": p, "met": m}
        for c, v, p, m in zip(conditions, observed, previous, met, strict=True)
    ]
    return values


def sample_values(conditions: tuple[ConditionInput, ...] | list, join: str) -> dict[str, Any]:
    """``condition_values`` as an alert of these conditions could carry them (every
    variable present), for checking a template."""
    observed = [_sample(c) for c in conditions]
    return condition_values(conditions, join, observed, observed, [True] * len(observed), 1.0)


def _sample(c: ConditionInput) -> float | str:
    if c.metric in NUMERIC:
        return c.value if isinstance(c.value, float) else 1.0
    return c.value if isinstance(c.value, str) else STATES[c.metric][0]
