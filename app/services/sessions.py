"""Server-side sessions: a signed cookie carries only a random id; the data stays here.

The data (``{"watchlist": [symbols], "preferences": {...}}``, JSON) lives in Redis
under ``<namespace>:session:<id>`` with a sliding TTL (every load and save restarts
it) when Redis is configured, else in a bounded in-process LRU store. A Redis
failure raises ``TierUnavailable`` (the web layer answers 503); a failed save
leaves what was stored before untouched.
"""

from __future__ import annotations

import hashlib
import re
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol, cast

import orjson
from itsdangerous import BadSignature, TimestampSigner
from itsdangerous.encoding import want_bytes
from redis.asyncio import Redis

from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace
from app.market.models.symbols import canonical_symbol
from app.resilience.redis_breaker import redis_guard

SESSION_TTL_SECONDS = 30 * 86_400
MAX_WATCHLIST = 50
MAX_SESSION_BYTES = 16_384  # a watchlist of 50 and some preferences fit many times over
_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")


class SessionStore(Protocol):
    async def load(self, session_id: str) -> dict:
        """The session's data; {} for an unknown or expired id. Restarts its TTL."""
        ...

    async def save(self, session_id: str, data: dict) -> None:
        """Replaces the session's data and restarts its TTL."""
        ...

    async def delete(self, session_id: str) -> None: ...


def encode_session(data: dict) -> bytes:
    """JSON bytes; ValueError when ``data`` is not a JSON object or is too large."""
    if not isinstance(data, dict):
        raise ValueError("session data must be a JSON object")
    try:
        encoded = orjson.dumps(data)
    except TypeError as exc:
        raise ValueError(f"session data is not JSON: {exc}") from None
    if len(encoded) > MAX_SESSION_BYTES:
        raise ValueError(f"session data is {len(encoded)} bytes; at most {MAX_SESSION_BYTES}")
    return encoded


def decode_session(raw: bytes | None) -> dict:
    """{} for nothing stored or anything that is not a JSON object; a stored watchlist
    comes back readable whatever was stored (see ``readable_watchlist``)."""
    if not raw:
        return {}
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(data, dict):
        return {}
    if "watchlist" in data:
        data["watchlist"] = readable_watchlist(data["watchlist"])
    return data


def readable_watchlist(stored: object) -> list[str]:
    """A stored watchlist as a list of canonical symbols: entries that cannot be a
    symbol (not a string, empty, ``"<script>"``, 500 characters) are dropped, repeats
    kept once, at most ``MAX_WATCHLIST``; anything but a list is an empty watchlist.
    Symbols the service does not serve (delisted, no longer configured) are kept: the
    pages mark them, and a save without them drops them."""
    if not isinstance(stored, list):
        return []
    symbols: list[str] = []
    for entry in stored:
        try:
            symbol = canonical_symbol(entry) if isinstance(entry, str) else None
        except ValueError:
            symbol = None
        if symbol is not None and symbol not in symbols:
            symbols.append(symbol)
    return symbols[:MAX_WATCHLIST]


class RedisSessionStore:
    """Sessions as JSON strings under ``<namespace>:session:<id>`` with a sliding TTL."""

    def __init__(
        self,
        redis: Redis,
        *,
        keyspace: Keyspace,
        guard: RedisGuard | None = None,
        ttl_seconds: int = SESSION_TTL_SECONDS,
    ) -> None:
        if ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
        self._redis = redis
        self._guard = guard or redis_guard()
        self.ttl_seconds = ttl_seconds
        self._prefix = keyspace.prefix("session")
        self._counters = OpCounters()

    @property
    def counters(self) -> dict[str, int]:
        return self._counters.as_dict()

    def key(self, session_id: str) -> str:
        return self._prefix + session_id

    async def load(self, session_id: str) -> dict:
        """Raises TierUnavailable when Redis is down."""
        raw = await self._guard.run(
            lambda: self._redis.getex(self.key(session_id), ex=self.ttl_seconds),
            "session load",
            self._counters,
        )
        # The client does not decode responses: the value is bytes (or None).
        return decode_session(cast(bytes | None, raw))

    async def save(self, session_id: str, data: dict) -> None:
        """Raises ValueError for bad data and TierUnavailable when Redis is down (the
        stored session is then unchanged: SET replaces it in one step or not at all)."""
        encoded = encode_session(data)
        await self._guard.run(
            lambda: self._redis.set(self.key(session_id), encoded, ex=self.ttl_seconds),
            "session save",
            self._counters,
        )

    async def delete(self, session_id: str) -> None:
        await self._guard.run(
            lambda: self._redis.unlink(self.key(session_id)), "session delete", self._counters
        )


