"""A serving process's own collector, run as a child process (``virtuoso collect``) and
kept running: restarted with back-off when it exits, stopped when the server stops.

The child inherits the server's environment and the settings flags it was started
with, so both see the same configuration, but for its own replica id (a server ignores
invalidations sent under its own) and no monitoring listener (the server's address); it
reaches the server through Redis like any collector (several servers' children elect
one leader among them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import functools
import logging
import os
import signal
import sys
import time
from collections.abc import Callable, Sequence

from app.backends.tasks import cancel_and_wait

log = logging.getLogger(__name__)

COLLECT = (sys.executable, "-m", "app", "collect")
STOP_GRACE_SECONDS = 10.0  # SIGTERM, then SIGKILL after this long
# The server's own listeners and name, not the child's.
CHILD_UNSET = frozenset({"VIRTUOSO_MONITORING_BIND", "VIRTUOSO_BIND", "VIRTUOSO_REPLICA_ID"})


class CollectorChild:
    """Runs ``command`` (default ``virtuoso collect`` with ``flags``) until ``stop``, as
    replica ``<replica_id>-collector`` when the server has a configured ``replica_id``, its
    metrics on ``monitoring_bind`` when given.

    A child that exits is started again after ``backoff`` seconds (doubling from the
    first value to the second while it keeps exiting; back to the first once it ran for
    ``stable_seconds``). ``restarts`` counts the restarts; ``pid`` is the running child's.
    """

    def __init__(
        self,
        flags: Sequence[str] = (),
        *,
        replica_id: str | None = None,
        monitoring_bind: str | None = None,
        command: Sequence[str] = COLLECT,
        backoff: tuple[float, float] = (1.0, 30.0),
        stable_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.argv = [*command, *flags]
        self.environ = {k: v for k, v in os.environ.items() if k not in CHILD_UNSET}
        if replica_id is not None:
            self.environ["VIRTUOSO_REPLICA_ID"] = f"{replica_id}-collector"
        if monitoring_bind is not None:
            self.environ["VIRTUOSO_MONITORING_BIND"] = monitoring_bind
        self.backoff = backoff
        self.stable_seconds = stable_seconds
        self.clock = clock
        self.restarts = 0
        self.failures = 0  # exits in a row without a stable run between them
        self.last_exit: int | None = None
        self._process: asyncio.subprocess.Process | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def pid(self) -> int | None:
        """The running child's process id, None between runs."""
        process = self._process
        return None if process is None or process.returncode is not None else process.pid

    def start(self) -> None:
        """Starts the child and keeps it running (once; later calls do nothing)."""
        if self._task is None:
            self._task = asyncio.create_task(self._keep_running(), name="collector-child")

    async def stop(self) -> None:
        """Stops keeping it running, then the child: SIGTERM (it resigns its lead), and
        SIGKILL after ``STOP_GRACE_SECONDS``."""
        task, self._task = self._task, None
        await cancel_and_wait([task])
        await self._terminate()

    async def _keep_running(self) -> None:
        delay = self.backoff[0]
        while True:
            started = self.clock()
            self._process = await asyncio.create_subprocess_exec(
                *self.argv,
                env=self.environ,
                preexec_fn=functools.partial(_die_with_parent, os.getpid()),
            )
            log.log(
                logging.DEBUG if self.failures > 1 else logging.INFO,
                "collector child started (pid %d)",
                self._process.pid,
            )
            self.last_exit = await self._process.wait()
            if self.clock() - started >= self.stable_seconds:
                delay, self.failures = self.backoff[0], 0
            self.failures += 1
            # One warning per crash loop; the loop itself shows in readiness (problems).
            log.log(
                logging.WARNING if self.failures == 1 else logging.DEBUG,
                "collector child exited with %s; restarting in %.0f s",
                self.last_exit,
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(self.backoff[1], delay * 2)
            self.restarts += 1

    def problems(self) -> list[str]:
        """Readiness reasons: the child keeps exiting (twice or more in a row)."""
        if self.failures < 2:
            return []
        return [
            f"collector child exited {self.failures} times in a row (last exit code "
            f"{self.last_exit}); restarting with back-off"
        ]

    async def _terminate(self) -> None:
        process = self._process
        if process is None or process.returncode is not None:
            return
        process.terminate()
        try:
            await asyncio.wait_for(process.wait(), STOP_GRACE_SECONDS)
        except TimeoutError:
            log.warning("collector child did not stop in %.0f s; killing it", STOP_GRACE_SECONDS)
            process.kill()
            await process.wait()


PR_SET_PDEATHSIG = 1  # prctl(2): the signal the child gets when its parent dies


def _die_with_parent(parent: int) -> None:
    """In the child before it runs: SIGTERM it when the server (pid ``parent``) dies, even
    by SIGKILL (Linux; elsewhere the child outlives a killed server until stopped by hand).
    A server that died between the fork and this call sent no signal (the death signal
    is armed for later deaths only): the child, already another's, exits here with 1."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent:
        os._exit(1)
