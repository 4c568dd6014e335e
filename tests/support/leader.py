"""A ``LeaderLease`` in a process of its own, for the tests that kill a leader.

``python -m tests.support.leader REDIS_URL NAMESPACE TTL_SECONDS`` campaigns for the
lease ``collector`` and prints one line per event on stdout, ``<event> <pid> <fence>``:
``campaigning`` (fence 0) once at start, ``elected`` and ``deposed`` for each term,
``stopped`` (fence 0) when it has resigned. Each term first makes one fenced write,
``<namespace>:elected`` = ``"<pid> <fence>"``. SIGTERM resigns (releases the lease)
and exits 0; SIGKILL leaves the lease to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import sys

from app.backends.connection import connect_redis
from app.backends.errors import TierUnavailable, is_connection_failure
from app.backends.guard import RedisGuard
from app.backends.lease import LeaderLease
from app.backends.locks import LockLease, RedisLock
from app.resilience.breaker import CircuitBreaker
from app.resilience.redis_breaker import redis_breaker_config

# Patient with a busy test machine: a slow call is not a failure here.
TIMEOUT_SECONDS = 2.0


def say(event: str, fence: int = 0) -> None:
    print(f"{event} {os.getpid()} {fence}", flush=True)


async def main(url: str, namespace: str, ttl_seconds: float) -> None:
    client = connect_redis(url, TIMEOUT_SECONDS)
    config = dataclasses.replace(redis_breaker_config(TIMEOUT_SECONDS), slow_call_seconds=math.inf)
    guard = RedisGuard(
        CircuitBreaker("redis", config=config, is_failure=is_connection_failure),
        timeout_seconds=TIMEOUT_SECONDS,
    )
    lease = LeaderLease(
        RedisLock(client, guard=guard), "collector", namespace=namespace, ttl_seconds=ttl_seconds
    )

    async def on_elected(term: LockLease) -> None:
        say("elected", term.fence)
        with contextlib.suppress(TierUnavailable):
            value = f"{os.getpid()} {term.fence}"
            await lease.publish({f"{namespace}:elected": value}, ttl_ms=600_000)
        await asyncio.Event().wait()  # leads until deposed

    async def on_deposed(term: LockLease) -> None:
        say("deposed", term.fence)

    resigning: set[asyncio.Task[None]] = set()  # a reference while it runs
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: resigning.add(asyncio.create_task(lease.resign()))
    )
    say("campaigning")
    try:
        await lease.run(on_elected, on_deposed)
    finally:
        await client.aclose()
    say("stopped")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
