"""A collector publishes views only while it leads: a refresh that runs while its term
is over (a deposed leader's refresh still in flight) lands nothing in the tiers."""

from __future__ import annotations

import asyncio

from app.backends.locks import LockLease
from app.main.collector_process import build_collector
from tests.conftest import ManualClock, eventually, make_settings
from tests.support.markets import CountingMarket


async def view_keys(redis_client, namespace: str) -> list[bytes]:
    return [key async for key in redis_client.scan_iter(match=f"{namespace}:view:*")]


async def test_only_the_leader_publishes_views(redis, redis_client, clock: ManualClock) -> None:
    settings = make_settings(
        VIRTUOSO_REDIS_URL=f"redis://{redis.address}/0",
        VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT",
    )
    parts = build_collector(settings, CountingMarket(clock), clock)
    namespace = parts.runtime.cache.policy.namespace
    await parts.runtime.start()
    await parts.pipeline.start()  # refreshing, but never elected
    leading = asyncio.Event()

    async def lead(_term: LockLease) -> None:
        leading.set()
        await asyncio.Event().wait()

    candidacy: asyncio.Task[None] | None = None
    try:
        assert await parts.pipeline.wait_ready(30)
        assert await view_keys(redis_client, namespace) == []
        assert parts.pipeline.publish.skipped >= 1  # type: ignore[attr-defined]
        candidacy = asyncio.create_task(parts.lease.run(lead))
        await asyncio.wait_for(leading.wait(), 30)
        await eventually(lambda: parts.lease.is_leader, seconds=10)
        await parts.pipeline.refresh(force=True)  # joins one begun before the term, if any
        await parts.pipeline.refresh(force=True)  # one of the leader's term
        assert await view_keys(redis_client, namespace) != []
    finally:
        await parts.lease.resign()
        if candidacy is not None:
            await asyncio.gather(candidacy, return_exceptions=True)
        await parts.pipeline.stop()
        await parts.runtime.close()
