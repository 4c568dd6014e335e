"""The Memcached shared tier (L2): a SharedTier named "memcached" over one or more servers.

Placement
    Keys are spread over the servers by rendezvous (highest random weight) hashing:
    a key lives on the server with the highest ``blake2b(server id, key)`` score, so
    removing a server moves only that server's keys, and every process agrees on the
    placement (no salted ``hash``). Keys of a server that is down are *not* moved to
    another server: they are misses (reads) or dropped (writes) until it is back.

Connections
    One aiomcache client (its pool of ``pool_size`` connections) per server for the
    life of the tier, created by the constructor and closed by :meth:`close`.

Cancellation safety (why this module does not call aiomcache's public methods)
    aiomcache's ``@acquire`` wrapper returns the connection to its pool on *any* exit
    and only marks it broken for an ``Exception``. A timeout (``asyncio.timeout``)
    or a cancelled request is a ``CancelledError`` (a ``BaseException``), so the
    connection goes back to the pool with the server's answer still on its way; the
    next user of that connection reads the previous command's answer (a stale value,
    a wrong miss, a "get failed"), and every later answer on it is one behind.
    :meth:`_Client.connection` therefore acquires the connection itself and, unless the
    command finished cleanly, *aborts* it (transport closed at once, reader marked
    broken) before giving it back, so the pool drops it and opens a fresh one. Only
    aiomcache's command bodies (``__wrapped__``: command formatting and reply parsing)
    run on it. A connection whose state is unknown is never reused.

    Also fixed: aiomcache reads a one-line reply (``set``, ``delete``, ``version``)
    with ``readline()`` in a loop that spins forever, without yielding to the event
    loop, when the server closes the connection in the middle of that reply (a crash
    mid-request): the whole process hangs and no timeout can fire. ``_Client`` reads
    that line with ``readuntil``, which raises at end of stream.

Failure semantics
    Every server has its own circuit breaker (app.resilience). While a server's breaker
    is open its share of every operation is skipped at once (no waiting for timeouts);
    after the breaker's wait one probe goes through and the server rejoins when it
    answers. One warning is logged when a server goes down, one info line when it is
    back. Every server operation is bounded by ``timeout_seconds`` (pool wait and
    connect included).

    * ``get_many``: one ``get k1 k2 ...`` per server, all servers concurrently. A server
      that fails, times out or is skipped contributes misses; ``TierUnavailable`` is
      raised only when *no* server involved in the request answered. A partial result
      is therefore possible and indistinguishable from misses to the caller (the
      per-server counters and ``stats()`` show the errors).
    * ``set_many``: concurrent ``set``\\ s, at most ``pool_size`` at a time per server.
      Raises ``TierUnavailable`` only when nothing could be stored; values larger than
      ``max_value_bytes`` are not sent (counted as ``too_large``), as Memcached would
      refuse them.
    * ``delete_many``: concurrent ``delete``\\ s; raises ``TierUnavailable`` when *any*
      delete could not be confirmed (failed or skipped server), after trying them all,
      since a copy may survive there.
    * ``stats()`` never raises; servers that do not answer are reported as down.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any, TypeVar

import aiomcache
from aiomcache.client import FlagClient
from aiomcache.pool import Connection

from app.backends.errors import TierUnavailable
from app.resilience.breaker import (
    OPEN,
    BreakerConfig,
    BreakerOpen,
    CircuitBreaker,
    default_is_failure,
)

__all__ = [
    "DEFAULT_PORT",
    "MAX_KEY_BYTES",
    "MemcachedTier",
    "ServerCounters",
    "memcached_breaker_config",
    "parse_server",
    "rendezvous_owner",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_PORT = 11211
MAX_KEY_BYTES = 250
# Memcached's default item size limit is 1 MiB including the key and item header.
DEFAULT_MAX_VALUE_BYTES = 1024 * 1024 - 1024
# An expiry above 30 days is read by Memcached as a Unix timestamp, not a duration.
_RELATIVE_EXPTIME_MAX = 30 * 24 * 3600
_KEY_RE = re.compile(rb"[\x21-\x7e]{1,250}")  # printable ASCII, no space or control


def memcached_breaker_config(timeout_seconds: float = 0.25) -> BreakerConfig:
    """Trip on 3 failures in a row (or half the calls of 10 s failing); probe again after
    0.5 s, backing off to 15 s, so a recovered server rejoins within 15 s."""
    return BreakerConfig(
        window_seconds=10.0,
        consecutive_failures=3,
        open_seconds=0.5,
        max_open_seconds=15.0,
        slow_call_seconds=max(timeout_seconds / 2, 1e-3),
    )


class _ServerReply(Exception):
    """Memcached answered with an error (``SERVER_ERROR ...``, ``CLIENT_ERROR ...``): the
    server is up, so this does not count against its breaker."""

    breaker_failure = False


@dataclass(slots=True)
class ServerCounters:
    """Per server. ``ops``: operations sent (admitted by the breaker); ``errors``: those
    that failed (timeouts included); ``timeouts``: those that ran out of time;
    ``skipped``: not attempted because the breaker was open; ``hits``/``misses``: keys
    found / not found by answered gets; ``too_large``: values not sent."""

    ops: int = 0
    errors: int = 0
    timeouts: int = 0
    skipped: int = 0
    hits: int = 0
    misses: int = 0
    too_large: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


def parse_server(spec: str) -> tuple[str, int]:
    """``"host:port"``, ``"memcached://host:port"``, ``"host"`` (port 11211) or
    ``"[v6]:port"`` → ``(host, port)``; ValueError when it is none of those."""
    if not isinstance(spec, str):
        raise ValueError(f"memcached server must be a string, not {spec!r}")
    text = spec.strip()
    if "://" in text:
        scheme, _, text = text.partition("://")
        if scheme != "memcached":
            raise ValueError(f"memcached server {spec!r}: the scheme must be memcached://")
        text = text.rstrip("/")
    port_text = ""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"memcached server {spec!r}: expected [ipv6]:port")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    elif ":" in text:
        raise ValueError(f"memcached server {spec!r}: write an IPv6 address as [addr]:port")
    else:
        host = text
    if not host or any(c.isspace() or c in "/@?#" for c in host):
        raise ValueError(f"memcached server {spec!r}: expected host:port")
    if port_text == "":
        return host, DEFAULT_PORT
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"memcached server {spec!r}: the port must be 1..65535")
    return host, int(port_text)


def _server_id(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _encode_key(key: str) -> bytes:
    if not isinstance(key, str):
        raise TypeError(f"a cache key must be a str, not {type(key).__name__}")
    raw = key.encode("utf-8")
    if not _KEY_RE.fullmatch(raw):
        raise ValueError(
            f"invalid memcached key {key[:60]!r}{'...' if len(key) > 60 else ''}: "
            f"1..{MAX_KEY_BYTES} bytes of printable ASCII without spaces"
        )
    return raw


def _score(prefix: Any, key: bytes) -> int:
    digest = prefix.copy()
    digest.update(key)
    return int.from_bytes(digest.digest(), "big")


def _hash_prefix(server_id: str) -> Any:
    return hashlib.blake2b(server_id.encode() + b"\x00", digest_size=8)


def rendezvous_owner(server_ids: Sequence[str], key: str) -> str:
    """The server (its id, ``host:port``) that owns ``key`` among ``server_ids``."""
    raw = _encode_key(key)
    return max(server_ids, key=lambda sid: (_score(_hash_prefix(sid), raw), sid))


def _abort(conn: Connection) -> None:
    """Makes the connection unusable: the pool closes it on release instead of reusing it."""
    conn.writer.transport.abort()  # at once: no half-sent command is flushed later
    if conn.reader.exception() is None:
        conn.reader.set_exception(ConnectionAbortedError("memcached connection discarded"))


# The bodies of aiomcache's commands without its ``@acquire`` wrapper: they take the
# connection as their first argument (see _Client.connection for why).
_SET = FlagClient.set.__wrapped__  # type: ignore[attr-defined]
_DELETE = FlagClient.delete.__wrapped__  # type: ignore[attr-defined]
_STATS = FlagClient.stats.__wrapped__  # type: ignore[attr-defined]
_VERSION = FlagClient.version.__wrapped__  # type: ignore[attr-defined]


class _Client(aiomcache.Client):
    """aiomcache's client with a cancellation-safe way to use a pooled connection."""

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[Connection]:
        """A pooled connection; aborted (never reused) unless the body completes."""
        conn = await self._pool.acquire()
        try:
            yield conn
        except BaseException:  # CancelledError above all: the reply may be in flight
            _abort(conn)
            raise
        finally:
            self._pool.release(conn)

    async def _execute_simple_command(self, conn: Connection, raw_command: bytes) -> bytes:
        # aiomcache loops on readline(), which returns b"" forever at end of stream.
        conn.writer.write(raw_command)
        await conn.writer.drain()
        line = await conn.reader.readuntil(b"\r\n")  # IncompleteReadError at EOF
        return line[:-2]

    async def get_values(self, keys: Sequence[bytes]) -> dict[bytes, bytes]:
        async with self.connection() as conn:
            values, _ = await self._multi_get(conn, *keys, with_cas=False)
        return values

    async def set_value(self, key: bytes, value: bytes, exptime: int) -> bool:
        async with self.connection() as conn:
            return await _SET(self, conn, key, value, exptime)

    async def delete_key(self, key: bytes) -> bool:
        async with self.connection() as conn:
            return await _DELETE(self, conn, key)

    async def server_stats(self) -> dict[bytes, bytes | None]:
        async with self.connection() as conn:
            return await _STATS(self, conn)

    async def server_version(self) -> bytes:
        async with self.connection() as conn:
            return await _VERSION(self, conn)

    async def close_all(self, seconds: float = 1.0) -> None:
        """Closes every connection, idle or in use (in-flight commands then fail)."""
        pool = self._pool
        idle: list[Connection] = []
        while not pool._pool.empty():
            idle.append(pool._pool.get_nowait())
        busy = list(pool._in_use)
        for conn in idle:
            conn.reader.feed_eof()
            conn.writer.close()
        for conn in busy:
            _abort(conn)
        writers = [conn.writer for conn in idle + busy]
        if writers:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    closing = (writer.wait_closed() for writer in writers)
                    await asyncio.gather(*closing, return_exceptions=True)


