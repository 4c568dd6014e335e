"""Per-client rate limits: GCRA buckets in memory and in a real Redis, identity, config,
fail-open through a Redis outage, and the WebSocket connection cap."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import weakref
from pathlib import Path
from typing import Any

import orjson
import pytest
from quart import Quart

from app.backends.connection import connect_redis
from app.backends.errors import is_connection_failure
from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.errors import ConfigError
from app.main.embedded import create_app
from app.market.sources.simulated import SimulatedMarket
from app.realtime.admission import per_client_counter
from app.realtime.connection import WsLimits
from app.resilience.breaker import CircuitBreaker
from app.resilience.rate_limit import (
    DEFAULT_RATE_LIMITS,
    ConnectionLimiter,
    MemoryBuckets,
    RateLimiter,
    RateLimits,
    client_identity,
    load_rate_limits,
    parse_rate_limits,
)
from app.resilience.redis_breaker import redis_breaker_config, redis_guard
from app.state import EXTENSION as STATE_KEY
from app.web.errors import register_error_handlers
from app.web.rate_limit_hooks import install_rate_limits
from tests.conftest import ManualClock, eventually, make_settings
from tests.support.servers import unresponsive_server

# Redis's bound: none of the tests here is about Redis timing out but the one on an
# unresponsive server (with its own); a slow answer on a busy machine must not fail them.
PATIENT = 5.0
TOKEN = "live-token-7f3a9c2e51b84d06"
TOKEN_HASH = hashlib.sha256(TOKEN.encode()).hexdigest()[:32]

# Tiny limits: data 10/s burst 3, session 1/s burst 2, admin one per 2 s.
LIMITS: dict[str, Any] = {
    "redis_timeout_ms": PATIENT * 1000,
    "websocket": {"max_connections_per_client": 2},
    "families": {
        "data": {"rate": 10, "burst": 3, "paths": ["/api/dashboard", "/api/market"]},
        "session": {"rate": 1, "burst": 2, "paths": ["/api/session"]},
        "admin": {"rate": 0.5, "burst": 1, "paths": ["/api/cache"]},
    },
}
ROUTES = [
    "/api/dashboard/data",
    "/api/dashboard/mobile",
    "/api/market/overview",
    "/api/session/watchlist",
    "/api/cache/warm",
    "/health",
    "/health/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/static/app.js",
    "/api/other",
]
UNLIMITED = ["/health", "/health/ready", "/metrics", "/openapi.json", "/docs", "/static/app.js"]


def limits(**overrides: Any) -> RateLimits:
    return parse_rate_limits(LIMITS | overrides)


def guard_on(clock: ManualClock) -> RedisGuard:
    """The production Redis guard, but its breaker on ``clock``: once open it stays open
    until the test moves the clock, however long the machine takes."""
    config = redis_breaker_config(PATIENT)
    breaker = CircuitBreaker("redis", config=config, is_failure=is_connection_failure, clock=clock)
    return RedisGuard(breaker, timeout_seconds=PATIENT)


KEYSPACE = Keyspace("limits-test")
LIMITERS: weakref.WeakKeyDictionary[Quart, RateLimiter] = weakref.WeakKeyDictionary()


def build_app(rate_limits: RateLimits | None = None, redis=None, **options: Any) -> Quart:
    """A small app with one route per family (and unlimited ones), limits installed."""
    app = Quart(__name__)

    async def ok(**_: Any) -> dict[str, bool]:
        return {"ok": True}

    for path in ROUTES:
        app.add_url_rule(path, endpoint=path, view_func=ok, methods=["GET", "POST"])
    register_error_handlers(app)
    if redis is not None:
        options.setdefault("keyspace", KEYSPACE)
    LIMITERS[app] = install_rate_limits(app, rate_limits or limits(), redis, **options)
    return app


def limiter_of(app: Quart) -> RateLimiter:
    return LIMITERS[app]


async def call(
    app: Quart,
    path: str = "/api/dashboard/data",
    ip: str = "10.0.0.1",
    token: str | None = None,
    headers: dict[str, str] | None = None,
):
    headers = dict(headers or {})
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return await app.test_client().get(path, headers=headers, scope_base={"client": (ip, 40000)})


async def statuses(app: Quart, count: int, **request: Any) -> list[int]:
    return [(await call(app, **request)).status_code for _ in range(count)]


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> dict[str, Any]:
    """install_rate_limits options for each store, on a manual clock."""
    clock = ManualClock()
    if request.param == "memory":
        return {"clock": clock}
    client = request.getfixturevalue("redis_client")
    return {"redis": client, "guard": redis_guard(timeout_seconds=PATIENT), "clock": clock}


# -- the 429 ----------------------------------------------------------------------------


async def test_exceeding_the_data_limit_is_429_with_retry_after(store) -> None:
    app = build_app(**store)
    for remaining in (2, 1, 0):
        response = await call(app)
        assert response.status_code == 200
        assert response.headers["RateLimit-Limit"] == "3"
        assert response.headers["RateLimit-Remaining"] == str(remaining)
        assert int(response.headers["RateLimit-Reset"]) >= 1

    refused = await call(app)
    assert refused.status_code == 429
    assert refused.content_type == "application/json"
    assert refused.headers["Retry-After"] == "1"  # 100 ms to the next token, rounded up
    assert refused.headers["RateLimit-Remaining"] == "0"
    body = orjson.loads(await refused.get_data())
    assert body["error"] == "rate_limited"
    assert body["retry_after_seconds"] == 1
    assert body["limit"] == "data: 10 requests/s, burst 3"
    assert "retry in 1 s" in body["message"]

    # the same moment, other clients are unaffected
    assert (await call(app, ip="10.0.0.2")).status_code == 200
    assert (await call(app, token=TOKEN)).status_code == 200
    assert limiter_of(app).stats() | {"redis": None} == {
        "enabled": True,
        "store": "redis" if "redis" in store else "memory",
        "allowed": 5,
        "limited": 1,
        "failed_open": 0,
        "websocket_clients": 0,
        "websocket_rejected": 0,
        "redis": None,
    }


async def test_the_bucket_refills_at_the_rate(store) -> None:
    clock: ManualClock = store["clock"]
    app = build_app(**store)
    assert await statuses(app, 4) == [200, 200, 200, 429]
    clock.advance(0.1)  # one token (10/s)
    assert await statuses(app, 2) == [200, 429]
    clock.advance(0.35)  # three and a half tokens, capped at the burst of 3
    assert await statuses(app, 4) == [200, 200, 200, 429]
    clock.advance(60)  # a long pause refills to the burst, never beyond
    assert await statuses(app, 4) == [200, 200, 200, 429]


async def test_retry_after_is_whole_seconds_until_the_next_token(store) -> None:
    clock: ManualClock = store["clock"]
    app = build_app(**store)
    assert (await call(app, "/api/cache/warm")).status_code == 200
    refused = await call(app, "/api/cache/warm")  # admin: one request per 2 s
    assert refused.status_code == 429
    assert refused.headers["Retry-After"] == "2"
    clock.advance(1.2)
    refused = await call(app, "/api/cache/warm")
    assert refused.headers["Retry-After"] == "1"  # 0.8 s, rounded up
    clock.advance(0.8)
    assert (await call(app, "/api/cache/warm")).status_code == 200


async def test_a_family_is_one_bucket_across_its_routes(store) -> None:
    app = build_app(**store)
    assert (await call(app, "/api/dashboard/data")).status_code == 200
    assert (await call(app, "/api/dashboard/mobile")).status_code == 200
    assert (await call(app, "/api/market/overview")).status_code == 200
    assert (await call(app, "/api/market/overview")).status_code == 429
    assert (await call(app, "/api/dashboard/data")).status_code == 429
    # other families keep their own buckets
    assert await statuses(app, 3, path="/api/session/watchlist") == [200, 200, 429]


async def test_unlimited_paths_never_429(store) -> None:
    app = build_app(**store)
    assert await statuses(app, 4) == [200, 200, 200, 429]
    for path in UNLIMITED:
        for _ in range(10):
            response = await call(app, path)
            assert response.status_code == 200
            assert "RateLimit-Limit" not in response.headers
    # a path no family lists is not limited either
    assert await statuses(app, 10, path="/api/other") == [200] * 10
    assert limiter_of(app).stats()["limited"] == 1


async def test_disabled_limits_change_nothing() -> None:
    app = build_app(limits(enabled=False), clock=ManualClock())
    assert await statuses(app, 10) == [200] * 10
    assert "RateLimit-Limit" not in (await call(app)).headers
    assert per_client_counter(WsLimits(), limiter_of(app)) is None  # no WebSocket cap


# -- identity ---------------------------------------------------------------------------


async def test_token_identity_beats_the_ip(store) -> None:
    app = build_app(**store)
    # one token from three addresses: one bucket
    assert [
        (await call(app, ip=ip, token=TOKEN)).status_code
        for ip in ("10.0.0.1", "10.0.0.2", "10.0.0.3", "10.0.0.4")
    ] == [200, 200, 200, 429]
    # the same address without the token, or with another token: other buckets
    assert await statuses(app, 3, ip="10.0.0.1") == [200, 200, 200]
    assert await statuses(app, 3, ip="10.0.0.1", token="another-token-1234") == [200] * 3

    if "redis" in store:
        keys = sorted(key.decode() for key in await store["redis"].keys("*"))
        assert f"limits-test:ratelimit:data:tok:{TOKEN_HASH}" in keys
        assert "limits-test:ratelimit:data:ip:10.0.0.1" in keys
        assert not [key for key in keys if TOKEN in key or "another-token" in key]
        values = [await store["redis"].get(key) for key in keys]
        assert not [v for v in values if TOKEN.encode() in v]


async def test_bucket_keys_expire_when_the_bucket_is_full_again(redis_client) -> None:
    app = build_app(redis=redis_client, guard=redis_guard(timeout_seconds=PATIENT))
    await statuses(app, 2, path="/api/session/watchlist", token=TOKEN)
    ttl_ms = await redis_client.pttl(f"limits-test:ratelimit:session:tok:{TOKEN_HASH}")
    # two tokens used at 1/s: full again within 2 s (a family slow enough that the key is
    # still there however long the machine takes between the requests and this read)
    assert 0 < ttl_ms <= 2_000


async def test_rejected_tokens_fall_back_to_the_ip() -> None:
    app = build_app(clock=ManualClock(), token_is_valid=lambda token: token == TOKEN)
    assert await statuses(app, 3, token="made-up-1") == [200] * 3
    assert (await call(app, token="made-up-2")).status_code == 429  # same IP bucket
    assert (await call(app, token=TOKEN)).status_code == 200


async def test_forwarded_for_is_ignored_unless_trusted() -> None:
    app = build_app(clock=ManualClock())
    spoofed = [
        (await call(app, headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
        for n in range(4)
    ]
    assert spoofed == [200, 200, 200, 429]  # one peer address, one bucket

    app = build_app(limits(trust_forwarded_for=True), clock=ManualClock())
    proxy = "10.9.9.9"
    # behind the proxy: the last hop is the client the proxy saw; what the client
    # wrote before it (a spoofed first hop) does not create new buckets
    for n in range(4):
        forwarded = f"198.51.100.{n}, 203.0.113.7"
        response = await call(app, ip=proxy, headers={"X-Forwarded-For": forwarded})
        assert response.status_code == (429 if n == 3 else 200)
    other = await call(app, ip=proxy, headers={"X-Forwarded-For": "203.0.113.8"})
    assert other.status_code == 200


def test_client_identity() -> None:
    assert client_identity(f"Bearer {TOKEN}", "10.0.0.1") == f"tok:{TOKEN_HASH}"
    assert client_identity(f"bearer   {TOKEN} ", "10.0.0.1") == f"tok:{TOKEN_HASH}"
    assert client_identity(f"Bearer\t{TOKEN}", "10.0.0.1") == f"tok:{TOKEN_HASH}"
    assert client_identity(f"\tBEARER \t {TOKEN}\t", "10.0.0.1") == f"tok:{TOKEN_HASH}"
    assert client_identity("Basic dXNlcjpwYXNz", "10.0.0.1") == "ip:10.0.0.1"
    assert client_identity("Bearer ", "10.0.0.1") == "ip:10.0.0.1"
    assert client_identity(None, None) == "ip:unknown"
    # IPv6 hosts are grouped by their /64; IPv4-mapped addresses are IPv4
    assert client_identity(None, "2001:db8:1:2:aaaa::1") == "ip:2001:db8:1:2::/64"
    assert client_identity(None, "2001:db8:1:2:bbbb::9") == "ip:2001:db8:1:2::/64"
    assert client_identity(None, "::ffff:192.0.2.5") == "ip:192.0.2.5"
    assert client_identity(None, "2001:db8::1", ipv6_prefix_length=128) == "ip:2001:db8::1"
    # forwarded: only when trusted, counted from the right
    hops = "198.51.100.1, 203.0.113.7, 10.1.1.1"
    assert client_identity(None, "10.9.9.9", hops) == "ip:10.9.9.9"
    assert client_identity(None, "10.9.9.9", hops, trust_forwarded_for=True) == "ip:10.1.1.1"
    two = client_identity(None, "10.9.9.9", hops, trust_forwarded_for=True, proxy_hops=2)
    assert two == "ip:203.0.113.7"


# -- shared through Redis -----------------------------------------------------------------


async def test_two_instances_share_the_budget_through_redis(redis) -> None:
    """Two replicas (each its own client and breaker) on one Redis: one budget."""
    url = f"redis://{redis.address}/0"
    clients = [connect_redis(url, PATIENT), connect_redis(url, PATIENT)]
    try:
        clock = ManualClock()
        apps = [
            build_app(redis=c, guard=redis_guard(timeout_seconds=PATIENT), clock=clock)
            for c in clients
        ]
        seen = [(await call(apps[n % 2])).status_code for n in range(6)]
        assert seen == [200, 200, 200, 429, 429, 429]
        clock.advance(0.1)
        assert (await call(apps[1])).status_code == 200
        assert (await call(apps[0])).status_code == 429

        # concurrent decisions from both replicas: exactly the burst gets through
        limiters = [limiter_of(app) for app in apps]
        family = limiters[0].families["session"]
        decisions = await asyncio.gather(
            *(limiters[n % 2].check("ip:10.0.0.50", family) for n in range(20))
        )
        assert sum(d is not None and d.allowed for d in decisions) == 2
    finally:
        for c in clients:
            await c.aclose()


async def test_redis_server_clock_refills_the_bucket(redis_client) -> None:
    """Without an injected clock, Redis's own TIME drives the bucket."""
    rate_limits = limits(families={"data": {"rate": 1, "burst": 1, "paths": ["/api/dashboard"]}})
    app = build_app(rate_limits, redis_client, guard=redis_guard(timeout_seconds=PATIENT))
    assert (await call(app)).status_code == 200
    # the next token is 1 s away (ample for the two calls to come within it on a busy machine)
    assert (await call(app)).status_code == 429
    await asyncio.sleep(1.05)
    assert (await call(app)).status_code == 200


