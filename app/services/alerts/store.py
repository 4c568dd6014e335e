"""Where alert rules, alerts and the engine's state live: Redis or one JSON file.

Both stores order alerts newest first by (created_at_ms, id), keep at most
``max_alerts`` (the oldest go first) and allow the status moves
pending → acknowledged → resolved and pending → resolved.

Redis key layout (``P`` = ``<namespace>:alerts``, the deployment's ``Keyspace``)::

    P:rules                 hash    rule id → rule JSON
    P:alert:<id>            string  alert JSON
    P:idx:all               zset    alert id, score created_at_ms (ordering, pagination)
    P:idx:status:<status>   zset    the same, per status   (filters; several filters
    P:idx:level:<level>     zset    the same, per level     are intersected)
    P:idx:symbol:<symbol>   zset    the same, per symbol
    P:engine                string  the alert engine's state JSON
    P:trails                string  where the price trails read the 1m candles last (JSON)

Every write is one MULTI/EXEC transaction, so an outage never leaves half an alert.
Every call goes through the ``RedisGuard``: Redis down → ``TierUnavailable``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, cast

import orjson
from redis.asyncio import Redis
from redis.exceptions import WatchError

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.market.models.symbols import canonical_symbol
from app.services.alerts.files import set_aside, write_atomically
from app.services.alerts.rules import LEVELS, STATUSES, Alert, AlertRule

log = logging.getLogger(__name__)

MAX_LIMIT = 500


class TooManyRules(Exception):
    """The store holds ``max_rules`` rules already: the new one was not stored."""

    def __init__(self, max_rules: int) -> None:
        super().__init__(
            f"at most {max_rules} alert rules can be stored; delete one to add another"
        )
        self.max_rules = max_rules


class AlertStore(Protocol):
    async def add_rule(self, rule: AlertRule, max_rules: int | None = None) -> None: ...
    async def list_rules(self) -> list[AlertRule]: ...
    async def get_rule(self, rule_id: str) -> AlertRule | None: ...
    async def delete_rule(self, rule_id: str) -> bool: ...
    async def add_alerts(self, alerts: Sequence[Alert]) -> None: ...
    async def get_alert(self, alert_id: str) -> Alert | None: ...
    async def list_alerts(
        self,
        status: str | None = None,
        symbol: str | None = None,
        level: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Alert], int]: ...
    async def set_status(self, alert_id: str, status: str, at_ms: int) -> Alert | None: ...
    async def load_engine_state(self) -> dict[str, Any]: ...
    async def save_engine_state(self, state: dict[str, Any]) -> None: ...
    async def load_trail_marks(self) -> dict[str, Any]: ...
    async def save_trail_marks(self, marks: dict[str, Any]) -> None: ...


def _check_query(
    status: str | None, symbol: str | None, level: str | None, offset: int, limit: int
) -> str | None:
    """Validates the filters; returns the canonical symbol."""
    if status is not None and status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")
    if level is not None and level not in LEVELS:
        raise ValueError(f"unknown level {level!r}; valid: {', '.join(LEVELS)}")
    if offset < 0 or not 1 <= limit <= MAX_LIMIT:
        raise ValueError(f"offset must be >= 0 and limit between 1 and {MAX_LIMIT}")
    return None if symbol is None else canonical_symbol(symbol)


def _check_status(status: str) -> None:
    if status not in STATUSES:
        raise ValueError(f"unknown status {status!r}; valid: {', '.join(STATUSES)}")


# KEYS[1] rules hash; ARGV: rule id, rule JSON, cap (0: none). 1 stored, 0 refused.
_ADD_RULE = """
local cap = tonumber(ARGV[3])
if cap > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= cap then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


def _dumps(model: AlertRule | Alert) -> bytes:
    return orjson.dumps(model.to_dict())


