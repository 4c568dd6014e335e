"""Pydantic models documenting the notification channel endpoints' responses in
``/openapi.json`` (the request is ``app.services.alerts.channels.ChannelInput``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class ChannelView(_Doc):
    """A channel as any response shows it: never its URL."""

    id: str
    name: str
    type: str = Field(description="the Apprise scheme, e.g. json, mailto, tgram")
    destination: str = Field(
        description="scheme and host at most, e.g. json://127.0.0.1/… or tgram://…"
    )
    created_at_ms: int


class ChannelCreated(_Doc):
    channel: ChannelView


class ChannelsList(_Doc):
    channels: list[ChannelView]
    total: int


class ChannelDeleted(_Doc):
    deleted: str


class ChannelInUse(_Doc):
    error: Literal["channel_in_use"]
    message: str
    rule_ids: list[str] = Field(description="the rules naming the channel")
    digest_ids: list[str] = Field(description="the digests naming the channel")


class TestDelivered(_Doc):
    delivered: Literal[True]


class TestFailed(_Doc):
    delivered: Literal[False]
    reason: str = Field(description="what went wrong; names the masked destination only")
    retryable: bool = Field(description="whether trying again later may succeed")
