"""Where the outbox's deliveries live: Redis (here), or one JSON file next to
``alerts.json`` (``app.services.alerts.outbox_file``).

Redis key layout (``P`` = ``<namespace>:alerts``, the alert store's prefix)::

    P:outbox:records        hash    idempotency key → delivery JSON
    P:outbox:due            zset    key of each pending delivery, score its due time (ms)
    P:outbox:done           zset    key of each delivered or failed one, score when
    P:outbox:alert:<id>     set     the keys of an alert's deliveries

Each operation is one Lua script (atomic). A claim moves the claimed deliveries' due
time forward by the visibility timeout: a worker that dies mid-send leaves them to be
claimed again once it passes — never lost, possibly sent twice (the idempotency key
lets the receiver drop the repeat). At most ``max_pending`` deliveries wait: beyond,
a new delivery is stored as failed ("the outbox is full"), never dropped unseen; of the
finished ones the newest ``max_finished`` are kept.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Protocol, cast

import orjson
from redis.asyncio import Redis

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.services.alerts.delivery import PENDING, Delivery

log = logging.getLogger(__name__)

FULL_REASON = "the outbox is full ({} deliveries wait); this one was not queued"


class OutboxStore(Protocol):
    async def add(self, deliveries: Sequence[Delivery], now_ms: int) -> list[Delivery]: ...
    async def claim(self, now_ms: int, until_ms: int, limit: int) -> list[Delivery]: ...
    async def save(self, delivery: Delivery) -> None: ...
    async def of_alert(self, alert_id: str) -> list[Delivery]: ...
    async def pending_count(self) -> int: ...
    async def release_claims(self, now_ms: int) -> int: ...


def full(delivery: Delivery, now_ms: int, max_pending: int) -> Delivery:
    """``delivery`` refused by a full outbox: failed at once, with the reason."""
    return delivery.failed(now_ms, FULL_REASON.format(max_pending), attempted=False)


# KEYS: records, due, done. ARGV: cap, alert-index prefix, now, then per delivery: key,
# alert id, JSON, refused (full) JSON, due ms, pending (1/0). Returns key, "pending" |
# "full" | "done" pairs for the deliveries it stored (a key stored already is left alone).
_ADD = """
local cap = tonumber(ARGV[1])
local out = {}
for i = 4, #ARGV, 6 do
  local key = ARGV[i]
  if redis.call('HEXISTS', KEYS[1], key) == 0 then
    redis.call('SADD', ARGV[2] .. ARGV[i + 1], key)
    local how = 'done'
    if ARGV[i + 5] == '1' and redis.call('ZCARD', KEYS[2]) < cap then
      redis.call('HSET', KEYS[1], key, ARGV[i + 2])
      redis.call('ZADD', KEYS[2], ARGV[i + 4], key)
      how = 'pending'
    elseif ARGV[i + 5] == '1' then
      redis.call('HSET', KEYS[1], key, ARGV[i + 3])
      redis.call('ZADD', KEYS[3], ARGV[3], key)
      how = 'full'
    else
      redis.call('HSET', KEYS[1], key, ARGV[i + 2])
      redis.call('ZADD', KEYS[3], ARGV[3], key)
    end
    table.insert(out, key); table.insert(out, how)
  end
end
return out
"""

# KEYS: records, due. ARGV: now, until, limit. Returns the claimed records.
_CLAIM = """
local keys = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'LIMIT', 0, ARGV[3])
local out = {}
for _, key in ipairs(keys) do
  local record = redis.call('HGET', KEYS[1], key)
  if record then
    redis.call('ZADD', KEYS[2], ARGV[2], key)
    table.insert(out, record)
  else
    redis.call('ZREM', KEYS[2], key)
  end
end
return out
"""

# KEYS: records, due. ARGV: now. Every claimed delivery (due later than its own
# next attempt) is due at its own time again. Returns how many.
_RELEASE = """
local n = 0
for _, key in ipairs(redis.call('ZRANGEBYSCORE', KEYS[2], '(' .. ARGV[1], '+inf')) do
  local record = redis.call('HGET', KEYS[1], key)
  if record then
    local at = tonumber(cjson.decode(record)['next_attempt_at_ms'])
    if at < tonumber(redis.call('ZSCORE', KEYS[2], key)) then
      redis.call('ZADD', KEYS[2], at, key)
      n = n + 1
    end
  end
