"""Pydantic models of the API beyond the views (alerts, operations, errors, health):
they document those responses in ``/openapi.json`` and validate the query strings.
The views' response models are ``app.services.view_models``."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model

from app.market.models.timeframes import Timeframe


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class CacheMetrics(_Doc):
    tiers: dict[str, Any] = Field(description="tier → family → hit/miss/stale/error/corrupt")
    families: dict[str, Any] = Field(description="what callers got, computations, writes")
    hit_ratio: float | None
    l1: dict[str, Any]
    memcached: dict[str, Any] | None
    redis: dict[str, Any] | None
    adaptive_ttl: dict[str, Any]


class AlertRuleView(_Doc):
    id: str
    kind: str
    symbol: str | None = Field(description="null: every symbol")
    component: str | None = Field(
        default=None, description="the confluence component of a component_above/_below rule"
    )
    level: Literal["info", "warning", "critical"]
    webhook_url: str | None = Field(
        default=None, description="masked to scheme://host/…; never the full URL"
    )
    channels: list[str] = Field(
        default_factory=list, description="ids of the channels its alerts are sent to"
    )
    threshold: float | None = Field(
        default=None,
        description="met at or beyond it (≥ for above/long, ≤ for below/short); in the "
        "kind's unit: quote currency (price), % (24h change, 1h open-interest change), a "
        "fraction per funding interval (funding: 0.0005 = 0.05 %), accounts long ÷ short "
        "(long_short), score 0-100 (component)",
    )
    hysteresis: float | None = Field(
        default=None, description="re-arm margin, in hysteresis_unit; null for beta_band_change"
    )
    hysteresis_unit: str | None = Field(
        default=None,
        description="% of the threshold (prices); else an absolute margin in the value's "
        "unit: percentage points, score points, funding rate (a fraction) or ratio units",
    )
    rearm_at: float | None = Field(
        default=None, description="a fired rule re-arms at or past this value"
    )
    description: str = Field(
        default="", description="the rule in words, e.g. price at or above 200; re-arms at…"
    )
    conditions: list[dict[str, Any]] | None = Field(
        default=None,
        description="kind conditions: [{metric, comparison, value, timeframe, component}]",
    )
    join: Literal["all", "any"] | None = Field(default=None, description="kind conditions")
    template: str | None = Field(default=None, description="the message template, if any")


class AlertView(_Doc):
    id: str
    rule_id: str
    symbol: str
    level: Literal["info", "warning", "critical"]
    status: Literal["pending", "acknowledged", "resolved"]
    created_at_ms: int


class RuleCreated(_Doc):
    rule: AlertRuleView


class RulesPage(_Doc):
    rules: list[AlertRuleView]
    total: int
    offset: int
    limit: int


class RuleDeleted(_Doc):
    deleted: str = Field(description="the id of the rule deleted")


class AlertsPage(_Doc):
    generated_at: int
    alerts: list[AlertView]
    total: int
    offset: int
    limit: int


class AlertChanged(_Doc):
    alert: AlertView


class DeliveryView(_Doc):
    """One delivery of an alert to one destination (never its URL)."""

    channel_id: str = Field(description="the channel's id; 'webhook' for the rule's webhook_url")
    channel_type: str = Field(description="the channel's type, e.g. webhook, json, mailto")
    status: Literal["pending", "delivered", "failed"]
    attempts: int = Field(description="sends made so far")
    reason: str | None = Field(description="why the last attempt failed (none once delivered)")
    next_attempt_at_ms: int | None = Field(description="when a pending one is tried next")
    delivered_at_ms: int | None


class AlertDeliveries(_Doc):
    alert_id: str
    deliveries: list[DeliveryView]


class WarmReport(_Doc):
    warmed: list[str] = Field(description="hot views read back from every shared tier")
    failed: dict[str, str] = Field(description="view → why it could not be had at all")
    not_warmed: dict[str, list[str]] = Field(
        description="view → the shared tiers that do not hold it (down, or refused it)"
    )
    stale: list[str] = Field(description="views warmed with a copy past its TTL")
    duration_ms: float


class WarmIncomplete(_Doc):
    """503: ``warm_incomplete`` (some hot view is missing from a shared tier; the
    report's fields say which) or ``data_unavailable`` (no hot view could be had)."""

    error: str = Field(description="warm_incomplete | data_unavailable")
    message: str
    warmed: list[str] | None = None
    failed: dict[str, str] | None = None
    not_warmed: dict[str, list[str]] | None = None
    stale: list[str] | None = None
    duration_ms: float | None = None


class Invalidated(_Doc):
    invalidated: list[str] = Field(description="the families invalidated, downstream included")


class ErrorResponse(_Doc):
    """An error: a stable code and a human message; some errors add fields."""

    error: str = Field(description="stable, machine-readable code, e.g. invalid_json")
    message: str = Field(description="what went wrong, for a human")
    problems: list[str] | None = Field(
        default=None, description="invalid_request: one 'field: problem' line per problem"
    )


class Health(_Doc):
    status: Literal["ok", "degraded"] = Field(
        description="degraded while a pair that was served is delisted or no longer served"
    )
    reasons: list[str] = Field(
        default_factory=list, description="one line per pair no longer listed or served"
    )
    exchange: str
    simulated: bool
    cache: dict[str, Any] = Field(description="tiers configured → available; embedded")
    uptime_seconds: float
    pipeline: dict[str, Any] = Field(
        description="refresh status; last_error 'hidden' without details"
    )
    details: bool = Field(
        description="true on the monitoring listener, with the admin token, or when "
        "VIRTUOSO_PUBLIC_DETAILS is on: replica and breakers are then present"
    )
    replica: str | None = Field(default=None, description="only with details")
    breakers: dict[str, str] | None = Field(
        default=None, description="only with details: circuit breaker → closed/open/half_open"
    )


class Readiness(_Doc):
    ready: bool
    status: Literal["ok", "degraded", "unavailable"]
    reasons: list[str]


class CandlesQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    timeframe: Timeframe = "1h"


class ConfluenceQueryArgs(Protocol):
    """What a handler reads of a ``confluence_query_model`` instance."""

    timeframe: str


def confluence_query_model(timeframes: list[str]) -> type[BaseModel]:
    """The query string of /api/confluence/<symbol>: ``timeframe`` limited to the
    configured timeframes (and ``all``, the combined score)."""
    # Built at run time from the settings: a type form mypy cannot check, hence Any.
    choices: Any = Literal[tuple(timeframes)]
    return create_model(
        "ConfluenceQuery",
        __config__=ConfigDict(extra="forbid"),
        timeframe=(choices, Field(default="all", description="timeframe, or 'all' combined")),
    )
