"""Per-client rate limits of the HTTP API, and a cap on WebSocket connections per client.

Algorithm: GCRA (the generic cell rate algorithm), which behaves exactly like a token
bucket of ``burst`` tokens refilled at ``rate`` per second, but stores one number per
bucket: the theoretical arrival time (TAT) of the next request. A request is allowed
when, after adding one emission interval ``1/rate``, the TAT is at most
``burst × interval`` ahead of now. All arithmetic is in integer microseconds, the same
in Python and in Lua, so both stores give identical answers.

Stores:

* **Redis** (when the app has a Redis client): one atomic Lua script per request
  (EVALSHA; reloaded by redis-py after a Redis restart), so every replica draws from
  the same bucket. Keys are ``<namespace>:ratelimit:{family}:{client}`` (the cache
  policy's namespace: deployments sharing a Redis never share buckets) and expire when the
  bucket would be full again, so idle clients cost nothing. Time is the Redis server's
  (``TIME``), so replicas with skewed clocks still agree; a test may pass a ``clock``.
  Each call goes through the app's ``RedisGuard`` (shared circuit breaker) with its
  own, tighter time bound (``redis_timeout_ms``).
* **Memory** (no Redis): a dict per process, pruned when it grows past
  ``max_memory_buckets`` (expired buckets first, then the least recently used).

Fail open: when Redis is down, slow or its breaker is open, the request is allowed,
counted in ``stats()["failed_open"]``, and one warning is logged per outage (one info
line when limits apply again). Rate limiting never turns a Redis outage into errors.

Client identity: ``tok:`` + SHA-256 of the bearer token (truncated to 128 bits; the raw
token is never stored or logged), else ``ip:`` + the peer address (IPv6 grouped by
``ipv6_prefix_length``). X-Forwarded-For is read only with ``trust_forwarded_for``.
Any bearer token counts as an identity unless the limiter gets a
``token_is_valid`` check: without one, a client can rotate made-up tokens to get fresh
buckets, so pass a check once real API tokens exist.

WebSocket connections: ``connections`` (a ``ConnectionLimiter``) counts open
connections per client **in this process only** (a connection lives in one process, so
a replica's cap is per replica: with N replicas a client can hold up to N × max); the
realtime admission takes and frees these slots (none when the limits are disabled).

This module knows no web framework: ``app.web.rate_limit_hooks.install_rate_limits``
hooks a limiter into the Quart app (429 answers, RateLimit-* headers).
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import math
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from redis.asyncio import Redis

from app.backends.errors import TierUnavailable
from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace
from app.errors import ConfigError
from app.resilience.redis_breaker import redis_guard

__all__ = [
    "DEFAULT_RATE_LIMITS",
    "ConnectionLimiter",
    "Decision",
    "Family",
    "FamilyLimit",
    "RateLimiter",
    "RateLimits",
    "client_identity",
    "load_rate_limits",
    "parse_rate_limits",
]

log = logging.getLogger(__name__)

DEFAULT_RATE_LIMITS = Path(__file__).resolve().parent.parent.parent / "config" / "ratelimits.yaml"
MICROS = 1_000_000
_FAMILY_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


# -- configuration ----------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FamilyLimit(_Strict):
    """One route family: ``rate`` requests per second sustained, ``burst`` at once."""

    rate: float = Field(gt=0, le=MICROS)
    burst: int = Field(ge=1, le=MICROS)
    paths: tuple[str, ...] = Field(min_length=1)

    @field_validator("paths")
    @classmethod
    def _path_prefixes(cls, paths: tuple[str, ...]) -> tuple[str, ...]:
        normalized = []
        for path in paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ValueError(f"path {path!r} must start with /")
            if any(c in path for c in " ?#*<>"):
                raise ValueError(f"path {path!r} must be a plain prefix (no spaces, ?, #, *, <>)")
            trimmed = path.rstrip("/")
            if not trimmed:
                raise ValueError("path '/' would limit every route, /health included")
            normalized.append(trimmed)
        return tuple(normalized)


class WebsocketLimits(_Strict):
    """``/ws`` per client: open connections, handshakes (``handshake_rate`` per second
    sustained, ``handshake_burst`` at once; off with the file's ``enabled: false``),
    and per connection the client's messages (``message_rate``/``message_burst``)."""

    max_connections_per_client: int = Field(default=5, ge=1, le=10_000)
    handshake_rate: float = Field(default=1.0, gt=0, le=MICROS)
    handshake_burst: int = Field(default=10, ge=1, le=MICROS)
    message_rate: float = Field(default=5.0, gt=0, le=MICROS)
    message_burst: int = Field(default=20, ge=1, le=MICROS)


class RateLimits(_Strict):
    """The validated contents of ``config/ratelimits.yaml``."""

    enabled: bool = True
    trust_forwarded_for: bool = False
    proxy_hops: int = Field(default=1, ge=1, le=10)
    ipv6_prefix_length: int = Field(default=64, ge=32, le=128)
    redis_timeout_ms: float = Field(default=100, gt=0, le=5000)
    max_memory_buckets: int = Field(default=100_000, ge=100, le=10_000_000)
    websocket: WebsocketLimits = WebsocketLimits()
    families: dict[str, FamilyLimit] = Field(default_factory=dict)

    @field_validator("families")
    @classmethod
    def _family_names(cls, families: dict[str, FamilyLimit]) -> dict[str, FamilyLimit]:
        for name in families:
            if not _FAMILY_NAME.match(str(name)):
                raise ValueError(
                    f"family name {name!r} must be lower-case letters, digits, _ or - "
                    "(starting with a letter, at most 32)"
                )
        return families

    @model_validator(mode="after")
    def _each_path_once(self) -> RateLimits:
        owner: dict[str, str] = {}
        for name, family in self.families.items():
            for path in family.paths:
                if path in owner:
                    raise ValueError(
                        f"path {path} is listed by both {owner[path]} and {name}; "
                        "a path prefix belongs to one family"
                    )
                owner[path] = name
        return self


def parse_rate_limits(data: Any, source: str = "rate limits") -> RateLimits:
    """Validates already-parsed YAML; raises ConfigError naming ``source`` and the field."""
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration: {source} must hold a mapping")
    try:
        return RateLimits.model_validate(data)
    except ValidationError as error:
        problem = _describe(error)
    raise ConfigError(f"invalid configuration: {source}: {problem}")


def _describe(error: ValidationError) -> str:
    """``families.data.rate=-1: Input should be greater than 0`` (the first problem)."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        return f"unknown setting {where}"
    message = str(first["msg"]).removeprefix("Value error, ")
    given = first.get("input")
    shown = "" if isinstance(given, dict | list | tuple) else f"={given!r}"
    return f"{where}{shown}: {message}"


def load_rate_limits(path: Path | str | None = None) -> RateLimits:
    """Reads and validates the YAML file (default ``config/ratelimits.yaml``) once, at
    start-up. Raises ConfigError with one message naming the file and the problem."""
    path = Path(path) if path is not None else DEFAULT_RATE_LIMITS
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as error:
        raise ConfigError(f"invalid configuration: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid configuration: {path} is not valid YAML: {error}") from None
    return parse_rate_limits(data if data is not None else {}, str(path))


# -- buckets ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Family:
    """A family's limit as the hot path uses it (integer microseconds)."""

    name: str
    rate: float
    burst: int
    interval_us: int  # one request's worth of time: 1 / rate
    window_us: int  # burst × interval: how far ahead the TAT may run

    @classmethod
    def of(cls, name: str, limit: FamilyLimit) -> Family:
        interval = max(1, round(MICROS / limit.rate))
        return cls(name, limit.rate, limit.burst, interval, interval * limit.burst)

    @property
    def description(self) -> str:
        return f"{self.name}: {self.rate:g} requests/s, burst {self.burst}"


@dataclass(frozen=True, slots=True)
class Decision:
    """One request's verdict. Times in seconds; ``reset``: until the bucket is full."""

    allowed: bool
    family: Family
    remaining: int
    retry_after: float
    reset: float

    @property
    def retry_after_seconds(self) -> int:
        """Whole seconds, at least 1 (the Retry-After header)."""
        return max(1, math.ceil(self.retry_after))

    def headers(self) -> dict[str, str]:
        return {
            "RateLimit-Limit": str(self.family.burst),
            "RateLimit-Remaining": str(self.remaining),
            "RateLimit-Reset": str(math.ceil(self.reset)),
        }


def _verdict(
    family: Family, allowed: int, remaining: int, retry_us: int, reset_us: int
) -> Decision:
    return Decision(bool(allowed), family, int(remaining), retry_us / MICROS, reset_us / MICROS)


def gcra(tat: int | None, now: int, family: Family) -> tuple[int | None, Decision]:
    """One step of GCRA: (the TAT to store, or None when denied; the decision)."""
    tat = now if tat is None or tat < now else tat
    new_tat = tat + family.interval_us
    ahead = new_tat - now
    if ahead > family.window_us:
        return None, _verdict(family, 0, 0, ahead - family.window_us, tat - now)
    remaining = (family.window_us - ahead) // family.interval_us
    return new_tat, _verdict(family, 1, remaining, 0, ahead)


class _Store(Protocol):
    name: str

    async def hit(self, key: str, family: Family) -> Decision: ...


class MemoryBuckets:
    """Buckets of this process. Never awaits while deciding, so needs no lock."""

    name = "memory"

    def __init__(self, clock: Callable[[], float], max_buckets: int = 100_000) -> None:
        self._clock = clock
        self._max = max_buckets
        self._tats: dict[str, int] = {}

    def __len__(self) -> int:
        return len(self._tats)

    def __contains__(self, key: str) -> bool:
        return key in self._tats

    async def hit(self, key: str, family: Family) -> Decision:
        now = round(self._clock() * MICROS)
        tat = self._tats.pop(key, None)  # re-inserted at the end: the dict's order is recency
        new_tat, decision = gcra(tat, now, family)
        if new_tat is not None:
            tat = new_tat
        if tat is not None:
            self._tats[key] = tat
            if len(self._tats) > self._max:
                self._prune(now)
        return decision

    def _prune(self, now: int) -> None:
        """Drop full buckets (TAT in the past); then, under a flood of new clients, the
        least recently used until 90 % of the bound (those clients start afresh)."""
        self._tats = {key: tat for key, tat in self._tats.items() if tat > now}
        excess = len(self._tats) - int(self._max * 0.9)
        if excess > 0:
            for key in list(self._tats)[:excess]:
                del self._tats[key]


# KEYS[1] bucket; ARGV: interval µs, burst, now µs ("" → the server's clock).
# Returns {allowed, remaining, retry_after µs, reset µs}. Numbers are written with %d:
# Lua would print a float TAT with 14 significant digits and lose the microseconds.
GCRA_SCRIPT = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
if not now then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000000 + tonumber(t[2])
end
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local new_tat = tat + interval
local ahead = new_tat - now
local window = burst * interval
if ahead > window then
  return {0, 0, ahead - window, tat - now}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil(ahead / 1000))
