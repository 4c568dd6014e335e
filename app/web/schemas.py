"""Pydantic models of the API: they document every response in ``/openapi.json``
and validate the query strings. Responses are served from pre-serialized bytes,
so these models describe them rather than re-validate them per request."""

from __future__ import annotations

from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, create_model


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class ListingNote(_Doc):
    """A symbol the exchange does not list or serve now."""

    symbol: str
    status: Literal["delisted", "unserved", "not_listed"] = Field(
        description="delisted: no longer in the exchange's markets; unserved: listed but "
        "no ticker for 3 refreshes, or no ticker and its candles/book refused as unknown; "
        "not_listed: configured but not listed since start-up"
    )
    since: int = Field(description="epoch ms of the first refresh that showed it")
    reason: str
    last_price: float | None = Field(description="its last ticker's price, if any")
    last_seen: int | None = Field(description="epoch ms of its last ticker, if any")


class Freshness(_Doc):
    age_ms: int = Field(description="milliseconds since the data was fetched")
    stale: bool = Field(description="true when older than stale_after_seconds")
    generated_at: int = Field(description="epoch ms when the market data was fetched")
    source: Literal["simulated", "ccxt"]
    exchange: str = Field(description="'simulated' or the ccxt exchange id")
    version: int = Field(description="snapshot version, increases with every refresh")
    errors: dict[str, str] = Field(description="parts that could not be fetched → reason")
    delisted: list[ListingNote] = Field(
        default_factory=list,
        description="configured symbols the exchange does not list or serve now",
    )


class MarketOverview(_Doc):
    market_regime: Literal["bullish", "bearish", "neutral", "unknown"]
    trend_strength: float
    btc_price: float | None
    btc_change_24h: float | None
    btc_volatility: float | None = Field(description="annualised %, from 5m candles")
    btc_volume_dominance: float | None = Field(description="BTC share of tracked 24h turnover")
    total_volume_24h: float
    symbols: int
    gainers: int
    losers: int
    unchanged: int
    average_change: float


class Mover(_Doc):
    symbol: str
    price: float
    change_24h: float
    volume_24h: float


class Movers(_Doc):
    gainers: list[Mover]
    losers: list[Mover]


class MoversResponse(Freshness, Movers):
    min_quote_volume: float
    excluded_illiquid: int


class Signal(_Doc):
    symbol: str
    signal: Literal["long", "short"]
    score: float
    reliability: float
    price: float | None = Field(description="null when the exchange did not send it")
    change_24h: float | None = Field(description="null when the exchange did not send it")
    timeframes_agreeing: list[str]


class BetaBrief(_Doc):
    beta: float
    correlation: float | None = Field(
        description="null when undefined on the data (zero variance); see undefined"
    )
    r_squared: float | None = Field(description="null when the correlation is")
    risk_band: str
    timeframe: str


class ConfluenceSummary(_Doc):
    score: float
    signal: Literal["long", "short", "neutral"]
    sentiment: Literal["bullish", "bearish", "neutral"]
    reliability: float
    components: dict[str, float | None]
    timeframes: dict[str, float]


class SymbolRow(_Doc):
    symbol: str
    price: float | None = Field(description="null when the exchange did not send it")
    bid: float | None = Field(description="null when the exchange did not send it")
    ask: float | None = Field(description="null when the exchange did not send it")
    change_24h: float | None = Field(description="null when the exchange did not send it")
    high_24h: float | None = Field(description="null when the exchange did not send it")
    low_24h: float | None = Field(description="null when the exchange did not send it")
    volume_24h: float | None = Field(description="null when the exchange did not send it")
    base_volume_24h: float | None = Field(description="null when the exchange did not send it")
    tick_size: float | None = Field(
        None,
        description="the market's price step (quote currency) from the exchange; "
        "null when unknown (the simulated market)",
    )
    confluence: ConfluenceSummary | None
    beta: BetaBrief | None
    data_quality: dict[str, Any] | None = Field(
        None,
        description="what the exchange sent that had to be cleaned (candle counts, "
        "by_timeframe); null when nothing had to be",
    )
    listing: ListingNote | None = Field(
        None, description="null while the exchange lists and serves it; else why not"
    )


