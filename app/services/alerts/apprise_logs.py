"""Keeps channel secrets out of the logs Apprise (and the HTTP client under it) write.

Apprise logs through the ``apprise`` logger; on failure some plugins name the URL they
posted to (path tokens included) and urllib3 logs request lines with the path. While a
channel URL is in use (``masking``), every record of those loggers has each of the
URL's secret parts replaced by "…" before any handler sees it. ``captured`` collects
the (masked) WARNING+ messages Apprise logged in the current thread: the reason of a
failed send.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections import Counter
from collections.abc import Iterator

# The loggers Apprise's sends write to (a filter on a logger sees only its own records).
LOGGERS = ("apprise", "urllib3.connectionpool", "urllib3.connection", "urllib3.util.retry")

_lock = threading.Lock()
_active: Counter[str] = Counter()
_local = threading.local()


class _MaskSecrets(logging.Filter):
    """Rewrites a record's message with the active secrets masked; keeps every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        with _lock:
            secrets = sorted(_active, key=len, reverse=True)
        if secrets:
            try:
                message = record.getMessage()
            except Exception:  # a malformed record: drop its arguments, keep the format
                message, record.args = str(record.msg), ()
            for secret in secrets:
                message = message.replace(secret, "…")
            record.msg, record.args = message, ()
            record.exc_info, record.exc_text = None, None  # tracebacks may repeat the URL
        sink = getattr(_local, "sink", None)
        if sink is not None and record.levelno >= logging.WARNING:
            sink.append(record.getMessage())
        return True


_FILTER = _MaskSecrets()


def install() -> None:
    """Adds the masking filter to ``LOGGERS`` (once)."""
    for name in LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


@contextlib.contextmanager
def masking(secrets: list[str]) -> Iterator[None]:
    """While the block runs (in any thread), ``secrets`` are masked in those loggers."""
    install()
    with _lock:
        _active.update(secrets)
    try:
        yield
    finally:
        with _lock:
            _active.subtract(secrets)
            for secret in [s for s, n in _active.items() if n <= 0]:
                del _active[secret]


@contextlib.contextmanager
def captured() -> Iterator[list[str]]:
    """The WARNING+ messages (masked) logged by those loggers in this thread meanwhile."""
    sink: list[str] = []
    previous = getattr(_local, "sink", None)
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = previous
