"""Shared fixtures: a controllable clock, settings, and the app on the simulated market.

Each test is marked by its folder: ``unit`` (in-process), ``integration`` (real servers,
sockets, subprocesses), ``browser`` (headless Chromium); ``pytest -m unit`` runs one group.
"""

from __future__ import annotations

import asyncio
import inspect
import tempfile
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from hypothesis import settings as hypothesis_settings
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.sources.simulated import SimulatedMarket
from app.settings import Settings, load_settings
from app.state import EXTENSION, ServiceState

# Property tests assert behaviour, never time: Hypothesis's per-example deadline
# (200 ms) fails them on a busy machine, so no test has one.
hypothesis_settings.register_profile("no-deadline", deadline=None)
hypothesis_settings.load_profile("no-deadline")

pytest_plugins = [
    "tests.support.servers",
    "tests.support.browser",
    "tests.support.receivers",
]  # servers; Chromium and the served app

GROUPS = ("unit", "integration", "browser")  # the folders, and the markers they give

START = 1_790_000_000.0  # a fixed instant (2026-09-21) for deterministic markets


class ManualClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(condition: Callable[[], Any], seconds: float = 10.0) -> None:
    """Polls ``condition`` (sync, or async: awaited) every 50 ms, at most ``seconds``;
    fails the test after that."""
    for _ in range(int(seconds / 0.05)):
        met = condition()
        if await met if inspect.isawaitable(met) else met:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


_DATA_DIR = tempfile.mkdtemp(prefix="virtuoso-test-data-")
# For tests that send hundreds of requests from one client: rate limits off.
RATE_LIMITS_OFF = str(Path(__file__).parents[1] / "config" / "ratelimits-off.yaml")


# A busy machine can hold a Memcached or Redis reply past the production timeouts
# (0.25 s, 0.5 s): a test not about tier timeouts then sees a breaker open and a 503.
# Tests of timing out set their own values.
PATIENT_TIER_TIMEOUTS = {
    "VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS": "5",
    "VIRTUOSO_REDIS_TIMEOUT_SECONDS": "5",
}


def make_settings(**environ: str) -> Settings:
    """Settings from these variables; alerts kept in a throwaway directory unless given
    (one per test: rules a test leaves behind must not fire in the next test's app);
    tier timeouts patient unless given; the market polled on the refresh cadence unless
    ``VIRTUOSO_STREAMS=on`` is given (the tests of streams say so; the others assert
    what a refresh changes, which ticks between refreshes would blur)."""
    defaults = {"VIRTUOSO_DATA_DIR": _DATA_DIR, "VIRTUOSO_STREAMS": "off"} | PATIENT_TIER_TIMEOUTS
    return load_settings(environ=defaults | environ)


@pytest.fixture(autouse=True)
def _data_dir_of_its_own(tmp_path_factory: pytest.TempPathFactory, monkeypatch) -> None:
    """Points ``make_settings``' default data directory at a fresh one for each test."""
    monkeypatch.setitem(globals(), "_DATA_DIR", str(tmp_path_factory.mktemp("data")))


# ccxt's client-side spacing against the loopback fake: 1 ms per unit of cost (5 ms per
# Bybit market call, not 100 ms). The limiter still runs; its own tests keep Bybit's.
FAKE_EXCHANGE_RATE_LIMIT_MS = "1"


def exchange_settings(base_url: str, symbols: str, **environ: str) -> Settings:
    """The service on ccxt's Bybit against the loopback fake at ``base_url``, for these
    comma-separated symbols, polling REST (the tests of streams say VIRTUOSO_STREAMS=on
    and where the streams are)."""
    return make_settings(
        **{
            "VIRTUOSO_EXCHANGE": "bybit",
            "VIRTUOSO_EXCHANGE_URL": base_url,
            "VIRTUOSO_SYMBOLS": symbols,
            "VIRTUOSO_EXCHANGE_TIMEOUT_SECONDS": "3",
            "VIRTUOSO_STREAMS": "off",
            "VIRTUOSO_EXCHANGE_RATE_LIMIT_MS": FAKE_EXCHANGE_RATE_LIMIT_MS,
        }
        | environ
    )


def state_of(test_app: QuartTestApp) -> ServiceState:
    return test_app.app.extensions[EXTENSION]  # type: ignore[attr-defined]


async def started_app(settings: Settings, source, clock) -> AsyncIterator[QuartTestApp]:
    """The app with its pipeline running and the first snapshot published."""
    app = create_app(settings, source=source, clock=clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


@pytest_asyncio.fixture
async def simulated_app(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings = make_settings()
    async for test_app in started_app(settings, SimulatedMarket(seed=7, clock=clock), clock):
        yield test_app


# The longest modules (seconds of one worker of four, idle, from ``--durations=0``),
# started first: ``make test`` hands each module to one worker (``--dist loadfile``, with
# ``--no-loadscope-reorder``: xdist would otherwise order them by their count of tests) in
# this order, and a long module started last would be the run's tail.
LONGEST_FIRST = (
    "integration/test_collector_split.py",  # ~75 s
    "browser/rule_form/test_rule_form.py",  # ~26 s
    "integration/test_faults.py",
    "integration/test_stack.py",
    "integration/test_ws_hostile.py",
    "integration/test_streaming_service.py",
    "integration/test_server.py",
    "unit/test_simulated.py",
    "browser/rule_form/test_rule_form_limits.py",
    "integration/test_delisting.py",
    "integration/test_prometheus_integration.py",
    "browser/test_browser.py",
    "integration/test_exchange_data_kinds.py",
    "integration/test_fuzz_negative.py",
    "integration/test_fuzz_positive.py",
    "browser/test_keyboard.py",
    "integration/test_monitoring_listener.py",
    "integration/test_outbox_collector_restart.py",
    "integration/test_bench_baselines.py",
    "integration/test_ticker_stream.py",
    "integration/test_leader_lease.py",  # ~10 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Marks every test with its folder's group (tests/unit/... is ``unit``) and puts
    the ``LONGEST_FIRST`` modules first (the order within a module is kept). A test
    outside the group folders stops the run: no ``-m`` selection would ever run it."""
    here = Path(__file__).parent
    rank = {module: i for i, module in enumerate(LONGEST_FIRST)}
    for item in items:
        group = item.path.relative_to(here).parts[0]
        if group not in GROUPS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(GROUPS)}}}/")
        item.add_marker(group)
    items.sort(key=lambda item: rank.get(item.path.relative_to(here).as_posix(), len(rank)))


@pytest.fixture(scope="session", autouse=True)
def _simulated_history_once() -> Iterator[None]:
    """Simulated markets on a ManualClock build their history once per instant."""
    from tests.support.markets import remembered_simulated_histories

    with remembered_simulated_histories():
        yield


@pytest.fixture(autouse=True)
def _fresh_simulated_history(request: pytest.FixtureRequest, monkeypatch) -> None:
    """Tests marked ``fresh_simulated_history`` (those of the build itself) build it."""
    if request.node.get_closest_marker("fresh_simulated_history"):
        from tests.support.markets import BUILD_HISTORY

        monkeypatch.setattr(SimulatedMarket, "_build_history", BUILD_HISTORY)
