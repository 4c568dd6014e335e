"""The digests' scheduler, on the collecting side: on every snapshot, each stored digest
whose slot is due (``digests.next_due``) is composed from the snapshot's analysis and
handed to the sink with an idempotency key (digest id + slot); then the slot is marked
sent in the store. A failure between the two (a crash, the store down) hands the same
slot on again later with the same key: the sink (the delivery outbox) keeps one message
per key. So each slot is handed on at least once and delivered once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING

from app.services.alerts.digest_store import DigestStore
from app.services.alerts.digests import DEFAULT_MOVERS, compose_digest, idempotency_key, next_due

if TYPE_CHECKING:  # the collector's types; this module imports no analysis
    from app.services.analysis import Analysis
    from app.services.snapshot import Snapshot

log = logging.getLogger(__name__)

DigestSink = Callable[[Sequence[str], str, str, str], Awaitable[None]]
"""Where a due digest goes: ``sink(channel_ids, title, body, idempotency_key)``. Raises
to say it was not taken (the slot stays due and is handed on again next snapshot)."""


class DigestScheduler:
    """The pipeline's snapshot listener that sends due digests. ``clock``: epoch seconds;
    ``count``: gainers and losers each. ``sent``: slots handed on; ``failed``: slots the
    sink refused (kept due)."""

    def __init__(
        self,
        store: DigestStore,
        sink: DigestSink,
        clock: Callable[[], float],
        count: int = DEFAULT_MOVERS,
    ) -> None:
        self.store = store
        self.sink = sink
        self.clock = clock
        self.count = count
        self.sent = 0
        self.failed = 0

    async def on_snapshot(self, snapshot: Snapshot, analysis: Analysis) -> None:
        """Hands each due digest on, then marks its slot sent. Raises the store's errors
        (TierUnavailable, OSError): nothing is marked, the slots stay due."""
        del snapshot  # the analysis carries what a digest says
        now_ms = int(self.clock() * 1000)
        for digest in await self.store.list_digests():
            slot = next_due(digest, digest.last_sent_ms, now_ms)
            if slot > now_ms:
                continue
            title, body = compose_digest(
                digest.name,
                slot,
                analysis.movers,
                analysis.signals,
                analysis.errors,
                count=self.count,
            )
            try:
                await self.sink(digest.channels, title, body, idempotency_key(digest.id, slot))
            except Exception as error:  # the sink's own failure: this digest waits, not the rest
                self.failed += 1
                log.warning("digest %s (slot %d) not taken, due again: %r", digest.id, slot, error)
                continue
            await self.store.mark_sent(digest.id, slot)
            self.sent += 1
