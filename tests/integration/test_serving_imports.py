"""The serving role imports no market machinery: a fresh interpreter that imports every
serving module has loaded neither numpy, ccxt, TA-Lib nor pandas, nor any module of the
analytics, the sources or the snapshot → views pipeline (issue 17: ``virtuoso serve``
never imports them; the collector does).

The serving modules are every module of the serving packages, enumerated, minus the
collector-side ones named in ``COLLECTOR_SIDE`` with the reason, and the server's
composition root (``app.main.server_app``) with the parts of ``app.main`` it uses and the
command line (which imports a role's root only when that role runs).
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import pkgutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# Packages whose every module serves (but for COLLECTOR_SIDE).
SERVING_PACKAGES: tuple[str, ...] = (
    "app.backends",
    "app.cache",
    "app.resilience",
    "app.observability",
    "app.realtime",
    "app.web",
    "app.services",
)
# Single modules the serving process imports.
SERVING_MODULES: tuple[str, ...] = (
    "app.errors",
    "app.hosts",
    "app.settings",
    "app.state",
    "app.main.cli",
    "app.main.server_app",
    "app.main.server",
    "app.main.alerting",
    "app.main.telemetry",
    "app.main.collectors",
    "app.main.poller",
    "app.main.sections",
    "app.main.child_host",
    "app.main.supervisor",
)

# Modules of the serving packages that run in the collector only, and why.
COLLECTOR_SIDE: dict[str, str] = {
    "app.services.snapshot": "fetches tickers, candles and books from the market source",
    "app.services.analysis": "runs the analytics (numpy, TA-Lib) on a snapshot",
    "app.services.incremental_analysis": "runs the analytics on snapshots, reusing results",
    "app.services.views": "builds the views from a snapshot and its analysis",
    "app.services.pipeline": "the refresh: snapshot → analysis → views, published",
    "app.services.live_updates": "projects a snapshot's analysis into live messages",
    "app.services.alerts.evaluation": "evaluates the alert rules on a snapshot's analysis",
    "app.services.alerts.price_trail": "walks a snapshot's 1m candles for the evaluation",
    "app.services.collector_desk": "answers the servers' requests from the pipeline",
    "app.services.derivatives_collection": "reads the derivatives from the market source",
    "app.services.derivatives_view": "arranges a snapshot's derivatives into the view",
    "app.services.positioning": "takes a snapshot's derivatives and trades to the analytics",
}

# What no serving module may load, however indirectly: a name or a package prefix.
FORBIDDEN: tuple[str, ...] = (
    "numpy",
    "ccxt",
    "talib",
    "pandas",
    "app.market.analytics",
    "app.market.sources",
    "app.services.pipeline",
    "app.services.analysis",
    "app.services.views",
    "app.services.snapshot",
)

_PROBE = """
import importlib, json, sys
for name in json.loads(sys.argv[1]):
    importlib.import_module(name)
print(json.dumps(sorted(sys.modules)))
"""


def serving_modules() -> list[str]:
    """Every module of ``SERVING_PACKAGES`` (recursively) and ``SERVING_MODULES``, less
    ``COLLECTOR_SIDE``, sorted."""
    found = set(SERVING_MODULES)
    for package in SERVING_PACKAGES:
        found.add(package)
        path = importlib.import_module(package).__path__
        found.update(info.name for info in pkgutil.walk_packages(path, package + "."))
    return sorted(found - set(COLLECTOR_SIDE))


def loaded_after_importing(modules: list[str]) -> set[str]:
    """The names in ``sys.modules`` of a fresh interpreter (this project's, this checkout's
    ``app``) after importing ``modules``."""
    done = subprocess.run(
        [sys.executable, "-c", _PROBE, json.dumps(modules)],
        cwd=ROOT,
        env=os.environ | {"PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return set(json.loads(done.stdout))


def forbidden_in(loaded: set[str], forbidden: tuple[str, ...]) -> list[str]:
    """The names of ``loaded`` that are, or lie under, one of ``forbidden``."""
    return sorted(
        name
        for name in loaded
        if any(name == prefix or name.startswith(prefix + ".") for prefix in forbidden)
    )


def test_the_serving_modules_load_no_market_machinery() -> None:
    modules = serving_modules()
    assert {"app.web.api", "app.main.server_app", "app.services.remote_collector"} <= set(modules)
    loaded = loaded_after_importing(modules)
    assert set(modules) <= loaded
    stray = forbidden_in(loaded, (*FORBIDDEN, *COLLECTOR_SIDE))
    assert not stray, f"the serving modules load: {stray}"


def test_the_servers_entry_loads_neither_apprise_nor_aiohttp() -> None:
    """Apprise (every alert delivery's client) loads where a channel or a rule's webhook
    is first parsed or sent to — the collector, or a server asked to store one — not
    with the server itself. The service has no HTTP client of its own any more: aiohttp
    (about 8 MB) is ccxt's (the collector's exchange client), so it must not load here
    either."""
    loaded = loaded_after_importing(["app.main.cli", "app.main.server_app"])
    assert "app.main.server_app" in loaded
    assert forbidden_in(loaded, ("aiohttp", "apprise")) == []
    # the probe would see them: ccxt's async client brings aiohttp
    assert {"aiohttp", "apprise"} <= loaded_after_importing(["apprise", "ccxt.async_support"])


def test_the_probe_sees_what_a_collector_module_loads() -> None:
    """The check is not vacuous: the pipeline, imported the same way, loads numpy and the
    analytics."""
    loaded = loaded_after_importing(["app.services.pipeline"])
    assert {"numpy", "app.market.analytics.confluence"} <= set(forbidden_in(loaded, FORBIDDEN))


def test_collector_side_modules_exist() -> None:
    """Each exception names a real module (a renamed one must be renamed here too)."""
    for name in COLLECTOR_SIDE:
        assert importlib.util.find_spec(name) is not None, name
