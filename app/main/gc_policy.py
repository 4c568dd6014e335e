"""The serving process's garbage-collector policy: fewer, cheaper pauses of its loop.

A serving process holds its WebSocket clients' objects for hours (each connection's
stream, parser, tasks and queues: ≈ 220 objects, ≈ 290,000 live objects at 1,000
clients with the bench's endpoint), and CPython's collector walks all of them in every
full (generation-2) collection. Measured with ``bench/ws_fanout.py`` at 1,000 clients
(CPython's thresholds 700/10/10): three full collections in a 20-second run, 80–760 ms
each on the shared 2-core machine — every message published meanwhile waits for the
pause before its fan-out starts; they made the latency's tail, not the fan-out.

``tune_for_serving`` (call it once, after the application is built and before serving):

* ``gc.freeze()``: what exists then (modules, classes, the assembled application) is
  moved to the permanent generation, never walked again;
* thresholds ``SERVING_THRESHOLDS``: a young collection per 5,000 new container
  objects instead of 700 (most per-message and per-request objects die before it, so
  fewer are promoted into the old generations), a middle one every 5 young ones (it
  walks at most ≈ 25,000 objects), and a full one at most every 100 middle ones
  instead of 10. Garbage in reference cycles lives longer; everything else is freed
  by reference counting as before.
"""

from __future__ import annotations

import gc

SERVING_THRESHOLDS = (5_000, 5, 100)  # generation 0, 1, 2 (CPython's: 700, 10, 10)


def tune_for_serving() -> None:
    """Freezes what exists now and sets ``SERVING_THRESHOLDS`` (process-wide)."""
    gc.collect()  # what is garbage already is not frozen
    gc.freeze()
    gc.set_threshold(*SERVING_THRESHOLDS)
