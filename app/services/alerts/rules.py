"""Alert rules and alerts: what a user asks to be told about, and what was told.

``RuleInput`` is what ``POST /api/alerts/rules`` accepts; ``validate_rule`` checks it
against the symbols the service knows and turns it into a stored ``AlertRule``. An
``Alert`` is one firing of a rule for one symbol. Every model round-trips through
``to_dict()`` / ``from_dict()`` (plain JSON types).
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from app.market.models.confluence_weights import COMPONENTS
from app.market.models.symbols import canonical_symbol
from app.services.alerts.compound import MAX_CONDITIONS, ConditionInput, Join, describe_conditions
from app.services.alerts.conditions import (
    DEFAULT_HYSTERESIS,
    HYSTERESIS_UNITS,
    MAX_HYSTERESIS,
    THRESHOLD_KINDS,
    Condition,
    condition_of,
    number,
)
from app.services.alerts.destinations import DestinationRefused, mask_url, parse_webhook_url
from app.services.alerts.templates import MAX_TEMPLATE, check_template, template_sample

Kind = Literal[
    "price_above",
    "price_below",
    "change_above",
    "change_below",
    "confluence_long",
    "confluence_short",
    "beta_band_change",
    "funding_above",
    "funding_below",
    "open_interest_change_above",
    "open_interest_change_below",
    "long_short_above",
    "long_short_below",
    "component_above",
    "component_below",
    "conditions",
]
Level = Literal["info", "warning", "critical"]
Status = Literal["pending", "acknowledged", "resolved"]

KINDS: tuple[str, ...] = Kind.__args__  # type: ignore[attr-defined]
LEVELS: tuple[str, ...] = Level.__args__  # type: ignore[attr-defined]
STATUSES: tuple[str, ...] = Status.__args__  # type: ignore[attr-defined]
MAX_COOLDOWN_SECONDS = 86_400
MAX_CHANGE_PCT = 1_000_000.0  # a 24h change rule beyond ±1,000,000 % could never fire
MAX_FUNDING_RATE = 0.05  # 5 % per funding interval: beyond any exchange's funding cap
# Family → (lowest, highest, whether the lowest is excluded, what the threshold is).
MAX_LONG_SHORT = 1_000.0
THRESHOLD_RANGES: dict[str, tuple[float, float, bool, str]] = {
    "price": (0.0, math.inf, True, "a price"),
    "change": (-MAX_CHANGE_PCT, MAX_CHANGE_PCT, False, "a 24h change in %"),
    "funding": (
        -MAX_FUNDING_RATE,
        MAX_FUNDING_RATE,
        False,
        "a funding rate as a fraction per interval (0.0005 = 0.05 %)",
    ),
    "open_interest_change": (-100.0, MAX_CHANGE_PCT, False, "a 1h open-interest change in %"),
    # 1,000 longs per short is already beyond any market's positioning
    "long_short": (0.0, MAX_LONG_SHORT, True, "a long/short account ratio (long ÷ short)"),
    "component": (0.0, 100.0, False, "a component score"),
}
MAX_RULE_CHANNELS = 5  # channels one rule may name
DEFAULT_MAX_RULES = 200  # rules stored at most (every rule is evaluated on every snapshot)


def new_id() -> str:
    """12 hex characters (48 random bits)."""
    return secrets.token_hex(6)


def now_ms() -> int:
    return int(time.time() * 1000)


class _Model(BaseModel):
    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]):
        return cls.model_validate(data)


class RuleInput(_Model):
    """A rule as a client submits it. ``symbol=None`` watches every symbol."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Kind
    symbol: str | None = None
    component: str | None = Field(
        default=None,
        description="the confluence component a component_above/component_below rule "
        f"watches (required for those, refused for the others): {', '.join(COMPONENTS)}",
    )
    # JSON numbers only (strict): true is not 1 and "86459,5" is not a number.
    threshold: float | None = Field(
        default=None,
        allow_inf_nan=False,
        strict=True,
        description="price (quote currency), 24h change (%), funding rate (a fraction per "
        "interval: 0.0005 = 0.05 %, |x| <= 0.05), 1h open-interest change (%), long/short "
        "account ratio (> 0) or component score (0-100); none for confluence and beta rules",
    )
    level: Level = "warning"
    cooldown_seconds: int = Field(default=300, ge=0, le=MAX_COOLDOWN_SECONDS, strict=True)
    hysteresis: float | None = Field(default=None, ge=0, allow_inf_nan=False, strict=True)
    title: str | None = Field(default=None, max_length=80)
    note: str | None = Field(default=None, max_length=500)
    webhook_url: str | None = Field(default=None, max_length=500)
    conditions: list[ConditionInput] | None = Field(
        default=None,
        min_length=1,
        max_length=MAX_CONDITIONS,
        description="kind conditions only (required there): 1-5 conditions on the service's "
        "metrics, joined by join",
    )
    join: Join | None = Field(
        default=None, description="kind conditions only: all (default) or any of the conditions"
    )
    template: str | None = Field(
        default=None,
        max_length=MAX_TEMPLATE,
        description="Jinja2 (sandboxed, plain text) for the alert's message; variables: symbol, "
        "level, title, kind, price (last price), message (the default message), values (the "
        "alert's values: e.g. values.threshold, values.price; for kind conditions "
        "values.<condition name> such as values.confluence_5m, values.conditions[i].value, "
        ".met, .previous, values.join, values.last_price); checked on save",
    )
    channels: list[str] = Field(
        default_factory=list,
        max_length=MAX_RULE_CHANNELS,
        description="ids of the channels the rule's alerts are sent to (0-5; each must exist)",
    )

    @field_validator("symbol")
    @classmethod
    def _canonical(cls, value: str | None) -> str | None:
        return None if value is None else canonical_symbol(value)

    @field_validator("component")
    @classmethod
    def _known_component(cls, value: str | None) -> str | None:
        if value is not None and value not in COMPONENTS:
            raise ValueError(f"unknown component {value[:40]!r}; one of {', '.join(COMPONENTS)}")
        return value

    @field_validator("threshold", "hysteresis")
    @classmethod
    def _no_negative_zero(cls, value: float | None) -> float | None:
        return None if value is None else value + 0.0  # -0.0 → 0.0

    @field_validator("webhook_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:  # the message never repeats the URL: it may hold a token
            parse_webhook_url(value.strip())
        except DestinationRefused as error:
            raise ValueError(f"must be an http:// or https:// URL ({error})") from None
        return value.strip()

    @field_validator("channels")
    @classmethod
    def _channel_ids(cls, value: list[str]) -> list[str]:
        for channel_id in value:
            if not 1 <= len(channel_id) <= 40 or not channel_id.isprintable():
                raise ValueError("each channel id is 1-40 printable characters")
        if len(set(value)) != len(value):
            raise ValueError("a channel is named twice")
        return value

    @model_validator(mode="after")
    def _fields_match_kind(self) -> RuleInput:
        if self.kind in THRESHOLD_KINDS:
            if self.threshold is None:
                raise ValueError(f"threshold is required for {self.kind}")
            _check_threshold(self.kind, self.threshold)
        elif self.threshold is not None:
            raise ValueError(
                f"threshold is not allowed for {self.kind} "
                "(confluence rules use the configured long/short thresholds)"
            )
        _check_component(self.kind, self.component)
        _check_compound(self)
        if self.hysteresis is not None:
            if self.kind not in DEFAULT_HYSTERESIS:
                raise ValueError(f"hysteresis is not allowed for {self.kind}")
            limit = MAX_HYSTERESIS[self.kind]
            if self.hysteresis > limit:
                unit = HYSTERESIS_UNITS[self.kind]
                raise ValueError(f"hysteresis of {self.kind} is in {unit}, at most {limit:g}")
        return self


def _check_compound(rule: RuleInput) -> None:
    """A conditions rule has conditions; no other rule has conditions or a join."""
    if rule.kind == "conditions" and not rule.conditions:
        raise ValueError("conditions is required for kind conditions (1 to 5 conditions)")
    if rule.kind != "conditions" and (rule.conditions is not None or rule.join is not None):
        raise ValueError(f"conditions and join are not allowed for {rule.kind}")


def _check_threshold(kind: str, threshold: float) -> None:
    """ValueError when ``threshold`` is outside its family's ``THRESHOLD_RANGES``."""
    low, high, open_low, what = THRESHOLD_RANGES[kind.rpartition("_")[0]]
    if open_low and math.isinf(high):
        if not threshold > low:
            raise ValueError(f"threshold of {kind} must be {what} > {_bound(low)}")
    elif open_low and not low < threshold <= high:
        raise ValueError(
            f"threshold of {kind} is {what}, above {_bound(low)}, at most {_bound(high)}"
        )
    elif not low <= threshold <= high:
        raise ValueError(f"threshold of {kind} is {what}, between {_bound(low)} and {_bound(high)}")


def _bound(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else number(value)


def _check_component(kind: str, component: str | None) -> None:
    """A component rule names its component; no other rule names one."""
    if kind.startswith("component_") and component is None:
        raise ValueError(f"component is required for {kind} (one of {', '.join(COMPONENTS)})")
    if not kind.startswith("component_") and component is not None:
        raise ValueError(
            f"component is not allowed for {kind} "
            "(only component_above and component_below watch a component)"
        )


class AlertRule(RuleInput):
    """A stored rule."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    created_at_ms: int

    def public_dict(self, long_threshold: float, short_threshold: float) -> dict[str, Any]:
        """``to_dict()`` with ``webhook_url`` masked to ``scheme://host/…`` (what any
        response may show; the stored rule keeps the full URL for delivery), the
        hysteresis in use, its unit and the rule's ``description`` in words (e.g.
        "price at or above 200; re-arms at or below 199 (0.5 % of the threshold)";
        confluence rules with the configured ``long_threshold``/``short_threshold``)."""
        condition = condition_of(
            self.kind,
            self.threshold,
            self.hysteresis,
            long_threshold=long_threshold,
            short_threshold=short_threshold,
            component=self.component,
        )
        return {
            **self.to_dict(),
            "webhook_url": mask_url(self.webhook_url),
            "hysteresis": None if condition is None else condition.hysteresis,
            "hysteresis_unit": HYSTERESIS_UNITS.get(self.kind),
            "rearm_at": None if condition is None else condition.rearm_at,
            "description": _describe_rule(self, condition),
        }


class Alert(_Model):
    """One firing of a rule for one symbol. ``values``: the numbers at trigger time."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    rule_id: str
    kind: Kind
    symbol: str
    level: Level
    title: str
    message: str
    values: dict[str, Any] = Field(default_factory=dict)
    status: Status = "pending"
    created_at_ms: int
    acknowledged_at_ms: int | None = None
    resolved_at_ms: int | None = None

    def with_status(self, status: str, at_ms: int) -> Alert:
        """pending → acknowledged → resolved, or pending → resolved; else ValueError."""
        allowed = {"pending": ("acknowledged", "resolved"), "acknowledged": ("resolved",)}
        if status not in allowed.get(self.status, ()):
            raise ValueError(f"alert {self.id} cannot go from {self.status} to {status}")
        changes: dict[str, Any] = {"status": status, f"{status}_at_ms": at_ms}
        return self.model_copy(update=changes)


