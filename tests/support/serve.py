"""A real ``virtuoso serve`` in a subprocess, for the tests (and the measurement
scripts) that need the process itself: start it with some variables, wait until it
is ready, stop it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any

SERVE = [sys.executable, "-m", "app", "serve"]


def get_json(url: str, timeout: float = 5) -> tuple[int, Any]:
    """(status, decoded JSON body) of a GET, error statuses included."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def start_serve(
    environ: Mapping[str, str],
    *,
    stderr: int | IO[Any] | None = subprocess.DEVNULL,
    args: tuple[str, ...] = (),
    cwd: Path | None = None,
) -> subprocess.Popen:
    """``virtuoso serve`` with this process's environment plus ``environ``; its log
    (stderr) goes to ``stderr`` (``subprocess.PIPE`` to read it, text mode)."""
    return subprocess.Popen(
        [*SERVE, *args], env=os.environ | dict(environ), stderr=stderr, text=True, cwd=cwd
    )


def wait_until_ready(base: str, process: subprocess.Popen, timeout: float = 60) -> None:
    """Polls ``base``/health/ready until 200; fails when the process exits first or
    ``timeout`` seconds pass (generous: a busy machine imports slowly)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}")
        try:
            if get_json(f"{base}/health/ready")[0] == 200:
                return
        except (urllib.error.URLError, ConnectionError, ValueError):
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready within {timeout} s")


def stop(process: subprocess.Popen, grace: float = 15) -> int:
    """SIGTERM, then SIGKILL after ``grace`` seconds; returns the exit code."""
    if process.poll() is None:
        process.terminate()
        try:
            return process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            process.kill()
    return process.wait(timeout=10)


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs (exists and is not a zombie), from /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False