async def test_redis_outage_fails_open_and_limits_return(
    redis, redis_client, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="app.resilience.rate_limit")
    breaker_clock = ManualClock()
    app = build_app(redis=redis_client, guard=guard_on(breaker_clock), clock=ManualClock())
    assert await statuses(app, 4) == [200, 200, 200, 429]

    redis.kill()
    assert await statuses(app, 20) == [200] * 20  # no 429 and above all no 5xx
    assert limiter_of(app).stats()["failed_open"] == 20
    # Three refused connections open the breaker; the other 17 never reach for Redis
    # (the breaker's clock stands still, so no trial call comes in between).
    assert limiter_of(app).stats()["redis"] == {"ops": 7, "errors": 3, "skipped": 17}

    redis.restart()  # empty: the buckets start afresh

    async def limited_again() -> bool:
        breaker_clock.advance(15.0)  # past the breaker's longest back-off: a trial goes
        return (await call(app)).status_code == 429

    await eventually(limited_again)
    ours = [r for r in caplog.records if r.name == "app.resilience.rate_limit"]
    assert [r.levelno for r in ours if r.levelno >= logging.INFO][-2:] == [
        logging.WARNING,
        logging.INFO,
    ]
    assert sum(r.levelno == logging.WARNING for r in ours) == 1  # once per outage
    assert "not enforced" in ours[-2].getMessage()
    assert "timed out" not in ours[-2].getMessage()  # refused: nothing waited for a bound
    assert "enforced again" in ours[-1].getMessage()


