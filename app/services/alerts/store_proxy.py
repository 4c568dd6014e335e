"""The alert store across a process boundary: a collector child evaluates the rules of
its server's store (a file, when there is no Redis) through ``ProxyAlertStore``; the
server answers with ``answer_store_call`` on its own store, so one process alone writes
the file.

A call is ``[method, args]`` with rules and alerts as their dicts; the answer is the
method's result the same way. Only the store's methods can be called (``METHODS``); a
write tells ``on_write`` (the server drops its cached alert lists).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from app.backends.errors import TierUnavailable
from app.backends.local_channel import ChannelError
from app.services.alerts.rules import Alert, AlertRule
from app.services.alerts.store import AlertStore

# A call across the boundary: (kind, payload, seconds to wait) → the answer's payload.
Call = Callable[[str, Any, float], Awaitable[Any]]

CALL_KIND = "store"
CALL_SECONDS = 10.0
WRITES = frozenset(
    {"add_rule", "delete_rule", "add_alerts", "set_status", "save_engine_state", "save_trail_marks"}
)
READS = frozenset(
    {"list_rules", "get_rule", "get_alert", "list_alerts", "load_engine_state", "load_trail_marks"}
)
METHODS = WRITES | READS


class ProxyAlertStore:
    """An AlertStore whose every method is a ``call`` to the process holding the store.
    Raises TierUnavailable, as any store that cannot answer, when the other side does
    not answer in time, is gone or refuses (its reason): the callers' handling of a
    store outage applies (a refresh goes on without the critical alerts)."""

    def __init__(self, call: Call) -> None:
        self._call = call

    async def _ask(self, method: str, *args: Any) -> Any:
        try:
            return await self._call(CALL_KIND, [method, list(args)], CALL_SECONDS)
        except ChannelError as error:
            raise TierUnavailable(f"the alert store did not answer {method}: {error}") from None

    async def add_rule(self, rule: AlertRule, max_rules: int | None = None) -> None:
        await self._ask("add_rule", rule.to_dict(), max_rules)

    async def list_rules(self) -> list[AlertRule]:
        return [AlertRule.from_dict(r) for r in await self._ask("list_rules")]

    async def get_rule(self, rule_id: str) -> AlertRule | None:
        found = await self._ask("get_rule", rule_id)
        return None if found is None else AlertRule.from_dict(found)

    async def delete_rule(self, rule_id: str) -> bool:
        return bool(await self._ask("delete_rule", rule_id))

    async def add_alerts(self, alerts: Sequence[Alert]) -> None:
        await self._ask("add_alerts", [a.to_dict() for a in alerts])

    async def get_alert(self, alert_id: str) -> Alert | None:
        found = await self._ask("get_alert", alert_id)
        return None if found is None else Alert.from_dict(found)

    async def list_alerts(
        self,
        status: str | None = None,
        symbol: str | None = None,
        level: str | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[Alert], int]:
        alerts, total = await self._ask("list_alerts", status, symbol, level, offset, limit)
        return [Alert.from_dict(a) for a in alerts], int(total)

    async def set_status(self, alert_id: str, status: str, at_ms: int) -> Alert | None:
        found = await self._ask("set_status", alert_id, status, at_ms)
        return None if found is None else Alert.from_dict(found)

    async def load_engine_state(self) -> dict[str, Any]:
        return dict(await self._ask("load_engine_state"))

    async def save_engine_state(self, state: dict[str, Any]) -> None:
        await self._ask("save_engine_state", state)

    async def load_trail_marks(self) -> dict[str, Any]:
        return dict(await self._ask("load_trail_marks"))

    async def save_trail_marks(self, marks: dict[str, Any]) -> None:
        await self._ask("save_trail_marks", marks)


async def answer_store_call(
    store: AlertStore, payload: Any, on_write: Callable[[], Awaitable[None]]
) -> Any:
    """Runs one ``[method, args]`` call on ``store`` and returns its result as sent back.
    Raises ValueError for anything but a store method; what the store raises otherwise."""
    method, args = payload
    if method not in METHODS or not isinstance(args, list):
        raise ValueError(f"not a store call: {str(method)[:40]!r}")
    if method == "add_rule":
        args = [AlertRule.from_dict(args[0]), *args[1:]]
    elif method == "add_alerts":
        args = [[Alert.from_dict(a) for a in args[0]]]
    result = await getattr(store, method)(*args)
    if method in WRITES:
        await on_write()
    return _plain(result)


def _plain(result: Any) -> Any:
    if isinstance(result, AlertRule | Alert):
        return result.to_dict()
    if isinstance(result, list):
        return [_plain(item) for item in result]
    if isinstance(result, tuple):
        return [_plain(item) for item in result]
    return result
