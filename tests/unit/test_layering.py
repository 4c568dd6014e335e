"""The plan of the house, read from the imports: which packages of ``app/`` import
each other both ways. The list of such pairs may only shrink (issue 16 removes them
all): a new two-way pair fails here, and so does a pair removed but still listed."""

from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# Two-way pairs as they stand; each to be removed by moving code, never added to.
KNOWN_TWO_WAY = {
    ("cache", "observability"),
    ("market", "observability"),
    ("observability", "services"),
    ("observability", "web"),
    ("services", "settings"),
}


def package_of(path: Path) -> str:
    """``app/cache/l1.py`` → ``cache``; ``app/settings.py`` → ``settings``."""
    parts = path.relative_to(APP).with_suffix("").parts
    return parts[0]


def imported_modules(path: Path) -> set[str]:
    """The dotted names of the ``app`` modules ``path`` imports (``app.market.models``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(name for name in names if name.startswith("app."))
    return found


def imported_packages(path: Path) -> set[str]:
    """The ``app`` packages (or top-level modules) ``path`` imports, itself excluded."""
    found = {name.split(".")[1] for name in imported_modules(path)}
    return found - {package_of(path)}


def imports_by_package() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in APP.rglob("*.py"):
        graph.setdefault(package_of(path), set()).update(imported_packages(path))
    return graph


def two_way_pairs(graph: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {
        (a, b)
        for a, b in combinations(sorted(graph), 2)
        if b in graph[a] and a in graph.get(b, set())
    }


def test_the_reader_sees_every_import_form() -> None:
    """The graph is read right: known one-way dependencies, and a two-way pair is seen."""
    graph = imports_by_package()
    assert "resilience" in graph["cache"] and "market" in graph["services"]
    assert "backends" in graph["resilience"] and "resilience" not in graph["backends"]
    assert two_way_pairs({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == {("a", "b")}


def test_no_new_two_way_package_pair() -> None:
    pairs = two_way_pairs(imports_by_package())
    assert not pairs - KNOWN_TWO_WAY, f"new two-way imports: {sorted(pairs - KNOWN_TWO_WAY)}"
    gone = KNOWN_TWO_WAY - pairs
    assert not gone, f"no longer two-way (remove them from KNOWN_TWO_WAY): {sorted(gone)}"


def test_analytics_are_pure_and_settings_reach_only_the_roots() -> None:
    """``market/analytics`` imports only the market's models and itself; the market,
    the cache and resilience receive values, never ``app.settings``."""
    for path in (APP / "market" / "analytics").rglob("*.py"):
        allowed = ("app.market.models", "app.market.analytics")
        stray = {m for m in imported_modules(path) if not m.startswith(allowed)}
        assert not stray, f"{path.name} imports {sorted(stray)}"
    for package in ("market", "cache", "resilience"):
        for path in (APP / package).rglob("*.py"):
            assert "app.settings" not in imported_modules(path), f"{path} imports app.settings"
