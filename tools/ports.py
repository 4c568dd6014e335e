"""Free loopback ports for servers that a test, the bench or ``make stack`` starts as
other processes, chosen so that nothing else on the machine takes them before the
process binds.

Asking the kernel for a free port (binding port 0) and handing the number to a child
leaves a window: the port comes from the kernel's ephemeral range, and until the child
binds it another process's outgoing connection or bind(0) can take it (a replica of
the suite's local stack once exited because its monitoring port had gone that way,
with four test workers running). So the ports here come from outside the ephemeral
range (``/proc/sys/net/ipv4/ip_local_port_range``), where the kernel never picks, and
each pytest-xdist worker takes them from its own share of that pool, in turn, so two
workers never hand out the same port. A port some process already holds is skipped.
"""

from __future__ import annotations

import functools
import os
import random
import socket
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10000  # below: the well-known and commonly configured service ports
HIGHEST = 65535
SMALLEST_POOL = 200  # a worker's share; a smaller one: the kernel's port 0 instead


def ephemeral_range(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's ephemeral ports as (lowest, highest), both included. When the file
    cannot be read (not Linux), every port from LOWEST up counts as ephemeral: the
    range is unknown, so no pool is safe."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        return LOWEST, HIGHEST
    return low, high


def pool(ephemeral: tuple[int, int]) -> range:
    """The larger of the two stretches of [LOWEST, HIGHEST] outside ``ephemeral``."""
    low, high = ephemeral
    below = range(LOWEST, max(LOWEST, low))
    above = range(min(HIGHEST + 1, max(LOWEST, high + 1)), HIGHEST + 1)
    return below if len(below) >= len(above) else above


def share(ports: range, worker: str | None, workers: str | None) -> range:
    """The part of ``ports`` for the pytest-xdist worker ``worker`` (``gw3``) of
    ``workers`` (its count, as xdist sets ``PYTEST_XDIST_WORKER_COUNT``); all of them
    outside pytest-xdist. A worker that replaced a crashed one (xdist numbers it on,
    e.g. ``gw4`` of 4) takes the share its number wraps to, the crashed one's."""
    index = (worker or "").removeprefix("gw")
    if not index.isdigit() or workers is None or not workers.isdigit():
        return ports
    count = max(1, int(workers))
    size, slot = len(ports) // count, int(index) % count
    return ports[slot * size : (slot + 1) * size]


class PortPicker:
    """Hands out the ports of ``ports`` in turn from a random start (so two processes
    sharing a pool, e.g. a test and the bench script it runs, seldom meet), skipping
    any that cannot be bound now."""

    def __init__(self, ports: range, rng: random.Random | None = None) -> None:
        self.ports = ports
        self._next = (rng or random.Random()).randrange(len(ports)) if ports else 0

    def take(self) -> int:
        """A port nothing listens on or is bound to. Raises OSError when every port of
        the pool is taken."""
        for _ in range(len(self.ports)):
            port = self.ports[self._next]
            self._next = (self._next + 1) % len(self.ports)
            if bindable(port):
                return port
        raise OSError(f"every port of {self.ports} is taken")


def bindable(port: int) -> bool:
    """True when 127.0.0.1:port can be bound now (without SO_REUSEADDR: a port with
    connections still closing counts as taken)."""
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def kernel_port() -> int:
    """A port the kernel picks (from its ephemeral range)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@functools.cache
def _picker() -> PortPicker | None:
    ports = share(
        pool(ephemeral_range()),
        os.environ.get("PYTEST_XDIST_WORKER"),
        os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
    )
    return PortPicker(ports) if len(ports) >= SMALLEST_POOL else None


def free_port() -> int:
    """A loopback port free now, for a server another process will bind: outside the
    kernel's ephemeral range and this test worker's own (the kernel's choice when the
    machine leaves no room outside its ephemeral range)."""
    picker = _picker()  # built on first use: pytest-xdist names the worker before that
    return picker.take() if picker is not None else kernel_port()
