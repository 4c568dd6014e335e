"""The plan of the house, read from the imports: which packages of ``app/`` import
each other both ways. The list of such pairs may only shrink (issue 16 removes them
all): a new two-way pair fails here, and so does a pair removed but still listed."""

from __future__ import annotations

import ast
from itertools import combinations
from pathlib import Path

APP = Path(__file__).resolve().parents[2] / "app"

# Two-way pairs as they stand: none left; a new one fails here.
KNOWN_TWO_WAY: set[tuple[str, str]] = set()


def package_of(path: Path) -> str:
    """``app/cache/l1.py`` → ``cache``; ``app/settings.py`` → ``settings``."""
    parts = path.relative_to(APP).with_suffix("").parts
    return parts[0]


def module_name(path: Path) -> str:
    """``app/market/sources/ccxt.py`` → ``app.market.sources.ccxt``."""
    parts = path.relative_to(APP.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, *, typing_only: bool = True) -> set[str]:
    """The dotted names of the ``app`` modules ``path`` imports (``app.market.models``),
    in every form: ``import app.x``, ``from app.x import y`` (``app.x.y`` too, as ``y``
    may be a module), ``from app import x`` and relative imports; inside functions too.
    ``typing_only=False`` leaves out what is imported under ``if TYPE_CHECKING:``."""
    return modules_in_source(path.read_text(encoding="utf-8"), module_name(path), typing_only)


