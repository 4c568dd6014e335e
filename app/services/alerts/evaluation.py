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

from app.market.analytics.confluence import ConfluenceResult
from app.market.models.derivatives import Derivatives
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
        facts = market_facts(snapshot, analysis, trails)
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
    snapshot: Snapshot, analysis: Analysis, trails: PriceTrails | None = None
) -> list[MarketFacts]:
    """One ``MarketFacts`` per priced symbol; with ``trails``, each carries the 1m-candle
    prices seen since the previous call (and the trails move on). A symbol without
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
            )
        )
    return facts


def _derivative_facts(derivatives: Derivatives | None) -> dict[str, float | None]:
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
