"""Where notification channels live: Redis (beside the alert rules) or one JSON file
(``channels.json`` next to ``alerts.json``, readable by its owner only). The stored
form holds each channel's URL in clear (``Channel.to_stored``); nothing here logs or
shows it.

Redis key (``P`` = ``<namespace>:alerts``, the deployment's ``Keyspace``)::

    P:channels    hash    channel id → channel JSON

Every call goes through the ``RedisGuard``: Redis down → ``TierUnavailable``. A file
write that fails raises OSError and changes nothing. Both refuse a channel beyond
``max_channels`` with ``TooManyChannels`` (count and write are one step).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
from pathlib import Path
from typing import Protocol

import orjson
from redis.asyncio import Redis

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.services.alerts.channels import MAX_CHANNELS, Channel
from app.services.alerts.files import FileMark, file_mark, set_aside, write_atomically

log = logging.getLogger(__name__)

# KEYS[1] channels hash; ARGV: id, JSON, cap. 1 stored, 0 refused (the same script as rules).
_ADD = """
local cap = tonumber(ARGV[3])
if cap > 0 and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= cap then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class TooManyChannels(Exception):
    """``max_channels`` channels are stored already: the new one was not stored."""

    def __init__(self, max_channels: int) -> None:
        super().__init__(
            f"at most {max_channels} channels can be stored; delete one to add another"
        )
        self.max_channels = max_channels


class ChannelStore(Protocol):
    """Channels by id. Every method raises the store's errors (TierUnavailable, OSError)."""

    async def add_channel(self, channel: Channel, max_channels: int = MAX_CHANNELS) -> None: ...
    async def list_channels(self) -> list[Channel]: ...
    async def get_channel(self, channel_id: str) -> Channel | None: ...
    async def delete_channel(self, channel_id: str) -> bool: ...


def _order(channel: Channel) -> tuple[int, str]:
    return channel.created_at_ms, channel.id


class RedisChannelStore:
    """Channels in one Redis hash, shared by every replica and the collector."""

    def __init__(self, redis: Redis, guard: RedisGuard, keyspace: Keyspace) -> None:
        self._redis = redis
        self._guard = guard
        self._key = f"{keyspace.name('alerts')}:channels"

    async def add_channel(self, channel: Channel, max_channels: int = MAX_CHANNELS) -> None:
        """Stores ``channel``; TooManyChannels (nothing stored) at the cap."""
        data = orjson.dumps(channel.to_stored())
        stored = await self._guard.run(
            lambda: self._redis.eval(_ADD, 1, self._key, channel.id, data, max_channels),
            "add channel",
        )
        if not stored:
            raise TooManyChannels(max_channels)

    async def list_channels(self) -> list[Channel]:
        """Every channel, oldest first."""
        raw = await self._guard.run(lambda: self._redis.hgetall(self._key), "HGETALL channels")
        return sorted((Channel.model_validate_json(v) for v in raw.values()), key=_order)

    async def get_channel(self, channel_id: str) -> Channel | None:
        raw = await self._guard.run(lambda: self._redis.hget(self._key, channel_id), "HGET")
        return None if raw is None else Channel.model_validate_json(raw)

    async def delete_channel(self, channel_id: str) -> bool:
        removed = await self._guard.run(
            lambda: self._redis.hdel(self._key, channel_id), "HDEL channel"
        )
        return bool(removed)


class FileChannelStore:
    """In memory, saved to one JSON file (atomically) after every change and read again
    whenever the file changed on disk (its inode, size or mtime: the API's server
    writes channels, the collector's outbox reads them). A corrupt file is renamed
    aside (a warning names the file, not its content) and the store starts empty."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._channels: dict[str, Channel] = {}
        self._mark: FileMark | None = None
        self._lock = asyncio.Lock()
        self._load()

    def _refresh(self) -> None:
        """Reads the file again when another process (or a restore) changed it."""
        if file_mark(self.path) != self._mark:
            self._load()

    def _load(self) -> None:
        self._mark = file_mark(self.path)
        self._channels = {}
        if self._mark is None:
            return
        try:
            data = orjson.loads(self.path.read_bytes())
            channels = [Channel.from_stored(c) for c in data["channels"]]
        except Exception as exc:
            aside = set_aside(self.path)
            log.warning(
                "channel store %s is unreadable (%s); moved to %s, starting empty",
                self.path,
                type(exc).__name__,  # a validation message could quote a stored URL
                aside,
            )
            return
        self._channels = {c.id: c for c in channels}

    async def _write(self, channels: dict[str, Channel]) -> None:
        """Writes, then adopts ``channels``: a failed write (OSError) changes nothing."""
        stored = [c.to_stored() for c in channels.values()]
        data = orjson.dumps({"version": 1, "channels": stored})
        await asyncio.to_thread(functools.partial(write_atomically, self.path, data, private=True))
        self._channels, self._mark = channels, file_mark(self.path)

    async def add_channel(self, channel: Channel, max_channels: int = MAX_CHANNELS) -> None:
        """Stores ``channel``; TooManyChannels (nothing stored) at the cap."""
        async with self._lock:
            self._refresh()
            full = len(self._channels) >= max_channels
            if full and channel.id not in self._channels:
                raise TooManyChannels(max_channels)
            await self._write({**self._channels, channel.id: channel})

    async def list_channels(self) -> list[Channel]:
        """Every channel, oldest first."""
        self._refresh()
        return sorted(self._channels.values(), key=_order)

    async def get_channel(self, channel_id: str) -> Channel | None:
        self._refresh()
        return self._channels.get(channel_id)

    async def delete_channel(self, channel_id: str) -> bool:
        async with self._lock:
            self._refresh()
            if channel_id not in self._channels:
                return False
            await self._write({k: v for k, v in self._channels.items() if k != channel_id})
            return True
