"""Shared fixtures: a controllable clock, settings, and the app on the simulated market."""

from __future__ import annotations

import asyncio
import tempfile
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.sources.simulated import SimulatedMarket
from app.settings import Settings, load_settings
from app.web.app import create_app
from app.web.state import EXTENSION_KEY, ServiceState

pytest_plugins = [
    "tests.support.servers",
    "tests.support.browser",
]  # servers; Chromium and the served app

START = 1_790_000_000.0  # a fixed instant (2026-09-21) for deterministic markets


class ManualClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def eventually(condition: Callable[[], bool], seconds: float = 10.0) -> None:
    """Polls ``condition`` every 50 ms, at most ``seconds``; fails the test after that."""
    for _ in range(int(seconds / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"condition not met within {seconds} s")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


_DATA_DIR = tempfile.mkdtemp(prefix="virtuoso-test-data-")
# For tests that send hundreds of requests from one client: rate limits off.
RATE_LIMITS_OFF = str(Path(__file__).parent / "support" / "data" / "ratelimits-off.yaml")


def make_settings(**environ: str) -> Settings:
    """Settings from these variables; alerts kept in a throwaway directory unless given."""
    return load_settings(environ={"VIRTUOSO_DATA_DIR": _DATA_DIR} | environ)


def exchange_settings(base_url: str, symbols: str, **environ: str) -> Settings:
    """The service on ccxt's Bybit against the loopback fake at ``base_url``, for these
    comma-separated symbols."""
    return make_settings(
        VIRTUOSO_EXCHANGE="bybit",
        VIRTUOSO_EXCHANGE_URL=base_url,
        VIRTUOSO_SYMBOLS=symbols,
        VIRTUOSO_EXCHANGE_TIMEOUT_SECONDS="3",
        **environ,
    )


def state_of(test_app: QuartTestApp) -> ServiceState:
    return test_app.app.extensions[EXTENSION_KEY]  # type: ignore[attr-defined]


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
