"""Versioned URLs of the built browser assets (``app/web/static/dist``).

A URL carries the file's content hash (``/static/dist/desktop.js?v=1a2b3c4d5e6f``), so
browsers may keep a file as long as the static max-age allows and a new build is
fetched at once: a changed file has a new URL."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

DIST = Path(__file__).parent / "static" / "dist"

# A static import between bundles as esbuild writes it (`from"./chunk-X.js"`,
# `import"./chunk-X.js"`); a dynamic `import("./x.js")` is not matched.
_STATIC_IMPORT = re.compile(r"""(?:\bfrom|\bimport)\s*["']\./([\w.-]+\.js)["']""")


class MissingAsset(RuntimeError):
    """A page needs a bundle that was not built (run ``make frontend``)."""


class AssetVersions:
    def __init__(self, directory: Path = DIST) -> None:
        self.directory = directory
        self._versions: dict[str, tuple[float, str]] = {}

    def url(self, name: str) -> str:
        return f"/static/dist/{name}?v={self.version(name)}"

    def version(self, name: str) -> str:
        """The file's content hash, re-read only when its modification time changes."""
        path = self.directory / name
        try:
            mtime = path.stat().st_mtime
        except FileNotFoundError:
            raise MissingAsset(f"{path.name} is not built: run `make frontend`") from None
        known = self._versions.get(name)
        if known is None or known[0] != mtime:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
            known = self._versions[name] = (mtime, digest)
        return known[1]

    def static_imports(self, name: str) -> list[str]:
        """The chunks ``name`` loads before it runs (its static imports, transitively), in
        a stable order: what a page needs besides its own bundle to start offline.
        Chunk names carry their content hash, so their URLs need no version."""
        found: list[str] = []
        pending = [name]
        while pending:
            path = self.directory / pending.pop()
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                raise MissingAsset(f"{path.name} is not built: run `make frontend`") from None
            for chunk in _STATIC_IMPORT.findall(text):
                if chunk not in found and chunk != name:
                    found.append(chunk)
                    pending.append(chunk)
        return sorted(found)