class RedisAlertStore:
    def __init__(
        self,
        redis: Redis,
        guard: RedisGuard,
        keyspace: Keyspace,
        max_alerts: int = 10_000,
    ) -> None:
        if max_alerts < 1:
            raise ValueError("max_alerts must be >= 1")
        self._redis = redis
        self._guard = guard
        self._p = keyspace.name("alerts")
        self.max_alerts = max_alerts

    # -- keys ---------------------------------------------------------------------------

    def _alert_key(self, alert_id: str) -> str:
        return f"{self._p}:alert:{alert_id}"

    def _idx(self, field: str | None = None, value: str | None = None) -> str:
        return f"{self._p}:idx:all" if field is None else f"{self._p}:idx:{field}:{value}"

    # -- rules --------------------------------------------------------------------------

    async def add_rule(self, rule: AlertRule, max_rules: int | None = None) -> None:
        """Stores ``rule``; TooManyRules (nothing stored) when ``max_rules`` are there
        already. Count and write are one Lua script, so concurrent adds cannot pass it."""
        limit = 0 if max_rules is None else max_rules
        key, data = f"{self._p}:rules", _dumps(rule)
        stored = await self._guard.run(
            lambda: self._redis.eval(_ADD_RULE, 1, key, rule.id, data, limit), "add rule"
        )
        if not stored:
            raise TooManyRules(limit)

    async def list_rules(self) -> list[AlertRule]:
        raw = await self._guard.run(lambda: self._redis.hgetall(f"{self._p}:rules"), "HGETALL")
        rules = [AlertRule.model_validate_json(value) for value in raw.values()]
        return sorted(rules, key=lambda r: (r.created_at_ms, r.id))

    async def get_rule(self, rule_id: str) -> AlertRule | None:
        raw = await self._guard.run(lambda: self._redis.hget(f"{self._p}:rules", rule_id), "HGET")
        return None if raw is None else AlertRule.model_validate_json(raw)

    async def delete_rule(self, rule_id: str) -> bool:
        removed = await self._guard.run(
            lambda: self._redis.hdel(f"{self._p}:rules", rule_id), "HDEL rule"
        )
        return bool(removed)

    # -- alerts -------------------------------------------------------------------------

    async def add_alerts(self, alerts: Sequence[Alert]) -> None:
        """Stores the alerts (one transaction), then trims the oldest beyond max_alerts."""
        if not alerts:
            return

        async def store() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for alert in alerts:
                    score = {alert.id: alert.created_at_ms}
                    pipe.set(self._alert_key(alert.id), _dumps(alert))
                    pipe.zadd(self._idx(), score)
                    pipe.zadd(self._idx("status", alert.status), score)
                    pipe.zadd(self._idx("level", alert.level), score)
                    pipe.zadd(self._idx("symbol", alert.symbol), score)
                await pipe.execute()

        await self._guard.run(store, "add alerts")
        await self._trim()

    async def _trim(self) -> None:
        total = await self._guard.run(lambda: self._redis.zcard(self._idx()), "ZCARD")
        excess = total - self.max_alerts
        if excess <= 0:
            return
        # The client does not decode responses: members are bytes.
        members = cast(
            list[bytes],
            await self._guard.run(lambda: self._redis.zrange(self._idx(), 0, excess - 1), "ZRANGE"),
        )
        ids = [i.decode() for i in members]
        raw = await self._guard.run(
            lambda: self._redis.mget([self._alert_key(i) for i in ids]), "MGET"
        )
        # The symbol never changes; status may, so remove from every status and level index.
        symbols = {Alert.model_validate_json(r).symbol for r in raw if r is not None}

        async def remove() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.unlink(*(self._alert_key(i) for i in ids))
                pipe.zrem(self._idx(), *ids)
                for status in STATUSES:
                    pipe.zrem(self._idx("status", status), *ids)
                for level in LEVELS:
                    pipe.zrem(self._idx("level", level), *ids)
                for symbol in symbols:
                    pipe.zrem(self._idx("symbol", symbol), *ids)
                await pipe.execute()

        await self._guard.run(remove, "trim alerts")

    async def get_alert(self, alert_id: str) -> Alert | None:
        raw = await self._guard.run(lambda: self._redis.get(self._alert_key(alert_id)), "GET")
        return None if raw is None else Alert.model_validate_json(raw)

    async def list_alerts(
        self,
        status: str | None = None,
        symbol: str | None = None,
        level: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Alert], int]:
        symbol = _check_query(status, symbol, level, offset, limit)
        keys = [
            self._idx(field, value)
            for field, value in (("status", status), ("symbol", symbol), ("level", level))
            if value is not None
        ] or [self._idx()]

        async def page() -> tuple[list[bytes | None], int]:
            if len(keys) == 1:
                async with self._redis.pipeline(transaction=True) as pipe:
                    pipe.zcard(keys[0])
                    pipe.zrevrange(keys[0], offset, offset + limit - 1)
                    total, ids = await pipe.execute()
            else:
                # The client does not decode responses: (member bytes, score) pairs.
                members = cast(
                    list[tuple[bytes, float]],
                    await self._redis.zinter(keys, aggregate="MAX", withscores=True),
                )
                members.sort(key=lambda pair: (pair[1], pair[0]), reverse=True)
                total, ids = len(members), [m for m, _ in members[offset : offset + limit]]
            if not ids:
                return [], total
            raw = await self._redis.mget([self._alert_key(i.decode()) for i in ids])
            return cast(list[bytes | None], raw), total

        raw, total = await self._guard.run(page, "list alerts")
        return [Alert.model_validate_json(r) for r in raw if r is not None], total

    async def set_status(self, alert_id: str, status: str, at_ms: int) -> Alert | None:
        _check_status(status)
        key = self._alert_key(alert_id)

        async def update() -> Alert | None:
            async with self._redis.pipeline(transaction=True) as pipe:
                for _ in range(20):
                    try:
                        await pipe.watch(key)
                        raw = await pipe.get(key)
                        if raw is None:
                            return None
                        old = Alert.model_validate_json(raw)
                        new = old.with_status(status, at_ms)  # ValueError: not allowed
                        pipe.multi()
                        pipe.set(key, _dumps(new))
                        pipe.zrem(self._idx("status", old.status), alert_id)
                        pipe.zadd(self._idx("status", status), {alert_id: new.created_at_ms})
                        await pipe.execute()
                        return new
                    except WatchError:
                        continue
            raise RuntimeError(f"alert {alert_id} kept changing while its status was set")

        return await self._guard.run(update, "set alert status")

    # -- engine state -------------------------------------------------------------------

    async def load_engine_state(self) -> dict[str, Any]:
        raw = await self._guard.run(lambda: self._redis.get(f"{self._p}:engine"), "GET engine")
        return {} if raw is None else orjson.loads(raw)

    async def save_engine_state(self, state: dict[str, Any]) -> None:
        data = orjson.dumps(state)
        await self._guard.run(lambda: self._redis.set(f"{self._p}:engine", data), "SET engine")

    async def load_trail_marks(self) -> dict[str, Any]:
        """Shared by the replicas: whichever evaluates next reads on from here."""
        raw = await self._guard.run(lambda: self._redis.get(f"{self._p}:trails"), "GET trails")
        return {} if raw is None else orjson.loads(raw)

    async def save_trail_marks(self, marks: dict[str, Any]) -> None:
        data = orjson.dumps(marks)
        await self._guard.run(lambda: self._redis.set(f"{self._p}:trails", data), "SET trails")