def _describe_rule(rule: RuleInput, condition: Condition | None) -> str:
    if rule.conditions:
        return describe_conditions(rule.conditions, rule.join or "all")
    if condition is None:  # beta_band_change
        return "the beta band changes"
    return condition.describe()


def _describe(error: ValidationError) -> str:
    problems = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"]) or "rule"
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}")
    return "invalid alert rule: " + "; ".join(problems)


def validate_rule(
    data: RuleInput | Mapping[str, Any],
    known_symbols: Collection[str],
    *,
    created_at_ms: int | None = None,
    unserved: Mapping[str, str] | None = None,
) -> AlertRule:
    """An ``AlertRule`` with a fresh id, or ValueError naming the problem (and, for a bad
    kind, level or symbol, the valid values). ``unserved``: symbols known but not served
    now (delisted…) → why; a rule for one is refused."""
    try:
        rule = data if isinstance(data, RuleInput) else RuleInput.model_validate(dict(data))
    except ValidationError as exc:
        raise ValueError(_describe(exc)) from None
    if rule.symbol is not None and rule.symbol not in known_symbols:
        known = ", ".join(sorted(known_symbols)) or "none"
        raise ValueError(f"unknown symbol {rule.symbol!r}; known symbols: {known}")
    if rule.symbol is not None and rule.symbol in (unserved or {}):
        reason = (unserved or {})[rule.symbol]
        raise ValueError(
            f"{rule.symbol} is not served now ({reason}): a rule for it could not fire"
        )
    if rule.threshold is not None and not math.isfinite(rule.threshold):
        raise ValueError("threshold must be a finite number")  # a RuleInput built unvalidated
    if rule.template is not None:  # on save only: a stored rule is not re-rendered
        check_template(rule.template, template_sample(rule))
    stamp = now_ms() if created_at_ms is None else created_at_ms
    fields = rule.model_dump()
    if rule.kind == "conditions" and rule.join is None:
        fields["join"] = "all"
    if fields["hysteresis"] is None and rule.kind in DEFAULT_HYSTERESIS:
        fields["hysteresis"] = DEFAULT_HYSTERESIS[rule.kind]  # stored: the rule shows it
    return AlertRule(**fields, id=new_id(), created_at_ms=stamp)
