"""The alert service: evaluates the rules on every new snapshot this replica
produces, stores what fires, announces it (live delivery, webhooks) and keeps the
alert views (the cached list, the mobile dashboard's critical alerts) current.

It owns every write of rules and alerts: a caller (a route) asks it to create or
delete a rule or move an alert, and it stores the change, invalidates the cached
lists on every replica and republishes the dashboards; nobody else writes the store.

Rules are evaluated only where the snapshot was made, so with several replicas an
alert fires once; its announcement reaches every replica through the broadcaster.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import Protocol

import orjson

from app.backends.errors import TierUnavailable
from app.cache.coherence import Coherence
from app.cache.keys import make_key
from app.cache.layered import CacheRead, Computed, LayeredCache
from app.services.alerts.engine import AlertEngine, MarketFacts
from app.services.alerts.price_trail import PriceTrails
from app.services.alerts.rules import DEFAULT_MAX_RULES, Alert, AlertRule, RuleInput, validate_rule
from app.services.alerts.store import AlertStore
from app.services.alerts.webhooks import WebhookSender
from app.services.analysis import COMBINED, Analysis
from app.services.snapshot import Snapshot

log = logging.getLogger(__name__)

CRITICAL_SHOWN = 10
FAMILY = "alerts"  # the cache family of the alert lists (config/cache.yaml)
Announce = Callable[[dict, int], Awaitable[None]]  # (alert, generated_at_ms)


class Republish(Protocol):
    """Rebuilds the views of the latest snapshot without fetching (the pipeline's
    ``republish``); False when there is none (that recent, with ``fresh_within`` s)."""

    def __call__(self, fresh_within: float | None = None) -> Awaitable[bool]: ...


class AlertService:
    """Rules, their evaluation and the alerts' delivery. ``republish`` rebuilds the
    dashboards after alerts changed; ``refresh_seconds``: the pipeline's interval;
    ``cache``: where the alert lists are cached (family ``alerts``); ``announce``: told
    of every new or changed alert, in order (live delivery, metrics); ``max_rules``: how
    many rules the store may hold (``create_rule`` refuses more); ``clock``: epoch
    seconds, stamps the lists."""

    def __init__(
        self,
        store: AlertStore,
        engine: AlertEngine,
        republish: Republish,
        refresh_seconds: float,
        cache: LayeredCache,
        coherence: Coherence,
        webhooks: WebhookSender,
        max_rules: int = DEFAULT_MAX_RULES,
        *,
        announce: Sequence[Announce] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_rules < 1:
            raise ValueError("max_rules must be >= 1")
        self.max_rules = max_rules
        self.store = store
        self.engine = engine
        self.republish = republish
        self.refresh_seconds = refresh_seconds
        self.cache = cache
        self.coherence = coherence
        self.webhooks = webhooks
        self.clock = clock
        self.announce = tuple(announce)
        self.fired = 0
        # Alerts changed on another replica: if this one makes the snapshots, its
        # dashboards (the phone's critical alerts) are rebuilt now, not at the next refresh.
        coherence.watch(FAMILY, self._changed_elsewhere)

    async def create_rule(
        self,
        data: RuleInput,
        known_symbols: Collection[str],
        unserved: Mapping[str, str] | None = None,
    ) -> AlertRule:
        """Validates, checks the webhook destination (resolving its host), stores the
        rule under the cap and invalidates the lists. ``unserved``: known symbols not
        served now → why (a rule for one is refused). Raises ValueError (invalid rule),
        DestinationRefused (webhook_url refused), TooManyRules, or the store's errors
        (TierUnavailable, OSError); nothing is stored when it raises."""
        rule = validate_rule(data, known_symbols, unserved=unserved)
        if rule.webhook_url:
            await self.webhooks.check_destination(rule.webhook_url)
        await self.store.add_rule(rule, self.max_rules)
        await self._changed()
        return rule

    async def delete_rule(self, rule_id: str) -> bool:
        """Deletes the rule and, if it was stored, invalidates the lists; False when
        there was no such rule. Raises the store's errors (TierUnavailable, OSError)."""
        deleted = await self.store.delete_rule(rule_id)
        if deleted:
            await self._changed()
        return deleted

    async def set_status(self, alert_id: str, status: str, at_ms: int) -> Alert | None:
        """Moves the alert to ``status`` (``acknowledged`` or ``resolved``) at ``at_ms``
        (epoch ms) and announces it live like a new alert, so every replica and page
        shows it; the cached lists and dashboards are rebuilt. None: no such alert.
        Raises ValueError for an impossible move (e.g. acknowledged already), or the
        store's errors (TierUnavailable, OSError); nothing changed then."""
        alert = await self.store.set_status(alert_id, status, at_ms)
        if alert is not None:
            await self._announce(alert, at_ms)
            await self._changed()
        return alert

    async def list_rules(self) -> list[AlertRule]:
        """Every rule, oldest first. Raises the store's errors (TierUnavailable, OSError)."""
        return await self.store.list_rules()

    async def get_alert(self, alert_id: str) -> Alert | None:
        """The alert as stored now, or None. Raises the store's errors."""
        return await self.store.get_alert(alert_id)

    async def recent_alerts(self, limit: int) -> list[dict]:
        """The ``limit`` newest alerts as dicts, newest first. Raises the store's errors."""
        alerts, _ = await self.store.list_alerts(limit=limit)
        return [alert.to_dict() for alert in alerts]

    async def alerts_page(
        self,
        status: str | None = None,
        symbol: str | None = None,
        level: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> CacheRead:
        """One page of alerts, newest first, read through the cache (family ``alerts``,
        invalidated on every change): ``{"generated_at", "alerts", "total", "offset",
        "limit"}``. ``symbol`` must be canonical. Raises NothingToServe when the store
        cannot be read and nothing is cached."""
        parts = [str(value) for value in (status, symbol, level, offset, limit)]
        key = make_key(FAMILY, *parts, namespace=self.cache.policy.namespace)

        async def compute() -> Computed:
            items, total = await self.store.list_alerts(status, symbol, level, offset, limit)
            generated_at = int(self.clock() * 1000)
            body = {
                "generated_at": generated_at,
                "alerts": [alert.to_dict() for alert in items],
                "total": total,
                "offset": offset,
                "limit": limit,
            }
            return Computed(orjson.dumps(body), generated_at)

        return await self.cache.read(key, FAMILY, compute)

    def public_rule(self, rule: AlertRule) -> dict:
        """What any response may show of ``rule`` (``AlertRule.public_dict`` with this
        engine's confluence thresholds)."""
        return rule.public_dict(self.engine.long_threshold, self.engine.short_threshold)

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        rules = await self.store.list_rules()
        if not rules:
            return
        # The trails' marks are shared like the engine's state: with several replicas,
        # whichever evaluates next reads the candles on from where the last one stopped.
        trails = PriceTrails(await self.store.load_trail_marks())
        facts = market_facts(snapshot, analysis, trails)
        before = await self.store.load_engine_state()
        alerts, state = self.engine.evaluate(rules, facts, before)
        if alerts:
            await self.store.add_alerts(alerts)
        if state != before:  # most snapshots change nothing: no write
            await self.store.save_engine_state(state)
        await self.store.save_trail_marks(trails.marks())
        if not alerts:
            return
        self.fired += len(alerts)
        urls = {rule.id: rule.webhook_url for rule in rules if rule.webhook_url}
        for alert in alerts:
            await self._deliver(alert, urls.get(alert.rule_id), snapshot.fetched_at_ms)
        await self._changed()

    async def _deliver(self, alert: Alert, webhook_url: str | None, at_ms: int) -> None:
        payload = await self._announce(alert, at_ms)
        if webhook_url:
            self.webhooks.send_in_background(webhook_url, payload)

    async def _announce(self, alert: Alert, at_ms: int) -> dict:
        payload = alert.to_dict()
        for announce in self.announce:
            try:
                await announce(payload, at_ms)
            except Exception:
                log.exception("alert announcement failed")
        return payload

    async def _changed(self) -> None:
        """Alerts or rules changed: the cached lists go (on every replica) and the
        dashboards are rebuilt from the latest snapshot, if this replica holds one."""
        await self.coherence.invalidate_alone([FAMILY])
        await self.republish()

    async def _changed_elsewhere(self) -> None:
        await self.republish(fresh_within=2 * self.refresh_seconds)

    async def critical_alerts(self) -> list[dict]:
        """Pending critical alerts for the mobile dashboard (none while the store is down)."""
        try:
            alerts, _ = await self.store.list_alerts(
                status="pending", level="critical", limit=CRITICAL_SHOWN
            )
        except (TierUnavailable, OSError):
            return []
        return [alert.to_dict() for alert in alerts]


def market_facts(
    snapshot: Snapshot, analysis: Analysis, trails: PriceTrails | None = None
) -> list[MarketFacts]:
    """One ``MarketFacts`` per priced symbol; with ``trails``, each carries the 1m-candle
    prices seen since the previous call (and the trails move on)."""
    facts = []
    if trails is not None:
        trails.forget(set(snapshot.tickers))
    for symbol, ticker in snapshot.tickers.items():
        combined = analysis.confluence.get(symbol, {}).get(COMBINED)
        beta = analysis.headline_beta(symbol)
        one_minute = snapshot.candles.get(symbol, {}).get("1m")
        facts.append(
            MarketFacts(
                symbol=symbol,
                price=ticker.last,
                change_24h_pct=ticker.change_24h_pct,
                confluence_score=None if combined is None else combined.score,
                beta_band=None if beta is None else beta.risk_band,
                trail=() if trails is None else trails.take(symbol, one_minute),
            )
        )
    return facts
