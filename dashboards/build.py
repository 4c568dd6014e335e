"""Writes the JSON of every board to ``dashboards/generated/<uid>.json``.

    python -m dashboards.build            # (re)write the files
    python -m dashboards.build --check    # exit 1, naming the boards whose JSON differs

The JSON is stable: keys sorted, two-space indent, a trailing newline. Grafana provisions the
files from ``/var/lib/grafana/dashboards`` (grafana/provisioning/dashboards/dashboards.yml).

Also here for the tests: :func:`panel_queries` lists every PromQL expression of every panel,
and :func:`substitute` replaces Grafana's variables in one by their defaults so that Prometheus
can evaluate it as it is.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as dm

from dashboards.boards import BOARDS

GENERATED = Path(__file__).resolve().parent / "generated"

# Grafana's built-in variables, as the integration test evaluates them.
BUILTIN_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def boards() -> list[dm.Dashboard]:
    return [build() for build in BOARDS]


def render(board: dm.Dashboard) -> str:
    return json.dumps(board, cls=JSONEncoder, sort_keys=True, indent=2, ensure_ascii=False) + "\n"


def rendered() -> dict[str, str]:
    """uid → the board's JSON text."""
    out: dict[str, str] = {}
    for board in boards():
        assert board.uid and board.uid not in out, f"missing or repeated uid: {board.uid!r}"
        out[board.uid] = render(board)
    return out


def write(directory: Path = GENERATED) -> list[Path]:
    """Writes every board and removes JSON files of boards that no longer exist."""
    directory.mkdir(parents=True, exist_ok=True)
    texts = rendered()
    written = []
    for uid, text in texts.items():
        path = directory / f"{uid}.json"
        path.write_text(text, encoding="utf-8")
        written.append(path)
    for stale in directory.glob("*.json"):
        if stale.stem not in texts:
            stale.unlink()
    return written


def check(directory: Path = GENERATED) -> list[str]:
    """The boards whose committed JSON is missing or differs from a fresh build, and the JSON
    files of boards that do not exist any more; empty when everything is up to date."""
    texts = rendered()
    problems = []
    for uid, text in texts.items():
        path = directory / f"{uid}.json"
        if not path.is_file():
            problems.append(f"{uid}: {path} is missing")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"{uid}: {path} differs from a fresh build")
    if directory.is_dir():
        for path in sorted(directory.glob("*.json")):
            if path.stem not in texts:
                problems.append(f"{path.stem}: {path} belongs to no board")
    return problems


def _panels(board: dm.Dashboard) -> list[dm.Panel]:
    panels: list[dm.Panel] = []
    for panel in board.panels or []:
        if isinstance(panel, dm.RowPanel):
            panels.extend(panel.panels)  # the panels of a collapsed row
        else:
            panels.append(panel)
    return panels


def panel_queries() -> list[tuple[str, str, str]]:
    """(board uid, panel title, PromQL expression) for every query of every panel."""
    out = []
    for board in boards():
        for panel in _panels(board):
            for target in panel.targets or []:
                expr = getattr(target, "expr", None)
                if expr:
                    out.append((board.uid or "", panel.title or "", expr))
    return out


def variable_defaults() -> dict[str, str]:
    """Every board variable's default value (``current``), and Grafana's built-ins."""
    defaults = dict(BUILTIN_VARIABLES)
    for board in boards():
        for variable in board.templating.list_val or []:
            value = variable.current.value if variable.current is not None else None
            if isinstance(value, list):
                value = "|".join(value)
            if not value:
                raise ValueError(f"{board.uid}: variable {variable.name!r} has no default")
            known = defaults.setdefault(variable.name, value)
            if known != value:
                raise ValueError(f"variable {variable.name!r}: defaults {known!r} and {value!r}")
    return defaults


def substitute(expr: str) -> str:
    """``expr`` with ``$__rate_interval`` as ``1m`` and ``$var``/``${var}`` as the variables'
    defaults; an unknown variable raises ``KeyError``."""
    defaults = variable_defaults()

    def replace(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        if name not in defaults:
            raise KeyError(f"unknown Grafana variable ${name} in {expr!r}")
        return defaults[name]

    return _VARIABLE.sub(replace, expr)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m dashboards.build", description=__doc__)
    parser.add_argument(
        "--check", action="store_true", help="exit 1 if the committed JSON is not up to date"
    )
    parser.add_argument("--out", type=Path, default=GENERATED, help="default: %(default)s")
    args = parser.parse_args(argv)
    if args.check:
        problems = check(args.out)
        for problem in problems:
            print(problem, file=sys.stderr)
        if problems:
            print("run: python -m dashboards.build", file=sys.stderr)
            return 1
        print(f"{len(BOARDS)} boards up to date in {args.out}")
        return 0
    for path in write(args.out):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
