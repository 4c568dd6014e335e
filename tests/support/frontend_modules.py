"""Calls the page's own ES modules (frontend/src) under node, for unit tests of the
pure ones (number parsing and formatting, prices, candle cleaning, clocks).

JSON has no NaN or infinities: pass ``NAN``, ``INF`` or ``NEG_INF`` (strings the node
script turns into those numbers)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Any

FRONTEND = Path(__file__).resolve().parents[2] / "frontend"
NAN, INF, NEG_INF = "@NaN", "@Infinity", "@-Infinity"

_SCRIPT = (
    "const m = await import(`./src/${process.argv[1]}`);"
    "const calls = JSON.parse(process.argv[2]);"
    "const special = {'@NaN': NaN, '@Infinity': Infinity, '@-Infinity': -Infinity};"
    "const arg = (a) => (typeof a === 'string' && a in special ? special[a] : a);"
    "console.log(JSON.stringify(calls.map(([name, ...args]) => m[name](...args.map(arg)))));"
)


def call_module(module: str, calls: list[list[Any]], time_zone: str | None = None) -> list[Any]:
    """Each ``[function, *args]`` of ``frontend/src/<module>`` called under node, in
    order; their results (through JSON). ``time_zone``: node's local zone (TZ). Fails
    the test when node fails."""
    env = None if time_zone is None else {**os.environ, "TZ": time_zone}
    result = subprocess.run(
        ["node", "--input-type=module", "-e", _SCRIPT, module, json.dumps(calls)],
        cwd=FRONTEND,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)
