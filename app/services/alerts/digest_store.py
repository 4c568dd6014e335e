"""Where digests live: Redis or JSON files, as the alert store (``store``) keeps rules.

Redis key layout (``P`` = ``<namespace>:alerts``, the deployment's ``Keyspace``)::

    P:digests        hash   digest id → digest JSON (without last_sent_ms)
    P:digests:sent   hash   digest id → the slot it was last sent for (epoch ms)

The file store keeps the digests in ``digests.json`` (written by the routes) and the
sent slots in ``digests-sent.json`` (written by the scheduler): one writer per file, so
a server and its collector child, in two processes, never overwrite each other's
changes; each reads the other's file again when it has changed on disk.

At most ``MAX_DIGESTS`` digests: ``TooManyDigests`` beyond, nothing stored. Redis down
→ ``TierUnavailable`` (from the ``RedisGuard``); a file that cannot be written →
``OSError``, nothing changed.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path
from typing import Any, Protocol

import orjson
from redis.asyncio import Redis

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.services.alerts.digests import MAX_DIGESTS, Digest
from app.services.alerts.files import FileMark, file_mark, set_aside, write_atomically

log = logging.getLogger(__name__)


class TooManyDigests(Exception):
    """The store holds ``max_digests`` digests already: the new one was not stored."""

    def __init__(self, max_digests: int) -> None:
        super().__init__(f"at most {max_digests} digests can be stored; delete one to add another")
        self.max_digests = max_digests


class DigestStore(Protocol):
    max_digests: int

    async def add_digest(self, digest: Digest) -> None: ...
    async def list_digests(self) -> list[Digest]: ...
    async def delete_digest(self, digest_id: str) -> bool: ...
    async def mark_sent(self, digest_id: str, slot_ms: int) -> None: ...


# KEYS[1] digests hash; ARGV: id, JSON, cap. 1 stored, 0 refused (the cap).
_ADD = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
   and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""
# KEYS[1] digests hash, KEYS[2] sent hash; ARGV: id, slot. Only a digest still stored,
# and only forward (a late evaluation cannot move a slot back).
_MARK = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local old = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '-1')
if tonumber(ARGV[2]) > old then redis.call('HSET', KEYS[2], ARGV[1], ARGV[2]) end
return 1
"""


def _stored(digest: Digest) -> bytes:
    return orjson.dumps({k: v for k, v in digest.to_dict().items() if k != "last_sent_ms"})


class RedisDigestStore:
    def __init__(
        self, redis: Redis, guard: RedisGuard, keyspace: Keyspace, max_digests: int = MAX_DIGESTS
    ) -> None:
        self._redis = redis
        self._guard = guard
        self._key = f"{keyspace.name('alerts')}:digests"
        self._sent = f"{self._key}:sent"
        self.max_digests = max_digests

    async def add_digest(self, digest: Digest) -> None:
        """Stores ``digest``; TooManyDigests (nothing stored) at the cap. Count and write
        are one script: concurrent adds cannot pass the cap."""
        data, cap = _stored(digest), self.max_digests
        added = await self._guard.run(
            lambda: self._redis.eval(_ADD, 1, self._key, digest.id, data, cap), "add digest"
        )
        if not added:
            raise TooManyDigests(cap)

    async def list_digests(self) -> list[Digest]:
        """Every digest with its last sent slot, oldest first."""

        async def read() -> tuple[dict, dict]:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self._key)
                pipe.hgetall(self._sent)
                stored, sent = await pipe.execute()
            return stored, sent

        stored, sent = await self._guard.run(read, "list digests")
        digests = []
        for key, raw in stored.items():
            last = sent.get(key)
            data = {**orjson.loads(raw), "last_sent_ms": None if last is None else int(last)}
            digests.append(Digest.model_validate(data))
        return _ordered(digests)

    async def delete_digest(self, digest_id: str) -> bool:
        async def delete() -> int:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self._key, digest_id)
                pipe.hdel(self._sent, digest_id)
                removed, _ = await pipe.execute()
            return int(removed)

        return bool(await self._guard.run(delete, "delete digest"))

    async def mark_sent(self, digest_id: str, slot_ms: int) -> None:
        """Records that ``digest_id`` was handed on for ``slot_ms`` (a deleted digest:
        nothing)."""
        keys = (self._key, self._sent)
        await self._guard.run(
            lambda: self._redis.eval(_MARK, 2, *keys, digest_id, slot_ms), "mark digest sent"
        )


class FileDigestStore:
    """Digests in ``<directory>/digests.json``, sent slots in ``digests-sent.json``,
    each written atomically (temp file, fsync, rename) and read again when changed on
    disk. An unreadable file is renamed aside (a warning logged) and read as empty."""

    def __init__(self, directory: str | os.PathLike[str], max_digests: int = MAX_DIGESTS) -> None:
        self.path = Path(directory) / "digests.json"
        self.sent_path = Path(directory) / "digests-sent.json"
        self.max_digests = max_digests
        self._lock = asyncio.Lock()
        self._cache: dict[Path, tuple[FileMark | None, dict[str, Any]]] = {}

    def _read(self, path: Path) -> dict[str, Any]:
        """The file's object, read again only when its inode, size or mtime changed."""
        mark = file_mark(path)
        cached = self._cache.get(path)
        if cached is not None and cached[0] == mark:
            return cached[1]
        data = {} if mark is None else _load(path)
        self._cache[path] = (mark, data)
        return data

    async def _write(self, path: Path, data: dict[str, Any]) -> None:
        await asyncio.to_thread(write_atomically, path, orjson.dumps(data))

    async def add_digest(self, digest: Digest) -> None:
        async with self._lock:
            stored = self._read(self.path)
            if digest.id not in stored and len(stored) >= self.max_digests:
                raise TooManyDigests(self.max_digests)
            await self._write(self.path, {**stored, digest.id: orjson.loads(_stored(digest))})

    async def list_digests(self) -> list[Digest]:
        stored, sent = self._read(self.path), self._read(self.sent_path)
        digests = []
        for key, data in stored.items():
            try:
                digests.append(Digest.model_validate({**data, "last_sent_ms": sent.get(key)}))
            except ValueError as error:
                log.warning("digest %r in %s is unreadable, left out: %s", key, self.path, error)
        return _ordered(digests)

    async def delete_digest(self, digest_id: str) -> bool:
        async with self._lock:
            stored = self._read(self.path)
            if digest_id not in stored:
                return False
            await self._write(self.path, {k: v for k, v in stored.items() if k != digest_id})
            return True

    async def mark_sent(self, digest_id: str, slot_ms: int) -> None:
        async with self._lock:
            stored, sent = self._read(self.path), self._read(self.sent_path)
            # forget deleted digests' slots; only forward
            kept = {k: v for k, v in sent.items() if k in stored}
            if digest_id in stored and slot_ms > kept.get(digest_id, -1):
                kept[digest_id] = slot_ms
            if kept != sent:
                await self._write(self.sent_path, kept)


def _load(path: Path) -> dict[str, Any]:
    try:
        data = orjson.loads(path.read_bytes())
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except (OSError, ValueError) as error:
        aside = set_aside(path)
        log.warning("digest file %s is unreadable (%s); moved to %s", path, error, aside)
        return {}


def _ordered(digests: list[Digest]) -> list[Digest]:
    return sorted(digests, key=lambda d: (d.created_at_ms, d.id))
