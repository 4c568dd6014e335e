"""A stream reader's task stops when asked, even when the cancel was swallowed on the
way (Python 3.11's ``asyncio.wait_for`` returns a result that came with the cancel)."""

from __future__ import annotations

import asyncio

from app.market.sources.stream_batches import BatchedStream, Batching


class SwallowingStream(BatchedStream[str]):
    """Its watch ends normally when cancelled, as ``wait_for`` does when the awaited
    unsubscribe was answered in the same turn as the cancel."""

    async def _watch(self, batch: tuple[str, ...]) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            return

    async def _deliver(self, batch: tuple[str, ...], recovered: bool) -> None:
        return None


async def test_a_swallowed_cancel_still_stops_the_batch() -> None:
    stream = SwallowingStream(None, ["BTC/USDT"], Batching())
    stream.start()
    await asyncio.sleep(0)  # the task is in its watch
    stopping = asyncio.ensure_future(stream.stop())
    await asyncio.wait({stopping}, timeout=5)  # (wait_for would wait on a task that never ends)
    assert stopping.done()
    assert stream.deliveries == 1  # the swallowed cancel ended one watch, then the task
