"""The test servers' port picker: outside the kernel's ephemeral range, one share per
test worker, never a port something holds."""

from __future__ import annotations

import os
import random
import socket
from pathlib import Path

import pytest

from tools.ports import (
    SMALLEST_POOL,
    PortPicker,
    bindable,
    ephemeral_range,
    free_port,
    pool,
    share,
)


def test_the_ephemeral_range_is_read_from_the_kernel_or_defaults(tmp_path: Path) -> None:
    written = tmp_path / "range"
    written.write_text("40000\t50000\n")
    assert ephemeral_range(written) == (40000, 50000)
    written.write_text("garbage\n")
    assert ephemeral_range(written) == (10000, 65535)  # unknown: no pool is safe
    assert ephemeral_range(tmp_path / "missing") == (10000, 65535)
    assert len(pool(ephemeral_range(written))) == 0


@pytest.mark.parametrize(
    ("ephemeral", "expected"),
    [
        ((32768, 60999), range(10000, 32768)),  # Linux's default: the stretch below
        ((10000, 20000), range(20001, 65536)),  # low: the stretch above
        ((1024, 65535), range(10000, 10000)),  # no room: empty
        ((1024, 4999), range(10000, 65536)),  # never below 10000 (Redis, 8003, …)
    ],
)
def test_the_pool_lies_outside_the_ephemeral_range(
    ephemeral: tuple[int, int], expected: range
) -> None:
    assert pool(ephemeral) == expected


def test_each_worker_has_its_own_share() -> None:
    ports = range(10000, 32768)
    shares = [share(ports, f"gw{index}", "4") for index in range(4)]
    assert all(len(part) == len(ports) // 4 for part in shares)
    assert len(set().union(*map(set, shares))) == sum(map(len, shares))  # disjoint
    assert all(set(part) <= set(ports) for part in shares)
    assert share(ports, None, None) == ports  # outside pytest-xdist: the whole pool
    assert share(ports, "master", "4") == ports
    assert share(ports, "gw1", "four") == ports  # a count that is no number: all
    assert share(ports, "gw4", "4") == shares[0]  # xdist's replacement for a crashed gw0


def test_the_picker_skips_a_port_something_holds() -> None:
    held, bound_only = socket.socket(), socket.socket()
    try:
        held.bind(("127.0.0.1", free_port()))
        held.listen()
        bound_only.bind(("127.0.0.1", free_port()))  # bound, not listening: taken too
        taken = {held.getsockname()[1], bound_only.getsockname()[1]}
        free = free_port()
        candidates = sorted(taken | {free})
        ports = range(candidates[0], candidates[-1] + 1)
        picker = PortPicker(ports, random.Random(0))
        seen = {picker.take() for _ in range(len(ports))}
        assert taken.isdisjoint(seen)
        assert free in seen
    finally:
        held.close()
        bound_only.close()


def test_the_picker_names_a_pool_with_nothing_free() -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", free_port()))
        port = held.getsockname()[1]
        with pytest.raises(OSError, match="taken"):
            PortPicker(range(port, port + 1)).take()


def test_free_ports_come_from_this_workers_share_outside_the_ephemeral_range() -> None:
    low, high = ephemeral_range()
    mine = share(
        pool((low, high)),
        os.environ.get("PYTEST_XDIST_WORKER"),
        os.environ.get("PYTEST_XDIST_WORKER_COUNT"),
    )
    ports = [free_port() for _ in range(50)]
    if len(mine) < SMALLEST_POOL:  # a machine without room outside: the kernel's choice
        assert all(low <= port <= high for port in ports)
        return
    assert len(set(ports)) == 50  # in turn: no port handed out twice in a row
    assert all(port in mine and not low <= port <= high for port in ports)
    assert all(10000 <= port <= 65535 for port in ports)


def test_a_port_with_a_connection_still_closing_is_skipped() -> None:
    """The servers bind with SO_REUSEADDR and could take such a port; the picker, which
    binds without, leaves it alone (a connection in TIME_WAIT on it)."""
    port = free_port()
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", port))
        listener.listen()
        client = socket.create_connection(("127.0.0.1", port))
        accepted, _ = listener.accept()
        accepted.close()  # the side closing first keeps TIME_WAIT on the port
        client.close()
    assert not bindable(port)
    picker = PortPicker(range(port, port + 1))
    with pytest.raises(OSError, match="taken"):
        picker.take()
