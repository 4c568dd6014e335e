"""/health and /health/ready say what a load balancer and a trader need to anyone,
and the operational details (backend addresses, replica, breakers by server, the last
exchange error) only with the admin token, on the monitoring listener, or when the
operator turns VIRTUOSO_PUBLIC_DETAILS on. /api/cache/metrics needs the admin token."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import orjson
import pytest
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.errors import ExchangeUnavailable
from app.web.listeners import LISTENER_KEY, MONITORING
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings, state_of
from tests.support.markets import CountingMarket

ADMIN = "health-admin-token-5f2c81"
SECRET_ERROR = "GET http://user:pw@10.1.2.3:9000/v5/market/tickers refused"


@contextlib.asynccontextmanager
async def running(clock: ManualClock, memcached, **environ: str) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(
        **{
            "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT",
            "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
            "VIRTUOSO_MEMCACHED_URL": memcached.address,
            "VIRTUOSO_ADMIN_TOKEN": ADMIN,
            "VIRTUOSO_REPLICA_ID": "replica-on-host-17",
        }
        | environ
    )
    market = CountingMarket(clock)
    app = create_app(settings, market, clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


async def get(app: QuartTestApp, path: str, headers=None, scope_base=None) -> tuple[int, bytes]:
    response = await app.test_client().get(path, headers=headers or {}, scope_base=scope_base)
    return response.status_code, await response.get_data()


async def fail_the_exchange(app: QuartTestApp, clock: ManualClock) -> None:
    async def refused(symbols):
        raise ExchangeUnavailable(SECRET_ERROR)

    state = state_of(app)
    state.pipeline.source.fetch_tickers = refused  # type: ignore[method-assign]
    clock.advance(10)
    with contextlib.suppress(ExchangeUnavailable):
        await state.pipeline.refresh(force=True)
    assert state.pipeline.status.last_error is not None


@pytest.fixture
async def app(clock: ManualClock, memcached) -> AsyncIterator[QuartTestApp]:
    async with running(clock, memcached) as test_app:
        await fail_the_exchange(test_app, clock)
        yield test_app


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "Bearer wrong-token-0000000000",
        f"Basic {ADMIN}",
        ADMIN,
        f"Bearer{ADMIN}",
        "Bearer tok\u00e9n-n\u00f6n-ascii",
    ],
)
async def test_without_details_no_address_replica_or_error_text(
    app: QuartTestApp, memcached, path: str, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization else None
    status, raw = await get(app, path, headers=headers)
    assert status == 200
    for secret in (memcached.address, "replica-on-host-17", "10.1.2.3", "user:pw"):
        assert secret.encode() not in raw, (secret, raw)
    body = orjson.loads(raw)
    assert body["pipeline"]["last_error"] == "hidden"
    if path == "/health":
        assert body["details"] is False and "breakers" not in body and "replica" not in body
        assert body["cache"]["tiers"] == {"l1": True, "memcached": True}


@pytest.mark.parametrize("scheme", ["Bearer", "bearer", "BEARER"])
async def test_the_admin_token_shows_the_details(app: QuartTestApp, memcached, scheme: str) -> None:
    status, raw = await get(app, "/health", headers={"Authorization": f"{scheme} {ADMIN}"})
    body = orjson.loads(raw)
    assert status == 200 and body["details"] is True
    assert body["replica"] == "replica-on-host-17"
    assert f"memcached:{memcached.address}" in body["breakers"]
    assert body["pipeline"]["last_error"].endswith(SECRET_ERROR)


async def test_the_monitoring_listener_shows_the_details(app: QuartTestApp) -> None:
    monitoring = {"extensions": {LISTENER_KEY: MONITORING}}
    body = orjson.loads((await get(app, "/health/ready", scope_base=monitoring))[1])
    assert any(SECRET_ERROR in reason for reason in body["reasons"]) or body["pipeline"][
        "last_error"
    ].endswith(SECRET_ERROR)
    body = orjson.loads((await get(app, "/health", scope_base=monitoring))[1])
    assert body["details"] is True and "breakers" in body


async def test_public_details_is_an_operator_choice(clock: ManualClock, memcached) -> None:
    async with running(clock, memcached, VIRTUOSO_PUBLIC_DETAILS="true") as app:
        body = orjson.loads((await get(app, "/health"))[1])
        assert body["details"] is True and body["replica"] == "replica-on-host-17"


async def test_cache_metrics_need_the_admin_token(app: QuartTestApp, memcached) -> None:
    status, raw = await get(app, "/api/cache/metrics")
    assert status == 401 and memcached.address.encode() not in raw
    assert orjson.loads(raw)["error"] == "unauthorized"
    status, raw = await get(app, "/api/cache/metrics", {"Authorization": f"Bearer {ADMIN}"})
    assert status == 200 and memcached.address in orjson.loads(raw)["memcached"]["servers"]


async def test_health_is_no_token_guessing_oracle(clock: ManualClock, memcached) -> None:
    """Guessed tokens shown to /health count against the admin rate limit (burst 5):
    past it even the right token shows nothing, and /health still answers 200."""
    async with running(clock, memcached, VIRTUOSO_RATE_LIMITS="") as app:  # shipped limits
        guesser = {"client": ("127.0.0.9", 40000)}
        answers = []
        for i in range(12):
            guess = ADMIN if i == 11 else f"guess-{i:02d}-Qm2vT8pL0wZr5"
            headers = {"Authorization": f"Bearer {guess}"}
            status, raw = await get(app, "/health", headers=headers, scope_base=guesser)
            answers.append((status, orjson.loads(raw)["details"]))
        assert {status for status, _ in answers} == {200}
        assert answers[-1] == (200, False)  # the right token, but over the limit
        other = {"client": ("127.0.0.10", 40000)}
        right = {"Authorization": f"Bearer {ADMIN}"}
        body = orjson.loads((await get(app, "/health", headers=right, scope_base=other))[1])
        assert body["details"] is True  # another client is unaffected
        plain = await get(app, "/health", scope_base=guesser)
        assert plain[0] == 200  # without a token /health is never limited
