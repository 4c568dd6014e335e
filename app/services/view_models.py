"""Pydantic models of the stored views, as served: one response model per entry of
the view catalogue (``app.services.catalogue``). They document the view routes in
``/openapi.json``; the views are served from pre-serialized bytes, so these models
describe them rather than re-validate them per request (the contract test does)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


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


class LiquidMovers(Movers):
    """The movers with the liquidity filter they passed."""

    min_quote_volume: float = Field(description="24h quote turnover a mover needs")
    excluded_illiquid: int = Field(description="tickers left out for less turnover")


class MoversResponse(Freshness, LiquidMovers):
    pass


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
    undefined: dict[str, str] = Field(
        default_factory=dict, description="statistic → why it is null on this data"
    )


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
    movers: LiquidMovers
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
    funding_rate: float | None = Field(
        None,
        description="its perpetual's funding rate, a fraction per funding interval "
        "(0.0001 = 0.01 %); null without a perpetual or before it is read",
    )


class MobileDashboard(Freshness):
    market_overview: MarketOverview
    confluence_scores: list[MobileCard]
    top_movers: Movers
    signals: list[Signal]
    critical_alerts: list[dict[str, Any]]
    beta_summary: dict[str, Any]


class DashboardOverview(Freshness):
    overview: MarketOverview
    movers: LiquidMovers
    signal_counts: dict[str, int]
    beta: dict[str, Any]


class SignalsResponse(Freshness):
    signals: list[Signal]
    thresholds: dict[str, float]


class MarketOverviewResponse(Freshness):
    overview: MarketOverview


class LiquidationsWindow(_Doc):
    window_ms: int = Field(description="the window's length, ms")
    until_ms: int = Field(description="epoch ms the window ends")
    long_value: float = Field(description="long positions liquidated, quote currency")
    short_value: float = Field(description="short positions liquidated, quote currency")
    long_count: int
    short_count: int


class DerivativesRow(_Doc):
    symbol: str = Field(description="the spot symbol (BTCUSDT)")
    contract: str = Field(description="its linear perpetual on the exchange (BTC/USDT:USDT)")
    funding_rate: float | None = Field(
        description="a fraction per funding interval, as the exchange gives it (0.0001 = 0.01 %)"
    )
    funding_interval_hours: float = Field(
        description="hours between settlements (the rate is per interval); 8 when unknown"
    )
    next_funding_time: int | None = Field(description="epoch ms of the next settlement")
    open_interest: float | None = Field(description="open contracts (base units)")
    open_interest_value: float | None = Field(description="open interest in quote currency")
    open_interest_change_pct_1h: float | None = Field(description="percent, over the last hour")
    open_interest_change_pct_24h: float | None = Field(description="percent, over 24 hours")
    long_short_ratio: float | None = Field(description="accounts long ÷ accounts short")
    liquidations: LiquidationsWindow | None = Field(
        description="the last hour's liquidations, where the exchange streams them"
    )
    funding_history: list[list[float]] = Field(
        description="settled funding rates: [epoch ms, rate], oldest first"
    )
    updated_at: int = Field(description="epoch ms when these values were read")
    sentiment: float | None = Field(
        description="the confluence's sentiment component (0–100, 50 neutral), across timeframes"
    )


class DerivativesUnavailable(_Doc):
    symbol: str
    reason: str = Field(description="why there is no derivatives data (never invented)")


class DerivativesResponse(Freshness):
    derivatives: list[DerivativesRow]
    unavailable: list[DerivativesUnavailable]


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
    ticker_missing: list[str] | None = Field(
        None, description="the ticker fields the exchange did not send; null when none"
    )
    listing: ListingNote | None = Field(
        None, description="null while the exchange lists and serves the symbol"
    )
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
    errors: dict[str, str] = Field(
        default_factory=dict, description="the candles could not be fetched → reason"
    )
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