class DesktopDashboard(Freshness):
    overview: MarketOverview
    symbols: list[SymbolRow]
    movers: Movers
    signals: list[Signal]
    beta: dict[str, Any]


class MobileCard(_Doc):
    symbol: str
    score: float | None
    sentiment: str | None
    signal: str | None
    reliability: float | None
    price: float | None = Field(description="null when the exchange did not send it")
    tick_size: float | None = Field(None, description="the market's price step, if known")
    change_24h: float | None = Field(description="null when the exchange did not send it")
    volume_24h: float | None = Field(description="null when the exchange did not send it")
    high_24h: float | None = Field(description="null when the exchange did not send it")
    low_24h: float | None = Field(description="null when the exchange did not send it")
    components: dict[str, float | None] | None
    listing: ListingNote | None = Field(None, description="as on the desktop rows")


class MobileDashboard(Freshness):
    market_overview: MarketOverview
    confluence_scores: list[MobileCard]
    top_movers: Movers
    signals: list[Signal]
    critical_alerts: list[dict[str, Any]]
    beta_summary: dict[str, Any]


class DashboardOverview(Freshness):
    overview: MarketOverview
    movers: Movers
    signal_counts: dict[str, int]
    beta: dict[str, Any]


class SignalsResponse(Freshness):
    signals: list[Signal]
    thresholds: dict[str, float]


class MarketOverviewResponse(Freshness):
    overview: MarketOverview


class BetaResponse(Freshness):
    overview: dict[str, Any]
    symbols: list[dict[str, Any]]


class SymbolsResponse(Freshness):
    symbols: list[dict[str, Any]]
    timeframes: list[str]


class ConfluenceResponse(Freshness):
    symbol: str
    timeframe: str
    price: float | None = Field(description="null when the exchange did not send it")
    change_24h: float | None = Field(description="null when the exchange did not send it")
    score: float
    signal: Literal["long", "short", "neutral"]
    reliability: float
    components: dict[str, Any]
    weights_used: dict[str, float]
    data_quality: dict[str, Any] | None = Field(
        None,
        description="candle cleaning counts of this timeframe; gaps_bridged: gaps the "
        "indicators ran across",
    )


class CandlesResponse(_Doc):
    age_ms: int
    stale: bool
    generated_at: int
    source: Literal["simulated", "ccxt"]
    exchange: str
    symbol: str
    timeframe: str
    candles: list[list[float]] = Field(
        description="[open time ms, open, high, low, close, volume], oldest first; "
        "never null, times strictly increasing"
    )
    data_quality: dict[str, int] | None = Field(
        None, description="candle cleaning counts; rows_withheld: rows left out here"
    )
    listing: ListingNote | None = Field(
        None, description="null while the exchange lists and serves the symbol"
    )


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
    level: Literal["info", "warning", "critical"]
    webhook_url: str | None = Field(
        default=None, description="masked to scheme://host/…; never the full URL"
    )
    threshold: float | None = Field(
        default=None, description="met at or beyond it (≥ for above/long, ≤ for below/short)"
    )
    hysteresis: float | None = Field(
        default=None, description="re-arm margin, in hysteresis_unit; null for beta_band_change"
    )
    hysteresis_unit: str | None = Field(
        default=None, description="% of the threshold, percentage points or score points"
    )
    rearm_at: float | None = Field(
        default=None, description="a fired rule re-arms at or past this value"
    )
    description: str = Field(
        default="", description="the rule in words, e.g. price at or above 200; re-arms at…"
    )


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


class WarmReport(_Doc):
    warmed: list[str]
    failed: dict[str, str]
    duration_ms: float


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
    timeframe: Literal["1m", "5m", "30m", "1h", "4h", "1d"] = "1h"


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
