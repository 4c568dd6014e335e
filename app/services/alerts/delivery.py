"""One delivery of one alert to one destination: the outbox's record.

A delivery is keyed by its idempotency key, derived from the alert id and the channel id
(``idempotency_key``), so enqueuing the same alert twice makes the same deliveries, and
every message of it carries the same key (the receiver drops repeats). Its life::

    pending --sent--> delivered
    pending --failed, retryable--> pending (attempts + 1, next_attempt_at_ms later)
    pending --not retryable, or the last attempt--> failed (reason kept)
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Any

PENDING, DELIVERED, FAILED = "pending", "delivered", "failed"
DELIVERY_STATUSES = (PENDING, DELIVERED, FAILED)
WEBHOOK = "webhook"  # the channel id and type of a rule's own webhook_url


def idempotency_key(alert_id: str, channel_id: str) -> str:
    """32 hex digits of SHA-256 over the alert id and the channel id: the same alert
    and channel always give the same key, any other pair another."""
    return hashlib.sha256(f"{alert_id}\n{channel_id}".encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True)
class Delivery:
    """``key``: the idempotency key; ``destination``: the Apprise URL of a rule's
    webhook (a secret: never shown), None for a channel (looked up at each attempt);
    ``attempts``: sends made; ``next_attempt_at_ms``: when it is due (epoch ms);
    ``last_error``: the last failure's reason (shown; never a secret);
    ``finished_at_ms``: when it was delivered or failed."""

    key: str
    alert_id: str
    channel_id: str
    channel_type: str
    title: str
    message: str
    created_at_ms: int
    destination: str | None = None
    status: str = PENDING
    attempts: int = 0
    next_attempt_at_ms: int = 0
    last_error: str | None = None
    delivered_at_ms: int | None = None
    finished_at_ms: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """Every field (the destination too): what the store keeps."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Delivery:
        """The record ``to_dict`` made (unknown fields ignored); KeyError/TypeError when
        one is missing or malformed."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def public(self) -> dict[str, Any]:
        """What a response may show: no destination, no message text."""
        return {
            "channel_id": self.channel_id,
            "channel_type": self.channel_type,
            "status": self.status,
            "attempts": self.attempts,
            "reason": self.last_error,
            "created_at_ms": self.created_at_ms,
            "next_attempt_at_ms": self.next_attempt_at_ms if self.status == PENDING else None,
            "delivered_at_ms": self.delivered_at_ms,
        }

    def delivered(self, at_ms: int) -> Delivery:
        """Sent: one more attempt, delivered at ``at_ms``."""
        return dataclasses.replace(
            self,
            status=DELIVERED,
            attempts=self.attempts + 1,
            last_error=None,
            delivered_at_ms=at_ms,
            finished_at_ms=at_ms,
        )

    def retry_at(self, at_ms: int, reason: str) -> Delivery:
        """Failed, to be tried again at ``at_ms``: one more attempt."""
        return dataclasses.replace(
            self, attempts=self.attempts + 1, next_attempt_at_ms=at_ms, last_error=reason
        )

    def failed(self, at_ms: int, reason: str, *, attempted: bool = True) -> Delivery:
        """Given up at ``at_ms`` (one more attempt when ``attempted``)."""
        return dataclasses.replace(
            self,
            status=FAILED,
            attempts=self.attempts + (1 if attempted else 0),
            last_error=reason,
            finished_at_ms=at_ms,
        )

    def postponed(self, at_ms: int, reason: str) -> Delivery:
        """Not tried (e.g. the destination's breaker is open): due again at ``at_ms``,
        no attempt counted."""
        return dataclasses.replace(self, next_attempt_at_ms=at_ms, last_error=reason)
