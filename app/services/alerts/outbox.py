"""The durable delivery outbox: at-least-once delivery of each alert to each of its
destinations (a rule's channels, and its own webhook), nothing lost.

``Outbox.enqueue`` stores one ``Delivery`` per alert × destination before it returns
(the store: Redis, or a file next to ``alerts.json``); ``OutboxWorker``
(``app.services.alerts.outbox_worker``) sends them, retries with back-off and marks them
delivered or failed; ``deliveries_of`` shows where each stands. The seams:

- ``Send``: ``await send(destination_url, title, body, idempotency_key)``; returns when
  delivered, raises ``DeliveryFailed(reason, retryable)`` otherwise.
- ``ChannelLookup``: ``await lookup(channel_id)`` → ``(destination_url, channel_type)``,
  or None when there is no such channel.

Metrics go to an optional ``DeliveryListener``: ``listener(channel_type, outcome,
seconds)`` with outcome ``delivered`` (``seconds``: enqueue → delivered), ``retried``,
``failed``, ``refused`` (the destination policy), ``postponed`` (breaker open, no
attempt) or ``outbox_full``; ``seconds`` is None but for ``delivered``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Protocol

from app.services.alerts.delivery import WEBHOOK, Delivery, idempotency_key
from app.services.alerts.outbox_store import OutboxStore
from app.services.alerts.rules import Alert
from app.services.alerts.webhook_channel import apprise_json_url

log = logging.getLogger(__name__)

UNKNOWN_CHANNEL = "unknown"  # channel type of a channel id that names no channel
NO_CHANNEL = "no such channel"


class Send(Protocol):
    """Delivers one message; raises DeliveryFailed(reason, retryable) when it could not."""

    def __call__(
        self, destination_url: str, title: str, body: str, idempotency_key: str
    ) -> Awaitable[None]: ...


ChannelLookup = Callable[[str], Awaitable[tuple[str, str] | None]]
DeliveryListener = Callable[[str, str, float | None], None]


async def no_channels(channel_id: str) -> tuple[str, str] | None:
    """The ``ChannelLookup`` of a deployment without channels: none exists."""
    return None


def ignore(channel_type: str, outcome: str, seconds: float | None) -> None:
    """The ``DeliveryListener`` that records nothing."""


class Outbox:
    """Enqueues deliveries into ``store`` and reads them back. ``lookup`` names each
    channel's type at enqueue time; ``clock``: epoch seconds; ``listener``: told of
    every delivery refused by a full outbox."""

    def __init__(
        self,
        store: OutboxStore,
        lookup: ChannelLookup = no_channels,
        *,
        clock: Callable[[], float] = time.time,
        listener: DeliveryListener = ignore,
    ) -> None:
        self.store = store
        self.lookup = lookup
        self.clock = clock
        self.listener = listener
        self.full = 0  # deliveries refused because the outbox was full

    async def enqueue(
        self, alert: Alert, channel_ids: Iterable[str], webhook_url: str | None = None
    ) -> list[Delivery]:
        """Stores one pending delivery of ``alert`` per channel id (and one to
        ``webhook_url``, an http(s) URL, as channel ``webhook``) and returns those newly
        stored; enqueuing again stores nothing new. A channel id that names no channel is
        stored as failed ("no such channel"); beyond the outbox's cap a delivery is
        stored as failed ("the outbox is full"), counted and logged. Raises the store's
        errors (TierUnavailable, OSError): then nothing is stored."""
        return await self.enqueue_message(
            alert.id, alert.title, alert.message, channel_ids, webhook_url
        )

    async def enqueue_message(
        self,
        subject: str,
        title: str,
        message: str,
        channel_ids: Iterable[str],
        webhook_url: str | None = None,
    ) -> list[Delivery]:
        """``enqueue`` for any message: ``subject`` names it (an alert id, a digest's
        ``digest:<id>:<slot>``) and makes each delivery's idempotency key with the
        channel id, so enqueuing the same subject again stores nothing new."""
        now_ms = int(self.clock() * 1000)
        planned = []
        for channel_id in dict.fromkeys(channel_ids):
            found = await self.lookup(channel_id)
            channel_type = UNKNOWN_CHANNEL if found is None else found[1]
            delivery = _delivery(subject, title, message, channel_id, channel_type, None, now_ms)
            if found is None:
                delivery = delivery.failed(now_ms, NO_CHANNEL, attempted=False)
            planned.append(delivery)
        if webhook_url:
            destination = apprise_json_url(webhook_url)
            planned.append(
                _delivery(subject, title, message, WEBHOOK, WEBHOOK, destination, now_ms)
            )
        stored = await self.store.add(planned, now_ms)
        for delivery in stored:
            if delivery.status == "failed" and delivery.last_error != NO_CHANNEL:
                self.full += 1
                self.listener(delivery.channel_type, "outbox_full", None)
                log.warning(
                    "%s: %s delivery not queued: %s",
                    subject,
                    delivery.channel_type,
                    delivery.last_error,
                )
        return stored

    async def digest_sink(
        self, channel_ids: Sequence[str], title: str, body: str, key: str
    ) -> None:
        """The digests' sink (``DigestSink``): the digest as a message to each channel,
        ``key`` (``digest:<id>:<slot_ms>``) its subject. Raises the store's errors."""
        await self.enqueue_message(key, title, body, channel_ids)

    async def deliveries_of(self, alert_id: str) -> list[dict[str, Any]]:
        """Where each delivery of the alert stands, by channel id: ``{channel_id,
        channel_type, status, attempts, reason, created_at_ms, next_attempt_at_ms,
        delivered_at_ms}`` (no destination). Raises the store's errors."""
        return [d.public() for d in await self.store.of_alert(alert_id)]


def _delivery(
    subject: str,
    title: str,
    message: str,
    channel_id: str,
    channel_type: str,
    destination: str | None,
    now_ms: int,
) -> Delivery:
    return Delivery(
        key=idempotency_key(subject, channel_id),
        alert_id=subject,
        channel_id=channel_id,
        channel_type=channel_type,
        title=title,
        message=message,
        created_at_ms=now_ms,
        destination=destination,
        next_attempt_at_ms=now_ms,
    )