end
return n
"""

# KEYS: records, due, done. ARGV: key, JSON, pending (1/0), score, keep, alert prefix.
# A delivered record is never overwritten (a late worker's retry must not undo it);
# finished records beyond ``keep`` go, oldest first.
_SAVE = """
local old = redis.call('HGET', KEYS[1], ARGV[1])
if old and cjson.decode(old)['status'] == 'delivered' then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  local excess = redis.call('ZCARD', KEYS[3]) - tonumber(ARGV[5])
  if excess > 0 then
    for _, key in ipairs(redis.call('ZRANGE', KEYS[3], 0, excess - 1)) do
      local record = redis.call('HGET', KEYS[1], key)
      if record then redis.call('SREM', ARGV[6] .. cjson.decode(record)['alert_id'], key) end
      redis.call('HDEL', KEYS[1], key)
      redis.call('ZREM', KEYS[3], key)
    end
  end
end
return 1
"""


class RedisOutboxStore:
    """The deliveries in Redis (the alert store's connection, guard and keyspace); every
    call raises TierUnavailable while Redis is down."""

    def __init__(
        self,
        redis: Redis,
        guard: RedisGuard,
        keyspace: Keyspace,
        max_pending: int = 10_000,
        max_finished: int = 10_000,
    ) -> None:
        if max_pending < 1 or max_finished < 1:
            raise ValueError("max_pending and max_finished must be >= 1")
        self._redis, self._guard = redis, guard
        p = f"{keyspace.name('alerts')}:outbox"
        self._records, self._due, self._done = f"{p}:records", f"{p}:due", f"{p}:done"
        self._by_alert = f"{p}:alert:"
        self.max_pending, self.max_finished = max_pending, max_finished

    async def add(self, deliveries: Sequence[Delivery], now_ms: int) -> list[Delivery]:
        """Stores the deliveries not stored yet (a pending one as failed when the outbox
        is full) and returns them as stored."""
        if not deliveries:
            return []
        args: list[str | int | bytes] = [self.max_pending, self._by_alert, now_ms]
        by_key = {d.key: d for d in deliveries}
        for d in by_key.values():
            refused = full(d, now_ms, self.max_pending)
            pending = "1" if d.status == PENDING else "0"
            args += [d.key, d.alert_id, _dumps(d), _dumps(refused), d.next_attempt_at_ms, pending]
        keys = (self._records, self._due, self._done)
        raw = await self._guard.run(lambda: self._redis.eval(_ADD, 3, *keys, *args), "outbox add")
        pairs = [item.decode() if isinstance(item, bytes) else item for item in raw]
        stored = []
        for key, how in zip(pairs[::2], pairs[1::2], strict=True):
            d = by_key[key]
            stored.append(full(d, now_ms, self.max_pending) if how == "full" else d)
        return stored

    async def claim(self, now_ms: int, until_ms: int, limit: int) -> list[Delivery]:
        """Up to ``limit`` deliveries due at ``now_ms``, each now due at ``until_ms``."""
        raw = await self._guard.run(
            lambda: self._redis.eval(_CLAIM, 2, self._records, self._due, now_ms, until_ms, limit),
            "outbox claim",
        )
        return [_loads(r) for r in cast(list[bytes], raw)]

    async def save(self, delivery: Delivery) -> None:
        """Stores the delivery's new state (due again, or finished)."""
        pending = delivery.status == PENDING
        score = delivery.next_attempt_at_ms if pending else delivery.finished_at_ms or 0
        args = (delivery.key, _dumps(delivery), "1" if pending else "0", score)
        await self._guard.run(
            lambda: self._redis.eval(
                _SAVE, 3, self._records, self._due, self._done,
                *args, self.max_finished, self._by_alert,
            ),
            "outbox save",
        )  # fmt: skip

    async def of_alert(self, alert_id: str) -> list[Delivery]:
        """The alert's deliveries, by channel id."""

        async def read() -> list[bytes | None]:
            keys = await self._redis.smembers(self._by_alert + alert_id)
            if not keys:
                return []
            return cast(list[bytes | None], await self._redis.hmget(self._records, list(keys)))

        raw = await self._guard.run(read, "outbox of alert")
        return sorted((_loads(r) for r in raw if r is not None), key=lambda d: d.channel_id)

    async def pending_count(self) -> int:
        return int(await self._guard.run(lambda: self._redis.zcard(self._due), "ZCARD"))

    async def release_claims(self, now_ms: int) -> int:
        """Makes every claimed delivery due at its own time again (a new leader, whose
        predecessor's sends were cut off); returns how many."""
        released = await self._guard.run(
            lambda: self._redis.eval(_RELEASE, 2, self._records, self._due, now_ms),
            "outbox release",
        )
        return int(released)


def _dumps(delivery: Delivery) -> bytes:
    return orjson.dumps(delivery.to_dict())


def _loads(raw: bytes | str) -> Delivery:
    return Delivery.from_dict(orjson.loads(raw))
