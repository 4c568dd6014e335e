"""App replicas on a real Memcached and Redis (the tiers shared), built in process on a
market the test gives: for the tests of what replicas share (cache, locks, namespaces)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.sources.base import MarketSource
from app.settings import Settings
from tests.conftest import RATE_LIMITS_OFF, eventually, make_settings, state_of
from tests.support.markets import CountingMarket
from tests.support.servers import LocalServer

TOKEN = "operator-token-for-tests"
SECRET = "session-secret-for-tests-0123456789"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT"


def tiered_settings(
    memcached: LocalServer, redis: LocalServer, replica: str, **extra: str
) -> Settings:
    """Both tiers, the operator token, a session key, three symbols and rate limits off
    (these tests send hundreds of requests from one client); ``extra`` overrides any."""
    return make_settings(
        **{
            "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
            "VIRTUOSO_MEMCACHED_URL": memcached.address,
            "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
            "VIRTUOSO_ADMIN_TOKEN": TOKEN,
            "VIRTUOSO_SECRET_KEY": SECRET,
            "VIRTUOSO_SYMBOLS": SYMBOLS,
            "VIRTUOSO_REPLICA_ID": replica,
        }
        | extra
    )


@contextlib.asynccontextmanager
async def replica(
    memcached: LocalServer,
    redis: LocalServer,
    clock: Callable[[], float],
    name: str,
    market: MarketSource | None = None,
    **extra: str,
) -> AsyncIterator[QuartTestApp]:
    """A started replica named ``name`` (on a CountingMarket unless ``market``), warm and
    listening to the invalidation bus."""
    settings = tiered_settings(memcached, redis, name, **extra)
    app = create_app(settings, market or CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        await eventually(lambda: state_of(test_app).runtime.bus.listening, seconds=10)
        yield test_app