return {1, math.floor((window - ahead) / interval), 0, ahead}
"""


class RedisBuckets:
    """Buckets shared by every replica, one atomic script call per request."""

    name = "redis"

    def __init__(
        self,
        redis: Redis,
        guard: RedisGuard,
        timeout_seconds: float,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._redis = redis
        self._script = redis.register_script(GCRA_SCRIPT)
        self._guard = guard
        self._timeout = timeout_seconds
        self._clock = clock
        self.counters = OpCounters()

    async def hit(self, key: str, family: Family) -> Decision:
        """Raises TierUnavailable when Redis cannot answer within the bound."""
        now = "" if self._clock is None else str(round(self._clock() * MICROS))
        args: list[int | str] = [family.interval_us, family.burst, now]
        result = await self._guard.run(
            lambda: self._script(keys=[key], args=args, client=self._redis),
            "rate limit",
            self.counters,
            timeout_seconds=self._timeout,
        )
        return _verdict(family, *(int(x) for x in result))


# -- identity ---------------------------------------------------------------------------


def token_id(token: str) -> str:
    return "tok:" + hashlib.sha256(token.encode()).hexdigest()[:32]


def client_identity(
    authorization: str | None,
    remote_addr: str | None,
    forwarded_for: str | None = None,
    *,
    trust_forwarded_for: bool = False,
    proxy_hops: int = 1,
    ipv6_prefix_length: int = 64,
    token_is_valid: Callable[[str], bool] | None = None,
) -> str:
    """``tok:<sha256 prefix>`` for a bearer token, else ``ip:<address>``."""
    if authorization:  # "Bearer <token>", blanks (spaces or tabs) as the auth guard allows
        scheme, _, token = authorization.strip().replace("\t", " ").partition(" ")
        token = token.strip()
        bearer = scheme.lower() == "bearer" and bool(token)
        if bearer and (token_is_valid is None or token_is_valid(token)):
            return token_id(token)
    address = remote_addr
    if trust_forwarded_for and forwarded_for:
        hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
        if hops:
            address = hops[-min(proxy_hops, len(hops))]
    return "ip:" + _normalize_ip(address, ipv6_prefix_length)


def _normalize_ip(address: str | None, ipv6_prefix_length: int) -> str:
    if not address:
        return "unknown"
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return address.strip()[:64]  # not an IP (a unix socket path, a proxy's token)
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        if ipv6_prefix_length < 128:
            return str(ipaddress.ip_network(f"{ip}/{ipv6_prefix_length}", strict=False))
    return str(ip)


# -- WebSocket connections --------------------------------------------------------------


class ConnectionLimiter:
    """Open connections per client, counted in this process."""

    def __init__(self, max_per_client: int) -> None:
        if max_per_client < 1:
            raise ValueError(f"max_per_client must be >= 1, not {max_per_client}")
        self.max_per_client = max_per_client
        self._open: dict[str, int] = {}
        self.rejected = 0

    def acquire(self, client_id: str) -> bool:
        count = self._open.get(client_id, 0)
        if count >= self.max_per_client:
            self.rejected += 1
            return False
        self._open[client_id] = count + 1
        return True

    def release(self, client_id: str) -> None:
        """Frees one slot; releasing a client with none open does nothing."""
        count = self._open.get(client_id, 0)
        if count <= 1:
            self._open.pop(client_id, None)
        else:
            self._open[client_id] = count - 1

    def open_connections(self, client_id: str) -> int:
        return self._open.get(client_id, 0)

    @property
    def clients(self) -> int:
        return len(self._open)


# -- the limiter ------------------------------------------------------------------------


class RateLimiter:
    """Decides per (family, client); ``app.web.rate_limit_hooks`` hooks it into an app.

    ``redis``: the app's client (buckets shared by replicas) or None (this process).
    ``guard``: the app's RedisGuard, so one breaker covers every use of Redis.
    ``clock``: only for tests (epoch seconds); by default Redis's or a monotonic clock.
    ``token_is_valid``: bearer tokens it rejects are ignored (the client is its IP).
    ``keyspace``: the deployment's namespace, which every Redis bucket key carries;
    required with ``redis`` (ValueError without).
    """

    def __init__(
        self,
        limits: RateLimits,
        redis: Redis | None = None,
        *,
        guard: RedisGuard | None = None,
        clock: Callable[[], float] | None = None,
        token_is_valid: Callable[[str], bool] | None = None,
        keyspace: Keyspace | None = None,
    ) -> None:
        if redis is not None and keyspace is None:
            raise ValueError("rate limits in Redis need the deployment's keyspace")
        self.limits = limits
        self._keyspace = keyspace or Keyspace("")  # in-process buckets: no namespace
        self.families = {name: Family.of(name, f) for name, f in limits.families.items()}
        self._prefixes = {
            path: self.families[name] for name, f in limits.families.items() for path in f.paths
        }
        self._token_is_valid = token_is_valid
        self.store: _Store
        if redis is not None:
            timeout = limits.redis_timeout_ms / 1000
            guard = guard or redis_guard(timeout_seconds=timeout)
            self.store = RedisBuckets(redis, guard, timeout, clock)
        else:
            self.store = MemoryBuckets(clock or time.monotonic, limits.max_memory_buckets)
        self.connections = ConnectionLimiter(limits.websocket.max_connections_per_client)
        self.allowed = 0
        self.limited = 0
        self.limited_by_family: Counter[str] = Counter()  # 429s by route family (metrics)
        self.failed_open = 0
        self._failing_open = False

    def family_for(self, path: str) -> Family | None:
        """The family of the most specific configured prefix of ``path``, or None."""
        while path:
            family = self._prefixes.get(path)
            if family is not None:
                return family
            path = path[: path.rfind("/")]
        return None

    def identify(self, headers: Any, remote_addr: str | None) -> str:
        """The client id of a request or WebSocket (anything with headers)."""
        return client_identity(
            headers.get("Authorization"),
            remote_addr,
            headers.get("X-Forwarded-For"),
            trust_forwarded_for=self.limits.trust_forwarded_for,
            proxy_hops=self.limits.proxy_hops,
            ipv6_prefix_length=self.limits.ipv6_prefix_length,
            token_is_valid=self._token_is_valid,
        )

    def key(self, family: Family, client_id: str) -> str:
        """The bucket's key: ``<namespace>:ratelimit:<family>:<client>``."""
        return self._keyspace.name("ratelimit", family.name, client_id)

    async def check(self, client_id: str, family: Family) -> Decision | None:
        """Counts one request. None: not decided (Redis unavailable) and so allowed."""
        try:
            decision = await self.store.hit(self.key(family, client_id), family)
        except TierUnavailable as exc:
            self.failed_open += 1
            if not self._failing_open:
                self._failing_open = True
                log.warning("rate limits not enforced while Redis is unavailable: %s", exc)
            return None
        if self._failing_open:
            self._failing_open = False
            log.info("rate limits enforced again (Redis is back)")
        if decision.allowed:
            self.allowed += 1
        else:
            self.limited += 1
            self.limited_by_family[family.name] += 1
        return decision

    def stats(self) -> dict[str, Any]:
        stats: dict[str, Any] = {
            "enabled": self.limits.enabled,
            "store": self.store.name,
            "allowed": self.allowed,
            "limited": self.limited,
            "failed_open": self.failed_open,
            "websocket_clients": self.connections.clients,
            "websocket_rejected": self.connections.rejected,
        }
        if isinstance(self.store, RedisBuckets):
            stats["redis"] = self.store.counters.as_dict()
        return stats
