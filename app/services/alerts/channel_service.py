"""The channel writes and reads the routes ask for: create (the URL parsed by Apprise,
every host it will connect to checked by the destination policy), list, delete (not
while a rule names the channel) and a test message sent now."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable

from app.services.alerts.apprise_sender import Lookup, check_hosts, getaddrinfo_lookup, send
from app.services.alerts.channel_store import ChannelStore
from app.services.alerts.channels import MAX_CHANNELS, Channel, ChannelInput, describe, new_channel
from app.services.alerts.destinations import DestinationPolicy
from app.services.alerts.digests import Digest
from app.services.alerts.rules import AlertRule

TEST_TITLE = "Virtuoso test message"
TEST_BODY = "This channel works: alerts named for it will arrive here."


class ChannelInUse(Exception):
    """Rules (``rule_ids``) or digests (``digest_ids``) still name the channel: it was
    not deleted."""

    def __init__(self, channel_id: str, rule_ids: list[str], digest_ids: list[str]) -> None:
        named = [
            f"{what} {', '.join(ids)}"
            for what, ids in (("rules", rule_ids), ("digests", digest_ids))
            if ids
        ]
        super().__init__(
            f"channel {channel_id!r} is named by {' and '.join(named)}; "
            "delete them or change them first"
        )
        self.rule_ids = rule_ids
        self.digest_ids = digest_ids


class ChannelService:
    """Channels in ``store``; ``policy`` the outbound destination policy (the operator's
    ``VIRTUOSO_WEBHOOK_ALLOW``); ``rules`` and ``digests`` list the stored rules and
    digests (the ones naming a channel keep it from deletion); ``timeout_seconds``
    bounds a destination's lookups and a test message's send; ``lookup`` resolves host
    names (tests pass their own)."""

    def __init__(
        self,
        store: ChannelStore,
        policy: DestinationPolicy,
        rules: Callable[[], Awaitable[list[AlertRule]]],
        *,
        digests: Callable[[], Awaitable[list[Digest]]] | None = None,
        max_channels: int = MAX_CHANNELS,
        timeout_seconds: float = 10.0,
        lookup: Lookup = getaddrinfo_lookup,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_channels < 1 or timeout_seconds <= 0:
            raise ValueError("max_channels >= 1 and timeout_seconds > 0")
        self.store = store
        self.policy = policy
        self.rules = rules
        self.digests = digests
        self.max_channels = max_channels
        self.timeout_seconds = timeout_seconds
        self.lookup = lookup
        self.clock = clock

    async def create(self, data: ChannelInput) -> Channel:
        """Parses the URL (Apprise, in a thread: its first import takes a moment), checks
        every host it will connect to, stores the channel under the cap. Raises
        ValueError (unknown type, unparsable URL; never repeating it),
        DestinationRefused (a host refused or unresolvable), TooManyChannels, or the
        store's errors (TierUnavailable, OSError); nothing is stored when it raises."""
        target = await asyncio.to_thread(describe, data.url)
        await check_hosts(target, self.policy, self.timeout_seconds, self.lookup)
        channel = new_channel(data, target, int(self.clock() * 1000))
        await self.store.add_channel(channel, self.max_channels)
        return channel

    async def list_channels(self) -> list[Channel]:
        """Every channel, oldest first. Raises the store's errors."""
        return await self.store.list_channels()

    async def get(self, channel_id: str) -> Channel | None:
        """The channel, or None. Raises the store's errors."""
        return await self.store.get_channel(channel_id)

    async def destination_of(self, channel_id: str) -> tuple[str, str] | None:
        """The outbox's ``ChannelLookup``: the channel's Apprise URL (its secret, for
        sending only) and its type, or None when there is no such channel. Raises the
        store's errors."""
        channel = await self.store.get_channel(channel_id)
        if channel is None:
            return None
        return channel.url.get_secret_value(), channel.type

    async def missing(self, channel_ids: Iterable[str]) -> list[str]:
        """Those of ``channel_ids`` not stored, in order. Raises the store's errors."""
        stored = {channel.id for channel in await self.store.list_channels()}
        return [channel_id for channel_id in channel_ids if channel_id not in stored]

    async def delete(self, channel_id: str) -> bool:
        """Deletes the channel; False when there is none. Raises ChannelInUse when rules
        or digests name it (nothing deleted), or the stores' errors."""
        rule_ids = [rule.id for rule in await self.rules() if channel_id in rule.channels]
        digests = [] if self.digests is None else await self.digests()
        digest_ids = [digest.id for digest in digests if channel_id in digest.channels]
        if rule_ids or digest_ids:
            raise ChannelInUse(channel_id, rule_ids, digest_ids)
        return await self.store.delete_channel(channel_id)

    async def send_test(self, channel: Channel) -> None:
        """Sends a test message to ``channel`` now (the destination checked again).
        Raises DeliveryFailed."""
        stamp = int(self.clock() * 1000)
        await send(
            channel.url.get_secret_value(),
            TEST_TITLE,
            TEST_BODY,
            idempotency_key=f"test-{channel.id}-{stamp}",
            policy=self.policy,
            timeout_seconds=self.timeout_seconds,
            lookup=self.lookup,
        )
