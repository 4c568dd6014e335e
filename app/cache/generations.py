"""Family generations: a number per view family that is part of every physical key.

Invalidating a family bumps its generation, so every copy of it in every tier
(and every key of it, including ones this replica never saw) becomes
unreachable at once; old copies then expire by themselves. With Redis the
numbers live in one hash shared by the replicas (``<namespace>:generations``);
without it, in this process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from redis.asyncio import Redis
from redis.exceptions import RedisError

from app.backends.keyspace import Keyspace

log = logging.getLogger(__name__)


class Generations:
    """The generation numbers of one deployment; in this process alone unless
    ``shared`` puts them in Redis."""

    def __init__(self) -> None:
        self.redis: Redis | None = None
        self.hash_key = ""
        self._numbers: dict[str, int] = {}

    @classmethod
    def shared(cls, redis: Redis, keyspace: Keyspace) -> Generations:
        """Numbers kept in ``keyspace``'s ``generations`` hash, shared by the replicas."""
        generations = cls()
        generations.redis = redis
        generations.hash_key = keyspace.name("generations")
        return generations

    def get(self, family: str) -> int:
        return self._numbers.get(family, 0)

    def snapshot(self) -> dict[str, int]:
        return dict(self._numbers)

    def apply(self, numbers: Mapping[str, int]) -> None:
        """Adopts newer numbers (never goes back)."""
        for family, number in numbers.items():
            self._numbers[family] = max(self.get(family), int(number))

    async def load(self) -> None:
        """Reads the shared numbers (at start-up and after missed messages)."""
        if self.redis is None:
            return
        try:
            stored = await self.redis.hgetall(self.hash_key)
        except (RedisError, OSError) as error:
            log.warning("cannot read cache generations from redis: %s", error)
            return
        self.apply({_text(k): int(v) for k, v in stored.items()})

    async def bump(self, families: Iterable[str]) -> dict[str, int]:
        """Increments each family's generation, shared when Redis answers."""
        names = list(dict.fromkeys(families))
        if self.redis is not None:
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for family in names:
                        pipe.hincrby(self.hash_key, family, 1)
                    numbers = await pipe.execute()
                self.apply(dict(zip(names, numbers, strict=True)))
                return {f: self.get(f) for f in names}
            except (RedisError, OSError) as error:
                log.warning(
                    "redis down: invalidation of %s applies to this replica only (%s)",
                    ", ".join(names),
                    error,
                )
        self.apply({f: self.get(f) + 1 for f in names})
        return {f: self.get(f) for f in names}


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