class _Server:
    """One Memcached server: its client, breaker, counters and down/up logging."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        pool_size: int,
        timeout_seconds: float,
        breaker_config: BreakerConfig,
        clock: Callable[[], float],
    ) -> None:
        self.host = host
        self.port = port
        self.id = _server_id(host, port)
        self.prefix = _hash_prefix(self.id)
        # pool_minsize must equal pool_size: aiomcache's pool only grows to its minsize.
        self.client = _Client(host, port, pool_size=pool_size, pool_minsize=pool_size)
        self.timeout_seconds = timeout_seconds
        self.breaker = CircuitBreaker(
            f"memcached {self.id}",
            config=breaker_config,
            clock=clock,
            is_failure=default_is_failure,  # _ServerReply (the server answered) does not count
        )
        self.breaker.add_listener(self._on_transition)
        self.counters = ServerCounters()
        self.last_error: str | None = None
        self.down = False

    @property
    def available(self) -> bool:
        return self.breaker.state != OPEN  # reading it lets OPEN become HALF_OPEN

    async def call(self, operation: Callable[[], Awaitable[T]]) -> T:
        """``operation()`` within the time bound, through the breaker. Raises BreakerOpen
        (skipped), TimeoutError, or the operation's error."""

        async def bounded() -> T:
            self.counters.ops += 1
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    try:
                        return await operation()
                    except aiomcache.ClientException as exc:
                        if "SERVER_ERROR" in str(exc) or "CLIENT_ERROR" in str(exc):
                            raise _ServerReply(str(exc)) from exc
                        raise
            except Exception as exc:
                self._failed(exc)
                raise

        try:
            result = await self.breaker.call(bounded)
        except BreakerOpen:
            self.counters.skipped += 1
            raise
        if self.down:
            self.down = False
            log.info("memcached %s is back", self.id)
        return result

    def describe(self, exc: BaseException) -> str:
        if isinstance(exc, BreakerOpen):
            return f"skipped while it recovers (retry in {exc.retry_after_seconds:.2g} s)"
        if isinstance(exc, TimeoutError):
            return f"timed out after {self.timeout_seconds:g} s"
        return repr(exc)

    def _failed(self, exc: Exception) -> None:
        # Before the breaker sees the outcome, so the "down" line can say why.
        self.counters.errors += 1
        self.counters.timeouts += isinstance(exc, TimeoutError)
        self.last_error = self.describe(exc)
        log.debug("memcached %s: %s", self.id, self.last_error)

    def mark_down(self, reason: str) -> None:
        if not self.down:
            self.down = True
            log.warning(
                "memcached %s is down (%s); its keys are misses until it is back", self.id, reason
            )

    def _on_transition(self, _name: str, _old: str, new: str) -> None:
        if new == OPEN:
            self.mark_down(self.last_error or "circuit breaker open")


