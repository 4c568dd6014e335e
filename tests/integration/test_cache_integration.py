"""The tiered cache against a real Memcached and a real Redis, with one or two app
instances (replicas) sharing them: fills, stampedes, outages, cross-replica
invalidation, sessions and the operator endpoints."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import orjson
import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from redis.asyncio import Redis

from app.main.embedded import create_app
from app.services.catalogue import view_key
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings, state_of
from tests.support.markets import CountingMarket
from tests.support.replicas import SYMBOLS, TOKEN, replica, tiered_settings


@pytest.fixture
async def one(memcached, redis, clock) -> AsyncIterator[QuartTestApp]:
    async with replica(memcached, redis, clock, "a") as test_app:
        yield test_app


@pytest.fixture
async def two(memcached, redis, clock) -> AsyncIterator[tuple[QuartTestApp, QuartTestApp]]:
    async with (
        replica(memcached, redis, clock, "a") as a,
        replica(memcached, redis, clock, "b") as b,
    ):
        yield a, b


def tickers_fetched(*apps: QuartTestApp) -> int:
    return sum(state_of(app).pipeline.source.calls["tickers"] for app in apps)


async def get(app: QuartTestApp, path: str, **headers: str):
    response = await app.test_client().get(path, headers=headers)
    return response, await response.get_data()


async def herd(apps: tuple[QuartTestApp, ...], path: str, per_app: int) -> list:
    """``per_app`` concurrent requests on each app. Both "replicas" share this one event
    loop: hundreds in flight at once would stall it past the tiers' timeouts (a real
    replica has a loop of its own), so at most 100 per replica are in flight."""
    gates = {id(app): asyncio.Semaphore(100) for app in apps}

    async def request(app: QuartTestApp):
        async with gates[id(app)]:
            return await get(app, path)

    return await asyncio.gather(*(request(app) for app in apps for _ in range(per_app)))


async def test_views_reach_every_tier(one: QuartTestApp, memcached, redis) -> None:
    runtime = state_of(one).runtime
    key = runtime.cache.physical_key(view_key("dashboard:desktop"), "dash:desktop")
    assert key in (await runtime.memcached.get_many([key]))
    assert key in (await runtime.backup.get_many([key]))
    assert (await get(one, "/api/cache/metrics"))[0].status_code == 401  # names servers
    admin = {"Authorization": f"Bearer {TOKEN}"}
    stats = orjson.loads((await get(one, "/api/cache/metrics", **admin))[1])
    assert stats["memcached"]["servers"][memcached.address]["limit_bytes"] == 64 * 1024 * 1024
    assert 0 < stats["memcached"]["memory_used_ratio"] < 0.8
    assert stats["redis"]["used_memory"] > 0
    assert stats["l1"]["items"] > 0


async def test_a_second_replica_starts_from_the_shared_tiers(
    memcached, redis, clock: ManualClock
) -> None:
    async with (
        replica(memcached, redis, clock, "a") as a,
        replica(memcached, redis, clock, "b") as b,
    ):
        response, body = await get(b, "/api/dashboard/data")
        assert response.status_code == 200
        assert response.headers["X-Cache"] in ("l1", "memcached")
        assert tickers_fetched(a, b) == 1  # one refresh for both replicas
        assert orjson.loads(body)["version"] == state_of(a).pipeline.status.snapshot_version


async def test_stampede_on_two_replicas_is_one_refresh(
    two: tuple[QuartTestApp, QuartTestApp],
) -> None:
    a, b = two
    before = tickers_fetched(a, b)
    response = await a.test_client().post(
        "/api/cache/invalidate",
        json={"family": "market"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200
    await eventually(lambda: state_of(b).runtime.cache.generations.get("dash:desktop") == 1)
    results = await herd((a, b), "/api/dashboard/data", 500)
    assert {r.status_code for r, _ in results} == {200}
    assert tickers_fetched(a, b) - before == 1
    waited = sum(
        state_of(app).runtime.cache.stats.singleflight_waits["dash:desktop"] for app in (a, b)
    )
    assert waited >= 10  # a real herd: requests queued behind the one computation
    versions = {orjson.loads(body)["version"] for _, body in results}
    assert len(versions) == 1


async def test_an_on_demand_key_is_computed_once_across_replicas(
    two: tuple[QuartTestApp, QuartTestApp],
) -> None:
    a, b = two

    def computed() -> int:
        return sum(state_of(app).runtime.cache.stats.computations["candles"] for app in (a, b))

    before = computed()  # warming computed the default hot candles once, on one replica
    assert before == 2
    results = await herd((a, b), "/api/market/candles/SOLUSDT?timeframe=30m", 200)
    assert {r.status_code for r, _ in results} == {200}
    assert computed() - before == 1  # (how many waited depends on timing: not asserted)
    candles = orjson.loads(results[0][1])["candles"]
    assert len(candles) == 337 and candles[0][0] < candles[-1][0]


async def test_memcached_outage_is_served_from_redis_then_rejoined(
    one: QuartTestApp, memcached
) -> None:
    state = state_of(one)
    memcached.kill()
    state.runtime.cache.l1.clear()  # as on a fresh replica: L1 cannot answer
    for path in ("/api/dashboard/data", "/api/dashboard/mobile", "/api/market/overview"):
        response, body = await get(one, path)
        assert response.status_code == 200, body
        assert response.headers["X-Cache"] == "redis"
    memcached.restart()
    memcached_tier = state.runtime.memcached

    async def rejoined() -> bool:
        await state.pipeline.refresh(force=True)  # writes every view again
        state.runtime.cache.l1.clear()
        response, _ = await get(one, "/api/market/overview")
        return response.headers["X-Cache"] == "memcached"

    for _ in range(60):  # the breaker lets a probe through after its back-off
        if memcached_tier.available and await rejoined():
            break
        await asyncio.sleep(0.25)
    else:
        raise AssertionError("memcached was not used again after its restart")


async def test_corrupt_bytes_in_memcached_are_a_miss(one: QuartTestApp) -> None:
    state = state_of(one)
    key = state.runtime.cache.physical_key(view_key("market:movers"), "movers")
    await state.runtime.memcached.set_many({key: b"\x00not an entry"}, 60)
    state.runtime.cache.l1.clear()
    response, body = await get(one, "/api/market/movers")
    assert response.status_code == 200 and orjson.loads(body)["gainers"] is not None
    assert response.headers["X-Cache"] == "redis"
    assert state.runtime.cache.stats.lookups[("memcached", "movers", "corrupt")] == 1


async def test_invalidation_on_one_replica_clears_the_other_replicas_l1(
    two: tuple[QuartTestApp, QuartTestApp],
) -> None:
    a, b = two
    b_l1 = state_of(b).runtime.cache.l1
    assert (await get(b, "/api/confluence/BTCUSDT"))[0].status_code == 200
    assert b_l1.items_by_family().get("confluence", 0) == 1
    affected = await state_of(a).runtime.coherence.invalidate_families(["market"])
    assert "confluence" in affected and "dash:mobile" in affected
    await eventually(lambda: b_l1.items_by_family().get("confluence", 0) == 0)
    assert state_of(b).runtime.cache.generations.get("confluence") == 1
    assert "session" not in affected


async def test_new_views_on_one_replica_replace_the_others_l1(
    two: tuple[QuartTestApp, QuartTestApp], clock: ManualClock
) -> None:
    a, b = two
    _, old = await get(b, "/api/dashboard/data")
    clock.advance(5)
    await state_of(a).pipeline.refresh(force=True)
    await eventually(lambda: "dash:desktop" not in state_of(b).runtime.cache.l1.items_by_family())
    response, new = await get(b, "/api/dashboard/data")
    assert response.headers["X-Cache"] == "memcached"
    assert orjson.loads(new)["version"] > orjson.loads(old)["version"]


async def test_sessions_live_in_redis_and_follow_the_user(
    two: tuple[QuartTestApp, QuartTestApp], redis
) -> None:
    a, b = two
    client = a.test_client()
    response = await client.put(
        "/api/session/watchlist", json={"watchlist": ["eth-usdt", "BTCUSDT"]}
    )
    assert response.status_code == 200
    cookie = response.headers["Set-Cookie"].split(";")[0]
    assert "HttpOnly" in response.headers["Set-Cookie"]
    response, body = await get(b, "/api/session/watchlist", Cookie=cookie)
    assert orjson.loads(body) == {"watchlist": ["ETHUSDT", "BTCUSDT"], "unserved": []}
    bad = await b.test_client().put(
        "/api/session/watchlist", json={"watchlist": ["DOGEUSDT"]}, headers={"Cookie": cookie}
    )
    assert bad.status_code == 400
    assert "DOGEUSDT" in orjson.loads(await bad.get_data())["message"]
    _, body = await get(a, "/api/session/watchlist", Cookie=cookie)
    assert orjson.loads(body) == {
        "watchlist": ["ETHUSDT", "BTCUSDT"],
        "unserved": [],
    }  # nothing changed
    client_redis = Redis.from_url(f"redis://{redis.address}/0")
    try:
        assert len(await client_redis.keys("virtuoso:session:*")) == 1
    finally:
        await client_redis.aclose()


async def test_sessions_answer_503_when_redis_is_down(one: QuartTestApp, redis) -> None:
    redis.kill()
    response = await one.test_client().put("/api/session/watchlist", json={"watchlist": []})
    assert response.status_code == 503
    assert orjson.loads(await response.get_data())["error"] == "session_store_unavailable"
    served, _ = await get(one, "/api/dashboard/data")
    assert served.status_code == 200  # the views do not need Redis


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        ({}, {"family": "market"}, 401),
        ({"Authorization": "Bearer wrong-token-wrong-token"}, {"family": "market"}, 401),
        ({"Authorization": f"Bearer {TOKEN}"}, {"family": "nope"}, 400),
        ({"Authorization": f"Bearer {TOKEN}"}, {"family": "market", "view": "beta"}, 400),
        ({"Authorization": f"Bearer {TOKEN}"}, {"view": "nope"}, 400),
        ({"Authorization": f"Bearer {TOKEN}"}, {"view": "confluence:BTCUSDT:5m"}, 200),
    ],
)
async def test_invalidate_needs_the_operator_token_and_valid_input(
    one: QuartTestApp, headers: dict, body: dict, status: int
) -> None:
    response = await one.test_client().post("/api/cache/invalidate", json=body, headers=headers)
    payload = orjson.loads(await response.get_data())
    assert response.status_code == status, payload
    if status == 401:  # RFC 6750 §3: invalid_token when a wrong token was given
        wrong = 'Bearer error="invalid_token"' if "Authorization" in headers else "Bearer"
        assert response.headers["WWW-Authenticate"] == wrong
    if status == 400:
        assert payload["error"] in ("invalid_request", "unknown_view")
    if status == 200:
        assert payload["invalidated"][0] == "confluence"


async def test_warm_needs_the_token_and_rebuilds_the_hot_views(one: QuartTestApp) -> None:
    client = one.test_client()
    assert (await client.post("/api/cache/warm")).status_code == 401
    response = await client.post("/api/cache/warm", headers={"Authorization": f"Bearer {TOKEN}"})
    report = orjson.loads(await response.get_data())
    assert response.status_code == 200
    assert "dashboard:desktop" in report["warmed"] and report["failed"] == {}


@pytest.mark.parametrize("tiers", ["memcached", "redis"])
async def test_each_shared_tier_works_alone(memcached, redis, clock, tiers: str) -> None:
    environ = {"VIRTUOSO_SYMBOLS": SYMBOLS, "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF}
    if tiers == "memcached":
        environ["VIRTUOSO_MEMCACHED_URL"] = memcached.address
    else:
        environ["VIRTUOSO_REDIS_URL"] = f"redis://{redis.address}/0"
    app = create_app(make_settings(**environ), CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        state = state_of(test_app)
        assert state.runtime.tiers == ["l1", tiers]
        state.runtime.cache.l1.clear()
        response, _ = await get(test_app, "/api/dashboard/overview")
        assert response.status_code == 200 and response.headers["X-Cache"] == tiers
        health = orjson.loads((await get(test_app, "/health"))[1])
        assert health["cache"] == {"tiers": {"l1": True, tiers: True}, "embedded": False}


async def test_rate_limit_is_per_client_and_shared_by_replicas(
    memcached, redis, clock: ManualClock
) -> None:
    # The shipped burst (40) without its refill, so the count below does not depend on
    # how fast a (busy) machine sends the requests.
    # A Redis call slower than its timeout lets the request through (the limiter fails
    # open): on a busy machine the default 0.5 s is not enough for an exact count.
    settings = {
        "VIRTUOSO_RATE_LIMITS": str(
            Path(__file__).parents[1] / "support" / "data" / "ratelimits-burst-only.yaml"
        ),
        "VIRTUOSO_REDIS_TIMEOUT_SECONDS": "5",
    }
    apps = [
        create_app(
            tiered_settings(memcached, redis, name, **settings), CountingMarket(clock), clock
        )
        for name in ("a", "b")
    ]
    async with apps[0].test_app() as a, apps[1].test_app() as b:
        await eventually(lambda: state_of(a).warmed and state_of(b).warmed, seconds=30)
        greedy = {"client": ("127.0.0.2", 40000)}
        answers = []
        for i in range(50):  # one client, alternating replicas: one shared bucket
            app = (a, b)[i % 2]
            answers.append(await app.test_client().get("/api/symbols", scope_base=greedy))
        codes = [r.status_code for r in answers]
        assert codes.count(200) == 40 and codes.count(429) == 10
        limited = answers[-1]
        assert int(limited.headers["Retry-After"]) >= 1
        body = orjson.loads(await limited.get_data())
        assert body["error"] == "rate_limited" and body["retry_after_seconds"] >= 1
        other = await b.test_client().get("/api/symbols", scope_base={"client": ("127.0.0.3", 1)})
        assert other.status_code == 200  # another client is unaffected
        health = await a.test_client().get("/health", scope_base=greedy)
        assert health.status_code == 200  # health is never limited
