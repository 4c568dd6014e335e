"""The alert service: evaluates the rules on every new snapshot this replica
produces, stores what fires, announces it (live delivery, webhooks) and keeps the
alert views (the cached list, the mobile dashboard's critical alerts) current.

Rules are evaluated only where the snapshot was made, so with several replicas an
alert fires once; its announcement reaches every replica through the broadcaster.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from app.cache.coherence import Coherence
from app.cache.tier import TierUnavailable
from app.services.alert_engine import AlertEngine, MarketFacts
from app.services.alert_rules import Alert
from app.services.alert_store import AlertStore
from app.services.analysis import COMBINED, Analysis
from app.services.pipeline import Pipeline
from app.services.snapshot import Snapshot
from app.services.webhooks import WebhookSender

log = logging.getLogger(__name__)

CRITICAL_SHOWN = 10
Announce = Callable[[dict, int], Awaitable[None]]  # (alert, generated_at_ms)


class AlertService:
    def __init__(
        self,
        store: AlertStore,
        engine: AlertEngine,
        pipeline: Pipeline,
        coherence: Coherence,
        webhooks: WebhookSender,
    ) -> None:
        self.store = store
        self.engine = engine
        self.pipeline = pipeline
        self.coherence = coherence
        self.webhooks = webhooks
        self.announce: list[Announce] = []
        self.fired = 0

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        rules = await self.store.list_rules()
        if not rules:
            return
        state = await self.store.load_engine_state()
        alerts, state = self.engine.evaluate(rules, market_facts(snapshot, analysis), state)
        if alerts:
            await self.store.add_alerts(alerts)
        await self.store.save_engine_state(state)
        if not alerts:
            return
        self.fired += len(alerts)
        urls = {rule.id: rule.webhook_url for rule in rules if rule.webhook_url}
        for alert in alerts:
            await self._deliver(alert, urls.get(alert.rule_id), snapshot.fetched_at_ms)
        await self.changed()

    async def _deliver(self, alert: Alert, webhook_url: str | None, at_ms: int) -> None:
        payload = alert.to_dict()
        for announce in self.announce:
            try:
                await announce(payload, at_ms)
            except Exception:
                log.exception("alert announcement failed")
        if webhook_url:
            self.webhooks.send_in_background(webhook_url, payload)

    async def changed(self) -> None:
        """Alerts or rules changed: the cached lists go (on every replica) and the
        dashboards are rebuilt from the latest snapshot, if this replica holds one."""
        await self.coherence.invalidate_alone(["alerts"])
        await self.pipeline.republish()

    async def critical_alerts(self) -> list[dict]:
        """Pending critical alerts for the mobile dashboard (none while the store is down)."""
        try:
            alerts, _ = await self.store.list_alerts(
                status="pending", level="critical", limit=CRITICAL_SHOWN
            )
        except (TierUnavailable, OSError):
            return []
        return [alert.to_dict() for alert in alerts]


def market_facts(snapshot: Snapshot, analysis: Analysis) -> list[MarketFacts]:
    facts = []
    for symbol, ticker in snapshot.tickers.items():
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        beta = analysis.headline_beta(symbol)
        facts.append(
            MarketFacts(
                symbol=symbol,
                price=ticker.last,
                change_24h_pct=ticker.change_24h_pct,
                confluence_score=None if combined is None else combined.score,
                beta_band=None if beta is None else beta.risk_band,
            )
        )
    return facts
