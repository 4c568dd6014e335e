"""A distributed single-flight lock across replicas, with fencing tokens.

``acquire`` is one atomic script: when ``<namespace>:lock:<name>`` is free it takes
the next fence number from ``<namespace>:lock:<name>:fence`` and stores the token
``"<fence>:<random hex>"`` with ``PX ttl_ms``. Fences only grow: the counter never
drops below the server's clock in milliseconds, so even a Redis restart that lost
the counter hands out higher numbers. ``release`` and ``extend`` are compare-and-
delete / compare-and-pexpire scripts, so a holder whose lease expired (and was
taken over) cannot touch the new holder's lock: its release is a no-op that
returns False. ``write_if_current`` is the fence at the storage: it sets keys and
publishes a message in one script only while the lease still holds the lock, so a
holder that wakes up after losing it cannot overwrite or announce anything.

Every call raises ``TierUnavailable`` when Redis is down or slow, so a caller can
fall back to in-process single-flight. Like redis-py's lock, it is handed its client
(and the guard every call goes through); the cache's stampede protection and the
refresh coordination use it. The namespace is the deployment's (``Keyspace``): two
deployments sharing a Redis never hold each other's locks.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

from redis.asyncio import Redis

from app.backends.guard import OpCounters, RedisGuard
from app.backends.keyspace import Keyspace

FENCE_SUFFIX = ":fence"
FENCE_TTL_MS = 86_400_000  # the counter idles out after a day; the clock floor keeps fences rising

# KEYS[1] lock key, KEYS[2] fence key; ARGV[1] random id, ARGV[2] ttl ms, ARGV[3] fence ttl ms.
_ACQUIRE = """
if redis.call('EXISTS', KEYS[1]) == 1 then return false end
local fence = redis.call('INCR', KEYS[2])
local now = redis.call('TIME')
local floor = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
if fence < floor then
  fence = floor
  redis.call('SET', KEYS[2], string.format('%d', fence))
end
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[1], string.format('%d', fence) .. ':' .. ARGV[1], 'PX', ARGV[2])
return fence
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS[1] lock key, KEYS[2..] keys to set; ARGV[1] token, ARGV[2] px ms, ARGV[3] channel
# ('' for none), ARGV[4] message, ARGV[5..] the values of KEYS[2..] in order.
_WRITE_IF_CURRENT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 2, #KEYS do redis.call('SET', KEYS[i], ARGV[i + 3], 'PX', ARGV[2]) end
if ARGV[3] ~= '' then redis.call('PUBLISH', ARGV[3], ARGV[4]) end
return 1
"""

_EXTEND = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class LockLease:
    """Proof of holding lock ``name``; ``fence`` grows with every successful acquisition."""

    name: str
    token: str  # "<fence>:<random hex>", the value stored under the lock key
    fence: int


class RedisLock:
    """Non-blocking distributed locks: ``acquire`` either wins now or returns None."""

    def __init__(
        self,
        redis: Redis,
        *,
        guard: RedisGuard,
        keyspace: Keyspace,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``sleep`` waits between the polls of ``wait_for_release`` (tests record it)."""
        self._redis = redis
        self._sleep = sleep
        self._guard = guard
        self._prefix = keyspace.prefix("lock")
        self._acquire = redis.register_script(_ACQUIRE)  # EVALSHA, EVAL after a restart
        self._release = redis.register_script(_RELEASE)
        self._extend = redis.register_script(_EXTEND)
        self._write_if_current = redis.register_script(_WRITE_IF_CURRENT)
        self._counters = OpCounters()

    @property
    def counters(self) -> dict[str, int]:
        return self._counters.as_dict()

    def key(self, name: str) -> str:
        """The Redis key of lock ``name`` (its fence counter adds ``:fence``)."""
        return self._prefix + name

    async def acquire(self, name: str, ttl_ms: int) -> LockLease | None:
        """The lease when the lock was free, None when someone holds it. Never waits for it."""
        _check_ttl(ttl_ms)
        random_id = secrets.token_hex(12)
        key = self.key(name)
        fence = await self._guard.run(
            lambda: self._acquire(
                keys=[key, key + FENCE_SUFFIX], args=[random_id, int(ttl_ms), FENCE_TTL_MS]
            ),
            "lock acquire",
            self._counters,
        )
        if fence is None:
            return None
        return LockLease(name, f"{int(fence)}:{random_id}", int(fence))

    async def release(self, lease: LockLease) -> bool:
        """True when this lease still held the lock and it is now free; False for a stale lease."""
        deleted = await self._guard.run(
            lambda: self._release(keys=[self.key(lease.name)], args=[lease.token]),
            "lock release",
            self._counters,
        )
        return bool(deleted)

    async def extend(self, lease: LockLease, ttl_ms: int) -> bool:
        """Sets the remaining time to ``ttl_ms`` if the lease is still current; else False."""
        _check_ttl(ttl_ms)
        extended = await self._guard.run(
            lambda: self._extend(keys=[self.key(lease.name)], args=[lease.token, int(ttl_ms)]),
            "lock extend",
            self._counters,
        )
        return bool(extended)

    async def write_if_current(
        self,
        lease: LockLease,
        values: Mapping[str, bytes | str],
        ttl_ms: int,
        *,
        channel: str | None = None,
        message: bytes | str = b"",
    ) -> bool:
        """A fenced write: SET every key of ``values`` with ``PX ttl_ms`` and, with a
        ``channel``, PUBLISH ``message`` on it, all in one script and only while ``lease``
        still holds the lock. True when applied; False (nothing written) for a stale lease.

        Raises ValueError for a ``ttl_ms`` that is not positive, TierUnavailable when Redis
        fails.
        """
        _check_ttl(ttl_ms)
        keys = [self.key(lease.name), *values]
        args = [lease.token, int(ttl_ms), channel or "", message, *values.values()]
        applied = await self._guard.run(
            lambda: self._write_if_current(keys=keys, args=args),
            "lock fenced write",
            self._counters,
        )
        return bool(applied)

    async def is_current(self, lease: LockLease) -> bool:
        """True while this lease holds the lock (not expired, not taken over)."""
        value = await self._guard.run(
            lambda: self._redis.get(self.key(lease.name)), "lock check", self._counters
        )
        return value == lease.token.encode()

    async def is_locked(self, name: str) -> bool:
        exists = await self._guard.run(
            lambda: self._redis.exists(self.key(name)), "lock check", self._counters
        )
        return bool(exists)

    async def wait_for_release(
        self,
        name: str,
        timeout: float,  # noqa: ASYNC109 (a bound that returns False, not an error)
        *,
        first_delay: float = 0.005,
        max_delay: float = 0.1,
    ) -> bool:
        """Waits until nobody holds ``name``: True when it is free, False after ``timeout`` s.

        Polls EXISTS with a doubling delay capped at ``max_delay`` (so a waiter sees
        the release at most ``max_delay`` late). Raises TierUnavailable if Redis fails.
        """
        deadline = time.monotonic() + max(0.0, timeout)
        delay = first_delay
        while True:
            if not await self.is_locked(name):
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            await self._sleep(min(delay, remaining))
            delay = min(delay * 2, max_delay)


def _check_ttl(ttl_ms: int) -> None:
    if ttl_ms <= 0:
        raise ValueError(f"ttl_ms must be positive, not {ttl_ms}")
