"""Stopping background tasks for sure.

``task.cancel(); await task`` can hang: Python 3.11's ``asyncio.wait_for`` — which
redis-py's socket writes use — drops a cancellation that arrives as its operation
completes, and a task looping on Redis calls then runs on (its ``await`` never returns).
``cancel_and_wait`` cancels again until the tasks have ended.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable
from typing import Any

log = logging.getLogger(__name__)

RECANCEL_SECONDS = 1.0


async def cancel_and_wait(
    tasks: Iterable[asyncio.Future[Any] | None], recancel_seconds: float = RECANCEL_SECONDS
) -> None:
    """Cancels every task (None entries are skipped) and returns once all have ended,
    cancelling again every ``recancel_seconds`` those still running (each time with a
    warning naming them). The tasks' outcomes (results, exceptions, the cancellation)
    are not raised: their owners record what matters. Raises CancelledError when the
    caller itself is cancelled (the tasks stay cancelled)."""
    pending = {task for task in tasks if task is not None and not task.done()}
    for task in pending:
        task.cancel()
    while pending:
        done, pending = await asyncio.wait(pending, timeout=recancel_seconds)
        for task in done:  # retrieved, so that none is reported as never retrieved
            if not task.cancelled():
                task.exception()
        if pending:
            names = ", ".join(sorted(_name(task) for task in pending))
            log.warning("cancelled tasks still running (a lost cancellation); again: %s", names)
            for task in pending:
                task.cancel()


def _name(task: asyncio.Future[Any]) -> str:
    return task.get_name() if isinstance(task, asyncio.Task) else repr(task)
