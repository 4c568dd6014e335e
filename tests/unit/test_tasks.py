"""cancel_and_wait: background tasks stop for sure, even one that loses a cancellation
(as Python 3.11's asyncio.wait_for in redis-py's socket writes can)."""

from __future__ import annotations

import asyncio
import logging

import pytest

from app.backends.tasks import cancel_and_wait


async def drops_first_cancellation(ticks: list[int]) -> None:
    """Loops like a Redis poller whose first cancellation is lost inside a call."""
    dropped = False
    while True:
        try:
            await asyncio.sleep(0.01)
        except asyncio.CancelledError:
            if dropped:
                raise
            dropped = True  # lost: the loop runs on
        ticks.append(1)


async def test_a_task_that_loses_its_cancellation_is_cancelled_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ticks: list[int] = []
    stubborn = asyncio.create_task(drops_first_cancellation(ticks), name="poller")
    await asyncio.sleep(0.05)
    with caplog.at_level(logging.WARNING, logger="app.backends.tasks"):
        await asyncio.wait_for(cancel_and_wait([stubborn], recancel_seconds=0.1), 30)
    assert stubborn.cancelled()
    assert "again: poller" in caplog.text  # named once it had to be cancelled again


async def test_tasks_end_their_failures_are_not_raised_and_none_is_skipped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    failed = asyncio.create_task(fails())
    await asyncio.sleep(0)
    sleeping = asyncio.create_task(asyncio.sleep(3600))
    finished = asyncio.create_task(asyncio.sleep(0))
    await finished
    with caplog.at_level(logging.WARNING, logger="app.backends.tasks"):
        await cancel_and_wait([failed, None, sleeping, finished])
    assert sleeping.cancelled() and finished.done() and not finished.cancelled()
    assert isinstance(failed.exception(), RuntimeError)
    assert "again" not in caplog.text  # each stopped at the first cancellation