class MemorySessionStore:
    """In-process sessions: at most ``max_entries``, the least recently used evicted first."""

    def __init__(
        self,
        max_entries: int = 10_000,
        *,
        ttl_seconds: float = SESSION_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries <= 0:
            raise ValueError(f"max_entries must be positive, not {max_entries}")
        self.max_entries = max_entries
        self.ttl_seconds = ttl_seconds
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()  # id → (expiry, json)
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, session_id: object) -> bool:
        return session_id in self._entries

    async def load(self, session_id: str) -> dict:
        entry = self._entries.get(session_id)
        if entry is None:
            return {}
        now = self._clock()
        if entry[0] <= now:
            del self._entries[session_id]
            return {}
        self._entries[session_id] = (now + self.ttl_seconds, entry[1])
        self._entries.move_to_end(session_id)
        return decode_session(entry[1])

    async def save(self, session_id: str, data: dict) -> None:
        encoded = encode_session(data)  # a copy: later changes to ``data`` are not stored
        self._entries[session_id] = (self._clock() + self.ttl_seconds, encoded)
        self._entries.move_to_end(session_id)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
            self.evictions += 1

    async def delete(self, session_id: str) -> None:
        self._entries.pop(session_id, None)


class _ClockedSigner(TimestampSigner):
    clock: Callable[[], float] = time.time

    def get_timestamp(self) -> int:
        return int(self.clock())


class SessionCookies:
    """Signs session ids for the cookie (HMAC-SHA256 with a timestamp), and checks them.

    ``secret_key`` may be a list of keys, newest last, to rotate keys: cookies
    signed with any of them are accepted, new ones use the newest. The timestamp
    is the signing time: re-sign (set the cookie again) on responses to slide it.
    """

    def __init__(
        self,
        secret_key: str | bytes | Iterable[str | bytes],
        *,
        max_age_seconds: int = SESSION_TTL_SECONDS,
        salt: str = "virtuoso.session",
        clock: Callable[[], float] = time.time,
    ) -> None:
        keys = [secret_key] if isinstance(secret_key, str | bytes) else list(secret_key)
        if not keys or not all(keys):
            raise ValueError("a session secret key is required")
        self.max_age_seconds = max_age_seconds
        # As bytes, as the signer itself would store them (its types take no mixed list).
        self._signer = _ClockedSigner(
            [want_bytes(k) for k in keys], salt=salt, digest_method=hashlib.sha256
        )
        self._signer.clock = clock

    @staticmethod
    def new_id() -> str:
        """A fresh random session id (256 bits, URL-safe)."""
        return secrets.token_urlsafe(32)

    def sign(self, session_id: str) -> str:
        if not _ID_PATTERN.match(session_id):
            raise ValueError("not a session id")
        return self._signer.sign(session_id).decode("ascii")

    def unsign(self, cookie: str | bytes | None) -> str | None:
        """The session id, or None for a missing, tampered, expired or malformed cookie."""
        if not cookie:
            return None
        try:
            value = self._signer.unsign(cookie, max_age=self.max_age_seconds).decode("ascii")
        except (BadSignature, UnicodeDecodeError):  # SignatureExpired is a BadSignature
            return None
        return value if _ID_PATTERN.match(value) else None


def validate_watchlist(symbols: list[str], known: set[str]) -> list[str]:
    """The canonical watchlist: known symbols only, first occurrence kept, at most 50.

    ``known`` holds canonical symbols. Raises ValueError naming the bad symbols and
    the valid ones, or stating the size bound.
    """
    if not isinstance(symbols, list | tuple):
        raise ValueError("the watchlist must be a list of symbols")
    result: list[str] = []
    seen: set[str] = set()
    bad: list[str] = []
    for symbol in symbols:
        try:
            canonical = canonical_symbol(symbol) if isinstance(symbol, str) else None
        except ValueError:
            canonical = None
        if canonical is None or canonical not in known:
            bad.append(symbol if isinstance(symbol, str) else repr(symbol))
        elif canonical not in seen:
            seen.add(canonical)
            result.append(canonical)
    if bad:
        raise ValueError(
            f"unknown symbol{'s' if len(bad) > 1 else ''}: {_listing(bad)}; "
            f"valid symbols: {_listing(sorted(known)) or '(none)'}"
        )
    if len(result) > MAX_WATCHLIST:
        raise ValueError(
            f"a watchlist holds at most {MAX_WATCHLIST} symbols; this one has {len(result)}"
        )
    return result


def _listing(items: list[str], limit: int = 100) -> str:
    shown = ", ".join(item[:40] for item in items[:limit])
    return shown + (f", … ({len(items) - limit} more)" if len(items) > limit else "")
