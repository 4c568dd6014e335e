"""The outbox's deliveries in one JSON file, next to ``alerts.json``, for a deployment
without Redis (one process delivers: the collector, or the embedded service)."""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import orjson

from app.services.alerts.delivery import PENDING, Delivery
from app.services.alerts.files import FileMark, file_mark, set_aside, write_atomically
from app.services.alerts.outbox_store import full

log = logging.getLogger(__name__)


class FileOutboxStore:
    """In memory, saved to one JSON file (atomically) after every change and read back
    when the file changed under it (a new process, or the collector writing while a
    server reads). Claims are kept in memory only: after a restart every pending
    delivery is due at its own time again. A corrupt file is moved aside (a warning).
    The whole file is written on every change, so fewer records are kept than in Redis."""

    def __init__(
        self, path: str | os.PathLike[str], max_pending: int = 2_000, max_finished: int = 2_000
    ) -> None:
        if max_pending < 1 or max_finished < 1:
            raise ValueError("max_pending and max_finished must be >= 1")
        self.path = Path(path)
        self.max_pending, self.max_finished = max_pending, max_finished
        self._records: dict[str, Delivery] = {}
        self._claimed: dict[str, int] = {}  # key → claimed until (ms)
        self._seen: FileMark | None = None  # of the file as it was read
        self._lock = asyncio.Lock()
        self._refresh()

    def _refresh(self) -> None:
        seen = file_mark(self.path)
        if seen is None or seen == self._seen:
            return
        try:
            data = orjson.loads(self.path.read_bytes())
            self._records = {d.key: d for d in map(Delivery.from_dict, data["deliveries"])}
        except Exception as exc:
            aside = set_aside(self.path)
            log.warning("outbox %s is unreadable (%s); moved to %s", self.path, exc, aside)
            self._records, seen = {}, None
        self._seen = seen

    async def _write(self, records: dict[str, Delivery]) -> None:
        data = orjson.dumps({"version": 1, "deliveries": [d.to_dict() for d in records.values()]})
        # private: a rule's webhook delivery holds its URL (a secret)
        await asyncio.to_thread(functools.partial(write_atomically, self.path, data, private=True))
        self._records, self._seen = records, file_mark(self.path)

    async def add(self, deliveries: Sequence[Delivery], now_ms: int) -> list[Delivery]:
        async with self._lock:
            self._refresh()
            records, stored = dict(self._records), []
            pending = sum(1 for d in records.values() if d.status == PENDING)
            for d in deliveries:
                if d.key in records:
                    continue
                if d.status != PENDING:
                    pass
                elif pending >= self.max_pending:
                    d = full(d, now_ms, self.max_pending)
                else:
                    pending += 1
                records[d.key] = d
                stored.append(d)
            if stored:
                await self._write(_trimmed(records, self.max_finished))
            return stored

    async def claim(self, now_ms: int, until_ms: int, limit: int) -> list[Delivery]:
        async with self._lock:
            self._refresh()
            due = sorted(
                (
                    d
                    for d in self._records.values()
                    if d.status == PENDING
                    and d.next_attempt_at_ms <= now_ms
                    and self._claimed.get(d.key, 0) <= now_ms
                ),
                key=lambda d: (d.next_attempt_at_ms, d.key),
            )[:limit]
            for d in due:
                self._claimed[d.key] = until_ms
            return due

    async def save(self, delivery: Delivery) -> None:
        async with self._lock:
            self._refresh()
            old = self._records.get(delivery.key)
            if old is not None and old.status == "delivered":
                return
            self._claimed.pop(delivery.key, None)
            records = {**self._records, delivery.key: delivery}
            await self._write(_trimmed(records, self.max_finished))

    async def of_alert(self, alert_id: str) -> list[Delivery]:
        self._refresh()
        found = [d for d in self._records.values() if d.alert_id == alert_id]
        return sorted(found, key=lambda d: d.channel_id)

    async def pending_count(self) -> int:
        self._refresh()
        return sum(1 for d in self._records.values() if d.status == PENDING)

    async def release_claims(self, now_ms: int) -> int:
        """Forgets this instance's claims (another process's are not kept: nothing to
        release after a restart); returns how many."""
        released, self._claimed = len(self._claimed), {}
        return released


def _trimmed(records: dict[str, Delivery], keep: int) -> dict[str, Delivery]:
    """``records`` with at most ``keep`` finished ones (the oldest finished go)."""
    finished = [d for d in records.values() if d.status != PENDING]
    excess = len(finished) - keep
    if excess <= 0:
        return records
    finished.sort(key=lambda d: (d.finished_at_ms or 0, d.key))
    doomed = {d.key for d in finished[:excess]}
    return {k: v for k, v in records.items() if k not in doomed}
