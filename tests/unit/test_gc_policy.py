"""The serving process's collector policy (``app.main.gc_policy``), in a child
interpreter: freezing is process-wide and would change the test process."""

from __future__ import annotations

import json
import subprocess
import sys

from app.main.gc_policy import SERVING_THRESHOLDS

PROBE = """
import gc, json
from app.main.gc_policy import tune_for_serving
before = gc.get_freeze_count()
kept = [[i] for i in range(1000)]  # containers alive at the call
tune_for_serving()
print(json.dumps({"before": before, "frozen": gc.get_freeze_count(),
                  "thresholds": gc.get_threshold(), "enabled": gc.isenabled()}))
"""


def test_what_exists_is_frozen_and_the_thresholds_are_the_serving_ones() -> None:
    result = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    found = json.loads(result.stdout)
    assert found["before"] == 0 and found["frozen"] >= 1000
    assert tuple(found["thresholds"]) == SERVING_THRESHOLDS
    assert found["enabled"]  # collections still happen, only less often