async def test_an_unresponsive_redis_is_bounded_and_fails_open(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A server that accepts connections and never answers: requests still go through."""
    bounds: list[float | None] = []
    run = RedisGuard.run

    async def recorded(self: RedisGuard, *args: Any, **kwargs: Any) -> Any:
        bounds.append(kwargs.get("timeout_seconds"))
        return await run(self, *args, **kwargs)

    monkeypatch.setattr(RedisGuard, "run", recorded)
    caplog.set_level(logging.WARNING, logger="app.resilience.rate_limit")
    async with unresponsive_server() as port:
        # the client's own socket timeouts are far longer than the limiter's bound
        client = connect_redis(f"redis://127.0.0.1:{port}/0", 60.0)
        try:
            app = build_app(limits(redis_timeout_ms=100), client)
            started = time.monotonic()
            async with asyncio.timeout(30):  # against a hang only, not a measure of speed
                response = await call(app)
            assert response.status_code == 200
            assert time.monotonic() - started >= 0.1
            assert limiter_of(app).stats()["failed_open"] == 1
            # the limiter's 100 ms was the bound, and the guard's timeout ended the call
            assert bounds == [0.1]
            warning = next(r for r in caplog.records if r.name == "app.resilience.rate_limit")
            assert warning.getMessage().endswith("redis rate limit: timed out")
        finally:
            await client.aclose()


# -- configuration --------------------------------------------------------------------


def test_the_shipped_config_loads_with_the_documented_families() -> None:
    rate_limits = load_rate_limits()
    assert rate_limits == load_rate_limits(DEFAULT_RATE_LIMITS)
    assert not rate_limits.trust_forwarded_for
    summary = {name: (f.rate, f.burst) for name, f in rate_limits.families.items()}
    assert summary == {"data": (20, 40), "session": (5, 10), "admin": (2, 5), "rum": (5, 10)}

    limiter = RateLimiter(rate_limits)
    expected = {
        "/api/dashboard/data": "data",
        "/api/dashboard/mobile": "data",
        "/api/market/candles/BTCUSDT": "data",
        "/api/confluence/BTCUSDT": "data",
        "/api/bitcoin-beta": "data",
        "/api/symbols": "data",
        "/api/session/watchlist": "session",
        "/api/cache/invalidate": "admin",
        "/api/rum": "rum",
        "/api/marketing": None,  # a prefix matches whole path segments only
        "/health": None,
        "/health/ready": None,
        "/metrics": None,
        "/openapi.json": None,
        "/docs": None,
        "/static/app.js": None,
        "/": None,
    }
    found = {path: getattr(limiter.family_for(path), "name", None) for path in expected}
    assert found == expected


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("families: [", "is not valid YAML"),
        ("- data\n- session\n", "must hold a mapping"),
        ("familys: {}\n", "unknown setting familys"),
        (
            "families:\n  data: {rate: -1, burst: 2, paths: [/api/x]}\n",
            "families.data.rate=-1: Input should be greater than 0",
        ),
        (
            "families:\n  data: {rate: 1, burst: 0, paths: [/api/x]}\n",
            "families.data.burst=0: Input should be greater than or equal to 1",
        ),
        ("families:\n  data: {rate: 1, burst: 2}\n", "families.data.paths: Field required"),
        ("families:\n  data: {rate: 1, burst: 2, paths: [api/x]}\n", "must start with /"),
        ("families:\n  data: {rate: 1, burst: 2, paths: ['/']}\n", "would limit every route"),
        ("families:\n  Data!: {rate: 1, burst: 2, paths: [/api/x]}\n", "family name 'Data!'"),
        (
            "families:\n  a: {rate: 1, burst: 2, paths: [/api/x]}\n"
            "  b: {rate: 1, burst: 2, paths: [/api/x/]}\n",
            "path /api/x is listed by both a and b",
        ),
        ("trust_forwarded_for: maybe\n", "trust_forwarded_for='maybe'"),
        ("websocket: {max_connections_per_client: 0}\n", "max_connections_per_client=0"),
    ],
)
def test_an_invalid_config_file_is_a_config_error_naming_the_problem(
    tmp_path: Path, text: str, problem: str
) -> None:
    path = tmp_path / "ratelimits.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as error:
        load_rate_limits(path)
    message = str(error.value)
    assert message.startswith("invalid configuration: ")
    assert str(path) in message
    assert problem in message


def test_a_missing_config_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"cannot read .*nowhere\.yaml"):
        load_rate_limits(tmp_path / "nowhere.yaml")


def test_an_empty_config_file_limits_nothing(tmp_path: Path) -> None:
    path = tmp_path / "ratelimits.yaml"
    path.write_text("# nothing\n")
    assert load_rate_limits(path).families == {}


# -- memory bound -----------------------------------------------------------------------


class Keys:
    """``client in Keys(limiter)``: whether the memory store holds the client's data bucket."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter
        self.family = limiter.families["data"]

    def __contains__(self, client: str) -> bool:
        return self.limiter.key(self.family, client) in self.limiter.store

    def __len__(self) -> int:
        return len(self.limiter.store)


async def test_memory_buckets_stay_bounded() -> None:
    clock = ManualClock()
    limiter = RateLimiter(limits(max_memory_buckets=100), clock=clock)
    family = limiter.families["data"]
    assert isinstance(limiter.store, MemoryBuckets)
    store = Keys(limiter)
    old = [f"ip:10.1.0.{n}" for n in range(250)]
    for client in old:  # a flood of new clients: the least recently used go first
        await limiter.check(client, family)
        assert len(store) <= 100
    assert old[-1] in store and old[0] not in store

    clock.advance(1)  # every bucket is full again: the next prune drops all of them
    new = [f"ip:10.2.0.{n}" for n in range(101)]
    for client in new:
        await limiter.check(client, family)
    assert not [client for client in old if client in store]
    assert all(client in store for client in new[-10:])

    # a client that keeps its bucket busy keeps it through a prune
    busy = new[-1]
    for _ in range(2):
        await limiter.check(busy, family)  # its 3rd token (the 1st was in the loop)
    for n in range(200):
        await limiter.check(f"ip:10.3.0.{n}", family)
        await limiter.check(busy, family)  # denied: it stays the most recently used
    assert busy in store
    decision = await limiter.check(busy, family)
    assert decision is not None and not decision.allowed


# -- WebSocket connections ------------------------------------------------------------


async def test_connection_limit_per_client() -> None:
    limiter = limiter_of(build_app(clock=ManualClock()))
    alice, bob = "ip:10.0.0.1", f"tok:{TOKEN_HASH}"
    assert limiter.connections.acquire(alice)
    assert limiter.connections.acquire(alice)
    assert not limiter.connections.acquire(alice)  # max 2 per client
    assert limiter.connections.acquire(bob)  # others unaffected

    limiter.connections.release(alice)
    assert limiter.connections.open_connections(alice) == 1
    assert limiter.connections.acquire(alice)  # the freed slot
    assert not limiter.connections.acquire(alice)

    for _ in range(5):  # releasing more than was acquired is harmless
        limiter.connections.release(bob)
    assert limiter.connections.open_connections(bob) == 0
    assert limiter.stats()["websocket_clients"] == 1
    assert limiter.stats()["websocket_rejected"] == 2


def test_connection_limiter_rejects_a_zero_max() -> None:
    with pytest.raises(ValueError):
        ConnectionLimiter(0)


@pytest.mark.parametrize(
    ("hops", "trusted", "proxy_hops"), [(None, False, 1), ("0", False, 1), ("2", True, 2)]
)
async def test_trusted_proxy_hops_setting_overrides_the_file(
    hops: str | None, trusted: bool, proxy_hops: int
) -> None:
    """VIRTUOSO_TRUSTED_PROXY_HOPS: the compose stack trusts the one nginx in front."""
    clock = ManualClock()
    environ = {} if hops is None else {"VIRTUOSO_TRUSTED_PROXY_HOPS": hops}
    app = create_app(make_settings(**environ), SimulatedMarket(seed=7, clock=clock), clock)
    limiter = app.extensions[STATE_KEY].rate_limiter
    assert (limiter.limits.trust_forwarded_for, limiter.limits.proxy_hops) == (trusted, proxy_hops)


async def test_buckets_in_redis_need_the_deployments_keyspace(redis_client) -> None:
    with pytest.raises(ValueError, match="keyspace"):
        RateLimiter(limits(), redis_client)
    ours = RateLimiter(limits(), redis_client, keyspace=KEYSPACE, clock=ManualClock())
    theirs = RateLimiter(limits(), redis_client, keyspace=Keyspace("other"), clock=ManualClock())
    family = ours.families["data"]
    assert ours.key(family, "ip:10.0.0.9") == "limits-test:ratelimit:data:ip:10.0.0.9"
    assert theirs.key(family, "ip:10.0.0.9") == "other:ratelimit:data:ip:10.0.0.9"
