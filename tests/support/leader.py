"""A ``LeaderLease`` in a process of its own, for the tests that kill or freeze a leader.

``python -m tests.support.leader REDIS_URL NAMESPACE TTL_SECONDS RENEW_EVERY`` campaigns
for the lease ``collector`` and prints one line per event on stdout,
``<event> <pid> <fence>``: ``campaigning`` (fence 0) once at start, ``elected`` and
``deposed`` for each term, ``published`` / ``refused`` for each fenced write it makes
while leading (every ``RENEW_EVERY / 4`` s: ``<namespace>:elected`` = ``"<pid> <fence>"``
and the same message on the channel ``<namespace>:leader``), ``stopped`` (fence 0) when
it has resigned. SIGTERM resigns (releases the lease) and exits 0; SIGKILL leaves the
lease to expire; SIGSTOP/SIGCONT freeze and wake it.

``LeaderProcess`` runs one from a test and collects its lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

from redis.asyncio import Redis

from app.backends.connection import connect_redis
from app.backends.errors import TierUnavailable, is_connection_failure
from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.backends.lease import LeaderLease
from app.backends.locks import LockLease, RedisLock
from app.resilience.breaker import CircuitBreaker
from app.resilience.redis_breaker import redis_breaker_config

# Patient with a busy test machine: a slow call is not a failure here.
TIMEOUT_SECONDS = 2.0
ROOT = Path(__file__).resolve().parents[2]


def say(event: str, fence: int = 0) -> None:
    print(f"{event} {os.getpid()} {fence}", flush=True)


def patient_lock(url: str, namespace: str) -> tuple[RedisLock, Redis]:
    """A lock in ``namespace`` on a client of its own (returned too, to close) whose
    breaker never counts a slow call as a failure, so a busy machine cannot open it;
    Redis down still does."""
    client = connect_redis(url, TIMEOUT_SECONDS)
    config = dataclasses.replace(redis_breaker_config(TIMEOUT_SECONDS), slow_call_seconds=math.inf)
    guard = RedisGuard(
        CircuitBreaker("redis", config=config, is_failure=is_connection_failure),
        timeout_seconds=TIMEOUT_SECONDS,
    )
    return RedisLock(client, guard=guard, keyspace=Keyspace(namespace)), client


async def main(url: str, namespace: str, ttl_seconds: float, renew_every: float) -> None:
    lock, client = patient_lock(url, namespace)
    lease = LeaderLease(
        lock,
        "collector",
        namespace=namespace,
        ttl_seconds=ttl_seconds,
        renew_every=renew_every,
    )

    async def lead(term: LockLease) -> None:
        say("elected", term.fence)
        value = f"{os.getpid()} {term.fence}"
        while True:
            with contextlib.suppress(TierUnavailable):
                applied = await lease.publish(
                    {f"{namespace}:elected": value},
                    ttl_ms=600_000,
                    channel=f"{namespace}:leader",
                    message=value,
                )
                say("published" if applied else "refused", term.fence)
            await asyncio.sleep(renew_every / 4)

    async def on_deposed(term: LockLease) -> None:
        say("deposed", term.fence)

    resigning: set[asyncio.Task[None]] = set()  # a reference while it runs
    asyncio.get_running_loop().add_signal_handler(
        signal.SIGTERM, lambda: resigning.add(asyncio.create_task(lease.resign()))
    )
    say("campaigning")
    try:
        await lease.run(lead, on_deposed)
    finally:
        await client.aclose()
    say("stopped")


class LeaderProcess:
    """One ``python -m tests.support.leader`` process; ``events`` are its lines so far
    as ``(event, fence)`` (a reader thread appends them)."""

    def __init__(self, url: str, namespace: str, ttl_seconds: float, renew_every: float):
        command = [sys.executable, "-m", "tests.support.leader", url, namespace]
        command += [str(ttl_seconds), str(renew_every)]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        self.process = subprocess.Popen(
            command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.events: list[tuple[str, int]] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.process.pid

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            event, _pid, fence = line.split()
            self.events.append((event, int(fence)))

    def count(self, event: str) -> int:
        """How many ``event`` lines it has printed."""
        return sum(1 for seen, _ in self.events if seen == event)

    def fences(self, event: str) -> list[int]:
        """The fences of its ``event`` lines, in order."""
        return [fence for seen, fence in self.events if seen == event]

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def close(self) -> int:
        """SIGKILL unless it has exited; waits for it; its exit code."""
        if self.process.poll() is None:
            self.process.kill()
        code = self.process.wait(timeout=10)
        self._reader.join(timeout=5)
        return code

    def wait(self, seconds: float) -> int:
        """Waits for it to exit by itself (raises subprocess.TimeoutExpired)."""
        code = self.process.wait(timeout=seconds)
        self._reader.join(timeout=5)
        return code


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])))
