"""Two deployments with different cache namespaces on one Redis and one Memcached:
each refreshes for itself, and every key and channel either writes carries its own
namespace (locks and fences, refresh marker, views, generations, invalidation bus,
realtime channel and sequences, sessions, rate-limit buckets, alert store)."""

from __future__ import annotations

import socket
import urllib.parse
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from quart.typing import TestAppProtocol as QuartTestApp
from redis.asyncio import Redis

from app.settings import DEFAULT_CACHE_POLICY
from tests.conftest import ManualClock, state_of
from tests.support.replicas import TOKEN, replica

API_TOKEN = "api-token-for-namespace-tests"
SHIPPED_RATE_LIMITS = str(Path(__file__).parents[2] / "config" / "ratelimits.yaml")
NAMESPACES = ("desk-a", "desk-b")


def policy_file(directory: Path, namespace: str) -> str:
    """The shipped cache policy with another namespace."""
    text = DEFAULT_CACHE_POLICY.read_text()
    assert "\nnamespace: virtuoso" in text
    path = directory / f"cache-{namespace}.yaml"
    path.write_text(text.replace("\nnamespace: virtuoso", f"\nnamespace: {namespace}"))
    return str(path)


def deployment(policy: str) -> dict[str, str]:
    """A deployment's own settings: its cache policy (namespace), the shipped rate limits
    (their buckets are keys too), an API token (alert rules are keys too)."""
    return {
        "VIRTUOSO_CACHE_POLICY": policy,
        "VIRTUOSO_RATE_LIMITS": SHIPPED_RATE_LIMITS,
        "VIRTUOSO_API_TOKEN": API_TOKEN,
        "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT",
    }


@pytest.fixture
async def deployments(
    memcached, redis, clock: ManualClock, tmp_path: Path
) -> AsyncIterator[tuple[QuartTestApp, QuartTestApp]]:
    policies = [policy_file(tmp_path, namespace) for namespace in NAMESPACES]
    async with (
        replica(memcached, redis, clock, "a", **deployment(policies[0])) as a,
        replica(memcached, redis, clock, "b", **deployment(policies[1])) as b,
    ):
        yield a, b


def tickers_fetched(app: QuartTestApp) -> int:
    return state_of(app).pipeline.source.calls["tickers"]


async def use_everything(app: QuartTestApp, redis_client: Redis) -> list[str]:
    """Sessions, alert rules, rate-limited reads, an invalidation and a refresh whose
    live updates go out through Redis. Returns the rate-limit keys right after the reads:
    a bucket lives only until it has refilled (20 reads of the data family's 20 a second:
    about a second, which a busy machine's pause does not outlast)."""
    client = app.test_client()
    admin = {"Authorization": f"Bearer {TOKEN}"}
    saved = await client.put("/api/session/watchlist", json={"watchlist": ["BTCUSDT"]})
    assert saved.status_code == 200
    rule = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 1}
    api = {"Authorization": f"Bearer {API_TOKEN}"}
    assert (await client.post("/api/alerts/rules", json=rule, headers=api)).status_code == 201
    for path in ("/api/dashboard/data", "/api/market/candles/ETHUSDT?timeframe=1h"):
        response = await client.get(path)
        assert response.status_code == 200 and "RateLimit-Remaining" in response.headers
    for _ in range(18):
        assert (await client.get("/api/symbols")).status_code == 200
    buckets = [key.decode() async for key in redis_client.scan_iter(match="*:ratelimit:*")]
    invalidated = await client.post(
        "/api/cache/invalidate", json={"family": "market"}, headers=admin
    )
    assert invalidated.status_code == 200
    assert await state_of(app).pipeline.refresh(force=True) is not None
    assert state_of(app).broadcaster.broker.snapshot()["published"]["ops"] > 0
    return buckets


def memcached_keys(address: str) -> list[str]:
    """Every live key of the Memcached at ``address`` (``lru_crawler metadump all``)."""
    host, port = address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), 5) as sock:
        sock.sendall(b"lru_crawler metadump all\r\n")
        reply = b""
        while not reply.endswith(b"END\r\n"):
            chunk = sock.recv(65536)
            assert chunk, f"memcached closed the connection: {reply[-200:]!r}"
            reply += chunk
    return [
        urllib.parse.unquote(line.split(" ", 1)[0].removeprefix("key="))
        for line in reply.decode().splitlines()
        if line.startswith("key=")
    ]


def outside_the_namespaces(names: list[str]) -> list[str]:
    return [name for name in names if not name.startswith(tuple(f"{n}:" for n in NAMESPACES))]


async def test_each_deployment_refreshes_while_the_other_holds_its_refresh_lock(
    deployments: tuple[QuartTestApp, QuartTestApp],
) -> None:
    a, b = deployments
    assert tickers_fetched(a) >= 1 and tickers_fetched(b) >= 1  # both refreshed at start
    a_locks = state_of(a).runtime.locks
    assert a_locks is not None
    held = await a_locks.acquire("refresh", ttl_ms=60_000)  # deployment a refreshing
    assert held is not None
    try:
        before = tickers_fetched(b)
        assert await state_of(b).pipeline.refresh(force=True) is not None  # not skipped
        assert tickers_fetched(b) == before + 1
    finally:
        await a_locks.release(held)


async def test_every_key_and_channel_carries_its_deployments_namespace(
    deployments: tuple[QuartTestApp, QuartTestApp], memcached, redis
) -> None:
    client = Redis.from_url(f"redis://{redis.address}/0")
    seen: set[str] = set()
    try:
        for app in deployments:
            seen.update(await use_everything(app, client))
            seen.update([key.decode() async for key in client.scan_iter(count=1000)])
        keys = sorted(seen)
        channels = sorted(channel.decode() for channel in await client.pubsub_channels())
    finally:
        await client.aclose()
    for namespace in NAMESPACES:  # each deployment wrote its own of every kind
        for kind in ("lock:", "view:", "session:", "ratelimit:", "alerts:", "realtime:seq:"):
            assert any(key.startswith(f"{namespace}:{kind}") for key in keys), (namespace, kind)
        assert f"{namespace}:generations" in keys
        assert {f"{namespace}:invalidate", f"{namespace}:realtime"} <= set(channels)
    assert outside_the_namespaces(keys) == []
    assert outside_the_namespaces(channels) == []
    stored = memcached_keys(memcached.address)
    assert {key.split(":", 1)[0] for key in stored} == set(NAMESPACES)
    assert outside_the_namespaces(stored) == []
