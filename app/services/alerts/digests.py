"""Digests: a stored schedule that sends the top movers and the current confluence
signals to one or more alert channels (every 15 minutes, hour, 4 hours or day).

Pure: the models, the schedule's arithmetic (``next_due``) and the message
(``compose_digest``, from the analysis' movers and signals); no I/O. The store is
``digest_store``, the scheduler ``digest_scheduler``.

Slots: a digest of period P is due at the UTC epoch multiples of P (every hour on the
hour, every 4 hours at 00:00, 04:00, … UTC, every day at 00:00 UTC). A digest is first
due at the first slot after its creation; slots missed while nothing ran (the collector
down) are not caught up one by one: the latest one is sent, once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from app.services.alerts.rules import new_id

Every = Literal["15m", "1h", "4h", "1d"]
PERIOD_MS: dict[str, int] = {
    "15m": 15 * 60_000,
    "1h": 3_600_000,
    "4h": 4 * 3_600_000,
    "1d": 24 * 3_600_000,
}
MAX_DIGESTS = 20  # stored at most
MAX_CHANNELS = 10  # channels per digest
DEFAULT_MOVERS = 5  # gainers and losers each
DEFAULT_SIGNALS = 10
# A channel id as the channel store makes them (checked only for its shape here: the
# channels themselves are another module's).
CHANNEL_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class DigestInput(BaseModel):
    """A digest as a client submits it: a name, the channel ids it goes to (1 to
    ``MAX_CHANNELS``, no repeats) and its period."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=80)
    channels: list[str] = Field(min_length=1, max_length=MAX_CHANNELS)
    every: Every

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        if not value.strip() or not value.isprintable():
            raise ValueError("must be printable text, not blank")
        return value.strip()

    @field_validator("channels")
    @classmethod
    def _channel_ids(cls, value: list[str]) -> list[str]:
        for channel in value:
            if not CHANNEL_ID.match(channel):
                raise ValueError(
                    f"{channel[:70]!r} is not a channel id (letters, digits, _ and -; 1-64)"
                )
        if len(set(value)) != len(value):
            raise ValueError("a channel is named twice")
        return value


class Digest(BaseModel):
    """A stored digest. ``last_sent_ms``: the slot (epoch ms) it was last sent for,
    None before the first; ``created_at_ms``: epoch ms."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    channels: tuple[str, ...]
    every: Every
    created_at_ms: int
    last_sent_ms: int | None = None

    @classmethod
    def create(cls, data: DigestInput, now_ms: int) -> Digest:
        return cls(
            id=new_id(),
            name=data.name,
            channels=tuple(data.channels),
            every=data.every,
            created_at_ms=now_ms,
        )

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def public(self, now_ms: int) -> dict[str, Any]:
        """The digest as the API shows it, with the slot it is next due at."""
        return {**self.to_dict(), "next_due_ms": next_due(self, self.last_sent_ms, now_ms)}


def next_due(schedule: Digest, last_sent_ms: int | None, now_ms: int) -> int:
    """The slot (epoch ms, a multiple of the period) the digest is next due at: the
    latest slot at or before ``now_ms`` when it is later than the last one sent (or than
    the digest's creation, before the first) — due now, however many were missed — else
    the first slot after ``now_ms``. The digest is due when the result is <= now_ms."""
    period = PERIOD_MS[schedule.every]
    reference = schedule.created_at_ms if last_sent_ms is None else last_sent_ms
    latest = now_ms - now_ms % period
    return latest if latest > reference else latest + period


def idempotency_key(digest_id: str, slot_ms: int) -> str:
    """The same for every attempt to send one digest's one slot: a receiver (the
    delivery outbox) keeps one message per key."""
    return f"digest:{digest_id}:{slot_ms}"


def compose_digest(
    name: str,
    slot_ms: int,
    movers: Mapping[str, Any] | None,
    signals: Sequence[Mapping[str, Any]] | None,
    errors: Mapping[str, str] | None = None,
    count: int = DEFAULT_MOVERS,
    max_signals: int = DEFAULT_SIGNALS,
) -> tuple[str, str]:
    """(title, body) in plain text: the ``count`` top gainers and losers by 24h change
    (the analysis' ``movers``: rows of symbol, price, change_24h in %, volume_24h, best
    first, liquid symbols only — ``app.market.analytics.overview.top_movers``) and the
    current confluence signals (the analysis' ``signals``: strongest first), at most
    ``max_signals``. A section the analysis could not compute (None) says so, with the
    reason from ``errors`` (section → reason) — never invented."""
    errors = errors or {}
    at = datetime.fromtimestamp(slot_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    title = f"{name} — {at}"
    lines = ["Top movers (24h change)"]
    if movers is None:
        lines.append(f"  unavailable: {errors.get('movers', 'not computed')}")
    else:
        for side in ("gainers", "losers"):
            rows = list(movers.get(side) or [])[:count]
            lines.append(f"  {side.capitalize()}: " + ("none" if not rows else ""))
            lines.extend(f"    {_mover(row)}" for row in rows)
    lines.append("Signals (confluence)")
    if signals is None:
        lines.append(f"  unavailable: {errors.get('signals', 'not computed')}")
    elif not signals:
        lines.append("  none: every symbol is neutral")
    else:
        lines.extend(f"  {_signal(row)}" for row in signals[:max_signals])
        if len(signals) > max_signals:
            lines.append(f"  … and {len(signals) - max_signals} more")
    return title, "\n".join(line.rstrip() for line in lines)


def _mover(row: Mapping[str, Any]) -> str:
    return f"{row['symbol']} {row['change_24h']:+.2f}% at {_number(row.get('price'))}"


def _signal(row: Mapping[str, Any]) -> str:
    change = row.get("change_24h")
    shown = "24h n/a" if change is None else f"24h {change:+.2f}%"
    return (
        f"{row['symbol']} {str(row['signal']).upper()} score {row['score']:.1f} "
        f"({shown}, price {_number(row.get('price'))})"
    )


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:,.8g}"
