"""A server's collector child dies with its server (``supervisor._die_with_parent``):
armed before the child's program runs, and a server already gone by then (killed
between the fork and the arming, so no signal will come) ends the child at once. The
second case left children running for good on a busy machine."""

from __future__ import annotations

import functools
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from app.main.supervisor import _die_with_parent
from tests.support.serve import alive

WAIT_SECONDS = 30.0  # bounds every wait: generous for a busy machine


def test_a_child_whose_server_is_already_gone_ends_before_its_program_runs(
    tmp_path: Path,
) -> None:
    ran = tmp_path / "ran"
    not_its_parent = os.getpid() + 1  # any process but this one (the child's parent)
    child = subprocess.Popen(
        [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"],
        preexec_fn=functools.partial(_die_with_parent, not_its_parent),
    )
    assert child.wait(timeout=WAIT_SECONDS) == 1
    assert not ran.exists()


def test_a_child_runs_while_its_server_lives(tmp_path: Path) -> None:
    ran = tmp_path / "ran"
    child = subprocess.Popen(
        [sys.executable, "-c", f"open({str(ran)!r}, 'w').close()"],
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),
    )
    assert child.wait(timeout=WAIT_SECONDS) == 0
    assert ran.exists()


# A stand-in server: starts a sleeping child as the supervisor does, prints its pid,
# then waits to be killed.
SERVER = textwrap.dedent(
    """
    import functools, os, subprocess, sys, time
    from app.main.supervisor import _die_with_parent
    child = subprocess.Popen(
        [sys.executable, "-c", "import time; time.sleep(120)"],
        preexec_fn=functools.partial(_die_with_parent, os.getpid()),
    )
    print(child.pid, flush=True)
    time.sleep(120)
    """
)


def test_a_child_gets_sigterm_when_its_server_is_killed() -> None:
    root = Path(__file__).resolve().parents[2]
    server = subprocess.Popen(
        [sys.executable, "-c", SERVER], stdout=subprocess.PIPE, text=True, cwd=root
    )
    try:
        assert server.stdout is not None
        child = int(server.stdout.readline())
        assert alive(child)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=WAIT_SECONDS)
    deadline = time.monotonic() + WAIT_SECONDS
    while alive(child):
        assert time.monotonic() < deadline, "the child outlived its killed server"
        time.sleep(0.05)