class FileAlertStore:
    """In memory, saved to one JSON file (atomically: temp file, fsync, rename) after
    every change, and read back at start. A corrupt file is renamed aside (a warning is
    logged) and the store starts empty."""

    def __init__(self, path: str | os.PathLike[str], max_alerts: int = 10_000) -> None:
        if max_alerts < 1:
            raise ValueError("max_alerts must be >= 1")
        self.path = Path(path)
        self.max_alerts = max_alerts
        self._rules: dict[str, AlertRule] = {}
        self._alerts: dict[str, Alert] = {}
        self._engine: dict[str, Any] = {}
        self._trails: dict[str, Any] = {}
        self._lock = asyncio.Lock()
        self._load()

    def _load(self) -> None:
        if not self.path.exists():
            return
        try:
            data = orjson.loads(self.path.read_bytes())
            rules = [AlertRule.from_dict(r) for r in data["rules"]]
            alerts = [Alert.from_dict(a) for a in data["alerts"]]
            engine = data.get("engine_state") or {}
            if not isinstance(engine, dict):
                raise ValueError("engine_state is not an object")
        except Exception as exc:
            aside = set_aside(self.path)
            log.warning(
                "alert store %s is unreadable (%s); moved to %s, starting empty",
                self.path,
                exc,
                aside,
            )
            return
        self._rules = {r.id: r for r in rules}
        self._alerts = {a.id: a for a in alerts}
        self._engine = engine
        self._alerts = _trimmed(self._alerts, self.max_alerts)

    async def _write(
        self, rules: dict[str, AlertRule], alerts: dict[str, Alert], engine: dict[str, Any]
    ) -> None:
        """Writes this state, then adopts it: a failed write (OSError) changes nothing.
        Callers hold ``_lock``, so changes land in order and none is lost."""
        data = orjson.dumps(
            {
                "version": 1,
                "rules": [r.to_dict() for r in rules.values()],
                "alerts": [a.to_dict() for a in alerts.values()],
                "engine_state": engine,
            }
        )
        await asyncio.to_thread(write_atomically, self.path, data)
        self._rules, self._alerts, self._engine = rules, alerts, engine

    async def add_rule(self, rule: AlertRule, max_rules: int | None = None) -> None:
        """Stores ``rule``; TooManyRules (nothing stored) when ``max_rules`` are there."""
        async with self._lock:
            full = max_rules is not None and len(self._rules) >= max_rules
            if full and rule.id not in self._rules:
                raise TooManyRules(max_rules or 0)
            await self._write({**self._rules, rule.id: rule}, self._alerts, self._engine)

    async def list_rules(self) -> list[AlertRule]:
        return sorted(self._rules.values(), key=lambda r: (r.created_at_ms, r.id))

    async def get_rule(self, rule_id: str) -> AlertRule | None:
        return self._rules.get(rule_id)

    async def delete_rule(self, rule_id: str) -> bool:
        async with self._lock:
            if rule_id not in self._rules:
                return False
            rules = {k: v for k, v in self._rules.items() if k != rule_id}
            await self._write(rules, self._alerts, self._engine)
            return True

    async def add_alerts(self, alerts: Sequence[Alert]) -> None:
        if not alerts:
            return
        async with self._lock:
            merged = {**self._alerts, **{alert.id: alert for alert in alerts}}
            await self._write(self._rules, _trimmed(merged, self.max_alerts), self._engine)

    async def get_alert(self, alert_id: str) -> Alert | None:
        return self._alerts.get(alert_id)

    async def list_alerts(
        self,
        status: str | None = None,
        symbol: str | None = None,
        level: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Alert], int]:
        symbol = _check_query(status, symbol, level, offset, limit)
        found = [
            a
            for a in self._alerts.values()
            if (status is None or a.status == status)
            and (symbol is None or a.symbol == symbol)
            and (level is None or a.level == level)
        ]
        found.sort(key=_order, reverse=True)
        return found[offset : offset + limit], len(found)

    async def set_status(self, alert_id: str, status: str, at_ms: int) -> Alert | None:
        _check_status(status)
        async with self._lock:
            alert = self._alerts.get(alert_id)
            if alert is None:
                return None
            new = alert.with_status(status, at_ms)
            await self._write(self._rules, {**self._alerts, alert_id: new}, self._engine)
            return new

    async def load_engine_state(self) -> dict[str, Any]:
        return orjson.loads(orjson.dumps(self._engine))  # a copy

    async def save_engine_state(self, state: dict[str, Any]) -> None:
        """Saves the engine's state; an unchanged state writes nothing (the engine's
        state changes only when a rule fires or re-arms, not on every snapshot)."""
        async with self._lock:
            copy = orjson.loads(orjson.dumps(state))
            if copy != self._engine:
                await self._write(self._rules, self._alerts, copy)

    async def load_trail_marks(self) -> dict[str, Any]:
        """In memory only: one process uses this store, and after a restart the first
        evaluation looks at the current price (there is no "since")."""
        return dict(self._trails)

    async def save_trail_marks(self, marks: dict[str, Any]) -> None:
        self._trails = dict(marks)


def _trimmed(alerts: dict[str, Alert], max_alerts: int) -> dict[str, Alert]:
    """The newest ``max_alerts`` alerts."""
    excess = len(alerts) - max_alerts
    if excess <= 0:
        return alerts
    doomed = {alert.id for alert in sorted(alerts.values(), key=_order)[:excess]}
    return {k: v for k, v in alerts.items() if k not in doomed}


def _order(alert: Alert) -> tuple[int, str]:
    return alert.created_at_ms, alert.id