def modules_in_source(source: str, module: str, typing_only: bool = True) -> set[str]:
    """:func:`imported_modules` of the text of module ``module`` (``app.cache.l1``)."""
    tree = ast.parse(source)
    skipped = set() if typing_only else _under_type_checking(tree)
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            base = _absolute(node, module)
            names = [base, *(f"{base}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        found.update(name for name in names if name.startswith("app."))
    return found


def _absolute(node: ast.ImportFrom, module: str) -> str:
    """The module a ``from … import`` names, relative ones resolved against ``module``
    (a package's ``__init__`` is named as the package, hence one level fewer)."""
    if not node.level:
        return node.module or ""
    package = module.split(".")
    is_package = (APP.parent / Path(*package) / "__init__.py").exists()
    base = package[: len(package) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _under_type_checking(tree: ast.Module) -> set[int]:
    """The ids of the nodes inside ``if TYPE_CHECKING:`` blocks (not their ``else``)."""
    return {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for inner in ast.walk(child)
    }


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
    """The graph is read right: known one-way dependencies, every import form, a
    two-way pair seen."""
    graph = imports_by_package()
    assert "resilience" in graph["cache"] and "market" in graph["services"]
    assert "backends" in graph["resilience"] and "resilience" not in graph["backends"]
    assert two_way_pairs({"a": {"b"}, "b": {"a", "c"}, "c": set()}) == {("a", "b")}
    forms = (
        "import app.web.api\n"
        "from app import settings\n"
        "from app.market import sources\n"
        "from ..cache import keys\n"
        "from . import hub\n"
        "def later():\n    from app.services.views import build\n"
        "if TYPE_CHECKING:\n    from app.state import ServiceState\n"
    )
    seen = modules_in_source(forms, "app.realtime.broker")
    assert {"app.web.api", "app.settings", "app.market.sources", "app.cache.keys"} <= seen
    assert {"app.realtime.hub", "app.services.views", "app.state"} <= seen
    assert "app.state" not in modules_in_source(forms, "app.realtime.broker", False)
    assert "app.cache.keys" in modules_in_source("from .. import keys", "app.cache.tiers.x")


def test_no_new_two_way_package_pair() -> None:
    pairs = two_way_pairs(imports_by_package())
    assert not pairs - KNOWN_TWO_WAY, f"new two-way imports: {sorted(pairs - KNOWN_TWO_WAY)}"
    gone = KNOWN_TWO_WAY - pairs
    assert not gone, f"no longer two-way (remove them from KNOWN_TWO_WAY): {sorted(gone)}"


def test_analytics_are_pure_and_settings_reach_only_the_roots() -> None:
    """``market/analytics`` imports only the market's models and itself; every package
    but the composition roots (``app/main``) receives values, never ``app.settings``."""
    analytics = list((APP / "market" / "analytics").rglob("*.py"))
    assert len(analytics) > 1, "app/market/analytics/ moved: this test reads nothing"
    for path in analytics:
        allowed = ("app.market.models", "app.market.analytics")
        stray = {m for m in imported_modules(path) if not m.startswith(allowed)}
        assert not stray, f"{path.name} imports {sorted(stray)}"
    values_only = ("market", "cache", "resilience", "backends", "services", "realtime", "web")
    for package in (*values_only, "observability"):
        assert (APP / package / "__init__.py").exists(), f"app/{package} moved"
        for path in (APP / package).rglob("*.py"):
            assert "app.settings" not in imported_modules(path), f"{path} imports app.settings"


# The design's "never" arrows (DESIGN.md, Layout): (importer prefix, forbidden prefixes).
NEVER = [
    ("app.web", ("app.market.sources", "app.main")),
    ("app.market.analytics", ("app.cache",)),
    ("app.cache", ("app.web", "app.main")),
    ("app.resilience", ("app.web", "app.main")),
    ("app.market.sources", ("app.cache",)),
    ("app.observability", ("app.web", "app.main", "app.services")),
    ("app.realtime", ("app.services", "app.main")),
    ("app.backends", ("app.",)),
    ("app.services", ("app.web", "app.realtime", "app.main")),
]


def test_no_arrow_the_design_forbids() -> None:
    """Each "never" of the design holds for every module under its importer prefix
    (``app.backends`` may import nothing of ``app`` but itself)."""
    broken = []
    checked: set[str] = set()
    for path in APP.rglob("*.py"):
        name = module_name(path)
        for importer, forbidden in NEVER:
            if name != importer and not name.startswith(importer + "."):
                continue
            checked.add(importer)
            for imported in imported_modules(path):
                if imported.startswith(importer + ".") or imported == importer:
                    continue
                if any(
                    imported == f or imported.startswith(f.rstrip(".") + ".") for f in forbidden
                ):
                    broken.append(f"{name} → {imported}")
    assert checked == {importer for importer, _ in NEVER}, "a rule names no module"
    assert not broken, broken


# The README's Layout, top to bottom: a package imports (at run time, TYPE_CHECKING
# aside) only its own layer's modules and the layers below. The leaves at the bottom
# import nothing of ``app`` at run time; ``state`` names the parts' types for type
# checking only (test_the_shared_state_is_a_leaf).
LAYERS: tuple[tuple[str, ...], ...] = (
    ("__main__", "__init__", "main"),
    ("settings",),
    ("web",),
    ("realtime",),
    ("services",),
    ("market",),
    ("cache",),
    ("resilience",),
    ("observability",),
    ("backends",),
    ("state", "errors", "hosts"),
)


def test_every_arrow_points_down_the_layout() -> None:
    """No run-time import from a package to one above it in :data:`LAYERS`, and every
    package of ``app/`` has its place there."""
    rank = {package: i for i, layer in enumerate(LAYERS) for package in layer}
    packages = {package_of(path) for path in APP.rglob("*.py")}
    assert packages == set(rank), f"place these in LAYERS: {sorted(packages ^ set(rank))}"
    upward = sorted(
        f"{module_name(path)} → {imported}"
        for path in APP.rglob("*.py")
        for imported in imported_modules(path, typing_only=False)
        if rank[imported.split(".")[1]] < rank[package_of(path)]
    )
    assert not upward, upward


def test_the_shared_state_is_a_leaf() -> None:
    """``app/state.py`` imports app modules only for type checking (like quart's globals)."""
    tree = ast.parse((APP / "state.py").read_text(encoding="utf-8"))
    guarded = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for inner in ast.walk(node)
    }
    runtime = [
        ast.unparse(node)
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom | ast.Import)
        and id(node) not in guarded
        and any(name.startswith("app.") for name in _names(node))
    ]
    assert not runtime, runtime


def _names(node: ast.Import | ast.ImportFrom) -> list[str]:
    if isinstance(node, ast.ImportFrom):
        return [node.module or ""]
    return [alias.name for alias in node.names]
