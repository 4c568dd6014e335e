"""The rules' evaluation, on the collecting side: on every new snapshot the engine
checks each rule against the market facts of the snapshot and its analysis (price, 24h
change, confluence and its components, beta band, the derivatives' funding, open
interest change and long/short ratio, and the 1m price trail since the last check); what fires
is stored, its deliveries queued in the outbox, then announced through the alert service.

Rules are evaluated only where the snapshot was made, so with several replicas an alert
fires once; its announcement reaches every replica through the broadcaster. The alert
service (``service``) holds the writes a route asks for and imports no analysis; this
module is the one that does.
"""

from __future__ import annotations

import math
from typing import TypedDict

from app.market.analytics.confluence import ConfluenceResult
from app.market.analytics.indicators import relative_volume
from app.market.models.candles import Candles
from app.market.models.derivatives import Derivatives
from app.market.models.timeframes import TIMEFRAMES
from app.services.alerts.compound import VOLUME_SPIKE_PERIOD
from app.services.alerts.compound_engine import TimeframeFacts
from app.services.alerts.engine import MarketFacts
from app.services.alerts.price_trail import PriceTrails
from app.services.alerts.service import AlertService
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot


class AlertEvaluation:
    """The pipeline's snapshot listener that runs ``service.engine`` over the rules in
    ``service.store`` and has ``service`` deliver what fires. ``fired``: how many alerts
    this evaluation fired."""

    def __init__(self, service: AlertService) -> None:
        self.service = service
        self.fired = 0

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        """Evaluates every rule on ``snapshot`` and ``analysis``; stores the alerts that
        fire and queues their deliveries (rules' channels and webhooks) before the
        engine's state moves on — so an outbox that cannot be written leaves the rule to
        fire again, never an alert without its messages — then announces each alert and
        has the lists and dashboards rebuilt. Raises the stores' errors (TierUnavailable,
        OSError)."""
        store = self.service.store
        rules = await store.list_rules()
        if not rules:
            return
        # The trails' marks are shared like the engine's state: with several replicas,
        # whichever evaluates next reads the candles on from where the last one stopped.
        trails = PriceTrails(await store.load_trail_marks())
        # per-timeframe readings only compound rules compare: not built without one
        compound = any(rule.kind == "conditions" for rule in rules)
        facts = market_facts(snapshot, analysis, trails, timeframes=compound)
        before = await store.load_engine_state()
        alerts, state = self.service.engine.evaluate(rules, facts, before)
        if alerts:
            await store.add_alerts(alerts)
            await self.service.enqueue(alerts, rules)
        if state != before:  # most snapshots change nothing: no write
            await store.save_engine_state(state)
        await store.save_trail_marks(trails.marks())
        if not alerts:
            return
        self.fired += len(alerts)
        for alert in alerts:
            await self.service.deliver(alert, snapshot.fetched_at_ms)
        await self.service.changed()


def market_facts(
    snapshot: Snapshot,
    analysis: Analysis,
    trails: PriceTrails | None = None,
    *,
    timeframes: bool = True,
) -> list[MarketFacts]:
    """One ``MarketFacts`` per priced symbol; with ``trails``, each carries the 1m-candle
    prices seen since the previous call (and the trails move on); with ``timeframes``,
    its readings per timeframe (else none: no rule compares them). A symbol without
    derivatives (``snapshot.derivatives`` has none for it) has None for them."""
    facts = []
    if trails is not None:
        trails.forget(set(snapshot.tickers))
    for symbol, ticker in snapshot.tickers.items():
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        beta = analysis.headline_beta(symbol)
        one_minute = snapshot.candles.get(symbol, {}).get("1m")
        derivatives = snapshot.derivatives.by_symbol.get(symbol)
        facts.append(
            MarketFacts(
                symbol=symbol,
                price=ticker.last,
                change_24h_pct=ticker.change_24h_pct,
                confluence_score=None if combined is None else combined.score,
                beta_band=None if beta is None else beta.risk_band,
                trail=() if trails is None else trails.take(symbol, one_minute),
                **_derivative_facts(derivatives),
                components=_component_scores(combined),
                signal=None if combined is None else combined.signal,
                timeframes=_timeframe_facts(snapshot, analysis, symbol) if timeframes else {},
            )
        )
    return facts


def _timeframe_facts(
    snapshot: Snapshot, analysis: Analysis, symbol: str
) -> dict[str, TimeframeFacts]:
    """Timeframe → the symbol's readings there (confluence score, signal and components,
    volume spike, beta band); a timeframe with none of them is left out."""
    results = analysis.confluence.get(symbol, {})
    betas = (analysis.beta or {}).get(symbol, {})
    candles = snapshot.candles.get(symbol, {})
    facts = {}
    for timeframe in TIMEFRAMES:
        result, beta, series = results.get(timeframe), betas.get(timeframe), candles.get(timeframe)
        if result is None and beta is None and series is None:
            continue
        facts[timeframe] = TimeframeFacts(
            confluence_score=None if result is None else _finite(result.score),
            signal=None if result is None else result.signal,
            components=_component_scores(result),
            volume_spike=None if series is None else volume_spike(series),
            beta_band=None if beta is None else beta.risk_band,
        )
    return facts


def volume_spike(candles: Candles) -> float | None:
    """The last closed candle's volume ÷ the mean volume of the ``VOLUME_SPIKE_PERIOD``
    (20) closed candles before it — the relative volume (RVOL) of
    ``analytics.indicators.relative_volume``; the newest candle, maybe still forming, is
    left out. None with fewer than 21 closed candles or no volume before it."""
    return _finite(relative_volume(candles.closed().volume, VOLUME_SPIKE_PERIOD))


class _DerivativeFacts(TypedDict, total=False):
    funding_rate: float | None
    open_interest_change_1h_pct: float | None
    long_short_ratio: float | None


def _derivative_facts(derivatives: Derivatives | None) -> _DerivativeFacts:
    """The derivatives values the rules compare (None each when unknown or not finite)."""
    if derivatives is None:
        return {}
    return {
        "funding_rate": _finite(derivatives.funding_rate),
        "open_interest_change_1h_pct": _finite(derivatives.open_interest_change_pct(1)),
        "long_short_ratio": _finite(derivatives.long_short_ratio),
    }


def _component_scores(combined: ConfluenceResult | None) -> dict[str, float | None]:
    """Component → score (0–100, None when unavailable) of the combined result."""
    if combined is None:
        return {}
    return {name: _finite(c.score) for name, c in combined.components.items()}


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None
