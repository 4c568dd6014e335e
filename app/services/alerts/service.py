"""The alert service: the writes of rules and alerts, the alert lists, and the
delivery of an alert (live announcement; the outbox's deliveries to its rule's channels
and webhook, with their status); it keeps the alert views (the cached
list, the mobile dashboard's critical alerts) current.

A caller (a route) asks it to create or delete a rule or move an alert, and it stores
the change, invalidates the cached lists on every replica and republishes the
dashboards. The rules' evaluation on each snapshot (``app.services.alerts.evaluation``,
where the snapshots are made) stores what fires and hands it here to deliver; this
module imports no snapshot or analysis, so a serving process can load it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import orjson

from app.backends.errors import TierUnavailable
from app.cache.coherence import Coherence
from app.cache.keys import make_key
from app.cache.layered import CacheRead, Computed, LayeredCache
from app.services.alerts.destinations import DestinationPolicy
from app.services.alerts.engine import AlertEngine
from app.services.alerts.outbox import Outbox
from app.services.alerts.outbox_worker import OutboxWorker
from app.services.alerts.rules import DEFAULT_MAX_RULES, Alert, AlertRule, RuleInput, validate_rule
from app.services.alerts.store import AlertStore
from app.services.alerts.webhook_channel import check_webhook_url

if TYPE_CHECKING:
    from app.services.alerts.channel_service import ChannelService

log = logging.getLogger(__name__)

CRITICAL_SHOWN = 10
FAMILY = "alerts"  # the cache family of the alert lists (config/cache.yaml)
Announce = Callable[[dict, int], Awaitable[None]]  # (alert, generated_at_ms)


class Republish(Protocol):
    """Rebuilds the views of the latest snapshot without fetching (the pipeline's
    ``republish``); False when there is none (that recent, with ``fresh_within`` s)."""

    def __call__(self, fresh_within: float | None = None) -> Awaitable[bool]: ...


class AlertService:
    """Rules, alerts and their delivery. ``engine``: the rules' engine (its confluence
    thresholds show in the public rules; ``evaluation`` runs it); ``republish`` rebuilds
    the dashboards after alerts changed; ``refresh_seconds``: the pipeline's interval;
    ``cache``: where the alert lists are cached (family ``alerts``); ``announce``: told
    of every new or changed alert, in order (live delivery, metrics); ``max_rules``: how
    many rules the store may hold (``create_rule`` refuses more); ``policy``: the
    outbound destination policy a rule's ``webhook_url`` must pass; ``outbox``: where
    each alert's deliveries wait (``enqueue``, ``deliveries_of``); ``clock``: epoch
    seconds, stamps the lists. ``delivery_worker``: the outbox's worker where this
    process delivers (the collecting side sets it), else None."""

    def __init__(
        self,
        store: AlertStore,
        engine: AlertEngine,
        republish: Republish,
        refresh_seconds: float,
        cache: LayeredCache,
        coherence: Coherence,
        policy: DestinationPolicy,
        max_rules: int = DEFAULT_MAX_RULES,
        *,
        outbox: Outbox,
        announce: Sequence[Announce] = (),
        clock: Callable[[], float] = time.time,
        channels: ChannelService | None = None,
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
        self.policy = policy  # where a rule's webhook may point (checked at creation)
        self.outbox = outbox
        self.delivery_worker: OutboxWorker | None = None
        self.clock = clock
        self.announce = tuple(announce)
        self.channels = channels  # the notification channels rules name (None: none)
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
        (TierUnavailable, OSError); nothing is stored when it raises. Every channel the
        rule names must exist (ValueError naming the first unknown one)."""
        rule = validate_rule(data, known_symbols, unserved=unserved)
        if rule.channels:
            missing = list(rule.channels)
            if self.channels is not None:
                missing = await self.channels.missing(rule.channels)
            if missing:
                raise ValueError(f"channels: unknown channel {missing[0]!r}")
        if rule.webhook_url:
            await check_webhook_url(rule.webhook_url, self.policy)
        await self.store.add_rule(rule, self.max_rules)
        await self.changed()
        return rule

    async def delete_rule(self, rule_id: str) -> bool:
        """Deletes the rule and, if it was stored, invalidates the lists; False when
        there was no such rule. Raises the store's errors (TierUnavailable, OSError)."""
        deleted = await self.store.delete_rule(rule_id)
        if deleted:
            await self.changed()
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
            await self.changed()
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

    async def enqueue(self, alerts: Sequence[Alert], rules: Sequence[AlertRule]) -> None:
        """Queues each alert's deliveries in the outbox (durably, before it returns): one
        per channel of its rule and one to the rule's webhook. Raises the outbox store's
        errors (TierUnavailable, OSError)."""
        by_id = {rule.id: rule for rule in rules}
        for alert in alerts:
            rule = by_id.get(alert.rule_id)
            if rule is None:
                continue
            if rule.channels or rule.webhook_url:
                await self.outbox.enqueue(alert, rule.channels, rule.webhook_url)

    async def deliveries_of(self, alert_id: str) -> list[dict]:
        """Where each delivery of the alert stands (``Outbox.deliveries_of``). Raises
        the outbox store's errors."""
        return await self.outbox.deliveries_of(alert_id)

    async def deliver(self, alert: Alert, at_ms: int) -> None:
        """Announces a new alert (``at_ms``: epoch ms of the snapshot it fired on); its
        messages are in the outbox already (``enqueue``)."""
        await self._announce(alert, at_ms)

    async def _announce(self, alert: Alert, at_ms: int) -> dict:
        payload = alert.to_dict()
        for announce in self.announce:
            try:
                await announce(payload, at_ms)
            except Exception:
                log.exception("alert announcement failed")
        return payload

    async def changed(self) -> None:
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
