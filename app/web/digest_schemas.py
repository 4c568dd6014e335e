"""Pydantic models that document the digest routes' responses in ``/openapi.json``
(``app.web.digest_routes``); the request body is ``app.services.alerts.digests``'s
``DigestInput``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class DigestView(_Doc):
    id: str
    name: str
    channels: list[str] = Field(description="the channel ids the digest goes to")
    every: Literal["15m", "1h", "4h", "1d"] = Field(
        description="its period; slots at the UTC multiples of it (hours on the hour, "
        "4h at 00:00, 04:00, …, 1d at 00:00 UTC)"
    )
    created_at_ms: int
    last_sent_ms: int | None = Field(description="the slot last sent (epoch ms); null: none yet")
    next_due_ms: int = Field(description="the slot it is next due at (epoch ms)")


class DigestCreated(_Doc):
    digest: DigestView


class DigestsList(_Doc):
    digests: list[DigestView] = Field(description="oldest first")
    max_digests: int = Field(description="how many can be stored")


class DigestDeleted(_Doc):
    deleted: str = Field(description="the id of the digest deleted")
