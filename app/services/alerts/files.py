"""The alert stores' JSON files without Redis: written atomically, recognised when
another process changed them, and set aside when they cannot be read."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

FileMark = tuple[int, int, int]  # (inode, size, mtime in ns)


def write_atomically(path: Path, data: bytes, *, private: bool = False) -> None:
    """Writes ``data`` to ``path`` atomically (temp file, fsync, rename, directory fsync);
    ``private``: the file readable and writable by its owner only (0600: it holds
    secrets). Raises OSError."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600 if private else 0o666)
    with os.fdopen(fd, "wb") as f:
        if private:
            os.fchmod(f.fileno(), 0o600)  # an older temp file may have other bits
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # make the rename itself durable
        fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def file_mark(path: Path) -> FileMark | None:
    """What changes when the file is written again (its inode, size and mtime), or None
    when there is no file."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


def set_aside(path: Path) -> Path:
    """Renames an unreadable file to ``<name>.corrupt-<epoch ms>`` (best effort: a
    failed rename is ignored) and returns that name, for the caller's warning."""
    aside = path.with_name(f"{path.name}.corrupt-{int(time.time() * 1000)}")
    with contextlib.suppress(OSError):
        path.replace(aside)
    return aside