def _as_int(value: bytes | None) -> int:
    try:
        return int(value or 0)
    except ValueError:
        return 0


class MemcachedTier:
    """Memcached as a SharedTier (see the module docstring for placement and failures).

    ``servers``: ``"host:port"`` strings (``memcached://`` accepted), or one string of
    them separated by commas. ``pool_size``: connections per server.
    ``timeout_seconds``: bound of every server operation. ``breaker_config``: per
    server (default :func:`memcached_breaker_config`). ``max_value_bytes``: larger
    values are not stored. ``clock``: monotonic seconds, for the breakers.
    """

    name = "memcached"

    def __init__(
        self,
        servers: str | Sequence[str],
        *,
        pool_size: int = 4,
        timeout_seconds: float = 0.25,
        breaker_config: BreakerConfig | None = None,
        max_value_bytes: int = DEFAULT_MAX_VALUE_BYTES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if isinstance(servers, str):
            servers = [spec for spec in servers.split(",") if spec.strip()]
        addresses = [parse_server(spec) for spec in servers]
        if not addresses:
            raise ValueError("MemcachedTier needs at least one server")
        ids = [_server_id(host, port) for host, port in addresses]
        duplicates = sorted({sid for sid in ids if ids.count(sid) > 1})
        if duplicates:
            raise ValueError(f"memcached servers listed twice: {', '.join(duplicates)}")
        if isinstance(pool_size, bool) or not isinstance(pool_size, int) or pool_size < 1:
            raise ValueError(f"pool_size must be an int >= 1, not {pool_size!r}")
        if not (timeout_seconds > 0 and math.isfinite(timeout_seconds)):
            raise ValueError(f"timeout_seconds must be finite and > 0, not {timeout_seconds!r}")
        if max_value_bytes < 1:
            raise ValueError("max_value_bytes must be >= 1")
        self.pool_size = pool_size
        self.timeout_seconds = timeout_seconds
        self.max_value_bytes = max_value_bytes
        config = breaker_config or memcached_breaker_config(timeout_seconds)
        self._servers = [
            _Server(
                host,
                port,
                pool_size=pool_size,
                timeout_seconds=timeout_seconds,
                breaker_config=config,
                clock=clock,
            )
            for host, port in addresses
        ]
        self._by_id = {server.id: server for server in self._servers}
        self._closed = False

    # --- introspection ------------------------------------------------------------------

    @property
    def servers(self) -> list[str]:
        """The server ids (``host:port``), in configuration order."""
        return [server.id for server in self._servers]

    @property
    def available(self) -> bool:
        """At least one server is not skipped (its breaker is closed or lets a probe in)."""
        return not self._closed and any(server.available for server in self._servers)

    @property
    def counters(self) -> dict[str, ServerCounters]:
        """Per server id: a copy of its counters (for the metrics layer)."""
        return {server.id: replace(server.counters) for server in self._servers}

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return {server.id: server.breaker for server in self._servers}

    def server_for(self, key: str) -> str:
        """The id of the server that holds ``key`` (rendezvous hashing)."""
        return self._owner(_encode_key(key)).id

    def _owner(self, raw: bytes) -> _Server:
        if len(self._servers) == 1:
            return self._servers[0]
        return max(self._servers, key=lambda server: (_score(server.prefix, raw), server.id))

    def _group(self, raw_keys: Sequence[bytes]) -> dict[_Server, list[bytes]]:
        groups: dict[_Server, list[bytes]] = {}
        for raw in raw_keys:
            groups.setdefault(self._owner(raw), []).append(raw)
        return groups

    def _check_open(self) -> None:
        if self._closed:
            raise TierUnavailable("memcached tier is closed")

    # --- lifecycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Asks every server for its version once (connecting its pool); never raises.
        A server that does not answer is logged as down (once) and still tried."""
        self._check_open()

        async def ping(server: _Server) -> None:
            try:
                version = await server.call(server.client.server_version)
            except Exception as exc:
                server.mark_down(server.last_error or repr(exc))
            else:
                log.info("memcached %s answers (version %s)", server.id, version.decode())

        await asyncio.gather(*(ping(server) for server in self._servers))

    async def close(self) -> None:
        """Closes every connection of every server; later calls raise TierUnavailable."""
        if self._closed:
            return
        self._closed = True
        await asyncio.gather(*(server.client.close_all() for server in self._servers))

    async def __aenter__(self) -> MemcachedTier:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.close()

    # --- SharedTier ---------------------------------------------------------------------

    async def get_many(self, keys: Sequence[str]) -> dict[str, bytes]:
        """The values found. One multi-get per server, concurrently. Keys of a server that
        fails or is skipped are misses; TierUnavailable only when no server answered."""
        raw_keys = list(dict.fromkeys(_encode_key(key) for key in keys))
        self._check_open()
        if not raw_keys:
            return {}
        groups = self._group(raw_keys)

        failures: dict[str, str] = {}

        async def fetch(server: _Server, group: list[bytes]) -> dict[bytes, bytes] | None:
            try:
                values = await server.call(lambda: server.client.get_values(group))
            except Exception as exc:
                failures[server.id] = server.describe(exc)
                return None
            server.counters.hits += len(values)
            server.counters.misses += len(group) - len(values)
            return values

        answers = await asyncio.gather(*(fetch(s, g) for s, g in groups.items()))
        if all(answer is None for answer in answers):
            raise TierUnavailable(_failure_message("get", failures))
        found: dict[str, bytes] = {}
        for answer in answers:
            for raw, value in (answer or {}).items():
                found[raw.decode("ascii")] = value
        return found

    async def set_many(self, items: Mapping[str, bytes], ttl_seconds: int) -> None:
        """Stores every item for ``ttl_seconds`` (0: no expiry, LRU only). Concurrent sets,
        at most ``pool_size`` at a time per server. TierUnavailable only when nothing
        could be stored; values over ``max_value_bytes`` are skipped."""
        if isinstance(ttl_seconds, bool) or not isinstance(ttl_seconds, int) or ttl_seconds < 0:
            raise ValueError(f"ttl_seconds must be an int >= 0, not {ttl_seconds!r}")
        prepared: dict[bytes, bytes] = {}
        for key, value in items.items():
            if not isinstance(value, bytes | bytearray | memoryview):
                raise TypeError(f"a cached value must be bytes, not {type(value).__name__}")
            prepared[_encode_key(key)] = bytes(value)
        self._check_open()
        exptime = ttl_seconds
        if ttl_seconds > _RELATIVE_EXPTIME_MAX:
            exptime = int(time.time()) + ttl_seconds
        groups: dict[_Server, list[bytes]] = {}
        for raw, value in prepared.items():
            server = self._owner(raw)
            if len(value) > self.max_value_bytes:
                server.counters.too_large += 1
                log.debug("memcached: %s not stored, %d bytes", raw.decode(), len(value))
                continue
            groups.setdefault(server, []).append(raw)
        if not groups:
            return

        failures: dict[str, str] = {}

        async def store(server: _Server, group: list[bytes]) -> int:
            limit = asyncio.Semaphore(self.pool_size)

            async def one(raw: bytes) -> bool:
                async with limit:
                    try:
                        await server.call(
                            lambda: server.client.set_value(raw, prepared[raw], exptime)
                        )
                    except Exception as exc:
                        failures.setdefault(server.id, server.describe(exc))
                        return False
                    return True

            return sum(await asyncio.gather(*(one(raw) for raw in group)))

        stored = await asyncio.gather(*(store(s, g) for s, g in groups.items()))
        if not any(stored):
            raise TierUnavailable(_failure_message("set", failures))

    async def delete_many(self, keys: Sequence[str]) -> None:
        """Deletes the keys (absent keys are fine). TierUnavailable when any delete could
        not be confirmed, after trying every one."""
        raw_keys = list(dict.fromkeys(_encode_key(key) for key in keys))
        self._check_open()
        if not raw_keys:
            return
        groups = self._group(raw_keys)

        failures: dict[str, str] = {}

        async def remove(server: _Server, group: list[bytes]) -> None:
            limit = asyncio.Semaphore(self.pool_size)

            async def one(raw: bytes) -> None:
                async with limit:
                    try:
                        await server.call(lambda: server.client.delete_key(raw))
                    except Exception as exc:
                        failures.setdefault(server.id, server.describe(exc))

            await asyncio.gather(*(one(raw) for raw in group))

        await asyncio.gather(*(remove(s, g) for s, g in groups.items()))
        if failures:
            raise TierUnavailable(_failure_message("delete", failures))

    async def get(self, key: str) -> bytes | None:
        return (await self.get_many([key])).get(key)

    async def set(self, key: str, value: bytes, ttl_seconds: int) -> None:
        await self.set_many({key: value}, ttl_seconds)

    async def stats(self) -> dict[str, Any]:
        """Per server: memory used and limit, items, evictions, hits, misses, uptime,
        breaker state and counters; totals over the servers that answered, and
        ``memory_used_ratio`` (used / limit of those). Never raises."""

        async def one(server: _Server) -> dict[str, Any]:
            entry: dict[str, Any] = {
                "counters": server.counters.as_dict(),
                "last_error": server.last_error,
            }
            if self._closed:
                return {"up": False, "breaker": server.breaker.state, "error": "closed", **entry}
            try:
                raw = await server.call(server.client.server_stats)
            except Exception as exc:
                reason = server.describe(exc)
                return {"up": False, "breaker": server.breaker.state, "error": reason, **entry}
            used, limit = _as_int(raw.get(b"bytes")), _as_int(raw.get(b"limit_maxbytes"))
            return {
                "up": True,
                "breaker": server.breaker.state,
                "version": (raw.get(b"version") or b"").decode(),
                "uptime_seconds": _as_int(raw.get(b"uptime")),
                "used_bytes": used,
                "limit_bytes": limit,
                "memory_used_ratio": round(used / limit, 6) if limit else None,
                "curr_items": _as_int(raw.get(b"curr_items")),
                "evictions": _as_int(raw.get(b"evictions")),
                "get_hits": _as_int(raw.get(b"get_hits")),
                "get_misses": _as_int(raw.get(b"get_misses")),
                "curr_connections": _as_int(raw.get(b"curr_connections")),
                **entry,
            }

        per_server = await asyncio.gather(*(one(server) for server in self._servers))
        up = [entry for entry in per_server if entry["up"]]
        fields = ("used_bytes", "limit_bytes", "curr_items", "evictions", "get_hits", "get_misses")
        totals = {name: sum(entry[name] for entry in up) for name in fields}
        return {
            "tier": self.name,
            "available": self.available,
            "servers_up": len(up),
            "servers_total": len(self._servers),
            "totals": totals,
            "memory_used_ratio": (
                round(totals["used_bytes"] / totals["limit_bytes"], 6)
                if totals["limit_bytes"]
                else None
            ),
            "servers": dict(zip(self.servers, per_server, strict=True)),
        }


def _failure_message(what: str, failures: Mapping[str, str]) -> str:
    reasons = "; ".join(f"{server}: {reason}" for server, reason in sorted(failures.items()))
    return f"memcached {what} failed ({reasons})"
