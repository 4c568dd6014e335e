"""The compose topology with local processes (tools/local_stack.py): nginx in front of
two `virtuoso serve` replicas sharing Memcached and Redis, Prometheus scraping both on
their monitoring listeners, the replicas on ccxt against the loopback fake Bybit."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest_asyncio
import websockets

from tests.conftest import FAKE_EXCHANGE_RATE_LIMIT_MS, eventually
from tools.fake_bybit import TICKERS_PATH, FakeBybit
from tools.local_stack import LocalStack, Ports

REFRESH_SECONDS = 2
ADMIN_TOKEN = "stack-test-admin-token-0123"


@pytest_asyncio.fixture
async def stack() -> AsyncIterator[tuple[LocalStack, FakeBybit]]:
    async with FakeBybit(symbols=["BTCUSDT", "ETHUSDT", "SOLUSDT"]) as fake:
        local = LocalStack(
            Ports.free(),
            app_env={
                "VIRTUOSO_EXCHANGE": "bybit",
                "VIRTUOSO_EXCHANGE_URL": fake.base_url,
                "VIRTUOSO_EXCHANGE_RATE_LIMIT_MS": FAKE_EXCHANGE_RATE_LIMIT_MS,
                "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT",
                "VIRTUOSO_REFRESH_SECONDS": str(REFRESH_SECONDS),
                "VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN,
            },
        )
        await asyncio.to_thread(local.start)  # the fake exchange keeps serving meanwhile
        try:
            yield local, fake
        finally:
            await asyncio.to_thread(local.stop)
        assert all(p.popen is not None and p.popen.poll() is not None for p in local.processes)


async def metric(http: aiohttp.ClientSession, base: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, read from /metrics at ``base``
    (a replica's monitoring listener)."""
    async with http.get(f"{base}/metrics") as response:
        text = await response.text()
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}(?:\{{(.*)\}})? (\S+)$", line)
        if match and all(f'{k}="{v}"' in (match.group(1) or "") for k, v in labels.items()):
            total += float(match.group(2))
    return total


async def wait_warm(http: aiohttp.ClientSession, stack: LocalStack) -> None:
    for _ in range(200):
        states = []
        for base in stack.replica_urls():
            async with http.get(f"{base}/health/ready") as response:
                states.append(response.status)
        if states == [200, 200]:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"replicas not ready: {states}")


async def test_the_stack_behaves_as_one_service(stack) -> None:
    local, fake = stack
    async with aiohttp.ClientSession() as http:
        await wait_warm(http, local)
        await requests_reach_both_replicas(http, local)
        await websockets_get_updates_made_on_either_replica(http, local, fake)
        await one_exchange_refresh_per_interval_for_the_stack(http, local, fake)
        await invalidation_reaches_the_other_replica(http, local)
        await prometheus_sees_both_replicas(http, local)


async def requests_reach_both_replicas(http: aiohttp.ClientSession, local: LocalStack) -> None:
    route = {"route": "/api/dashboard/data", "status": "200"}
    name = "virtuoso_http_request_duration_seconds_count"
    before = [await metric(http, base, name, **route) for base in local.monitoring_urls()]
    for _ in range(20):
        async with http.get(f"{local.url}/api/dashboard/data") as response:
            assert response.status == 200
            assert (await response.json())["source"] == "ccxt"
    after = [await metric(http, base, name, **route) for base in local.monitoring_urls()]
    served = [a - b for a, b in zip(after, before, strict=True)]
    assert sum(served) == 20 and all(n > 0 for n in served), served
    async with http.get(f"{local.url}/metrics") as response:
        assert response.status == 404  # not published through the proxy
    for base in local.replica_urls():  # nor on a replica's public listener
        async with http.get(f"{base}/metrics") as response:
            assert response.status == 404


async def websockets_get_updates_made_on_either_replica(
    http: aiohttp.ClientSession, local: LocalStack, fake: FakeBybit
) -> None:
    """Clients through nginx until one sits on each replica; both then see every
    update with the same seq, whichever replica refreshed."""
    ws_url = local.url.replace("http://", "ws://") + "/ws"
    async with contextlib.AsyncExitStack() as sockets:
        clients = []
        for _ in range(6):
            socket = await sockets.enter_async_context(websockets.connect(ws_url))
            await socket.send(orjson.dumps({"type": "subscribe", "channels": ["market"]}))
            clients.append(socket)
            counts = [
                await metric(http, base, "virtuoso_ws_connections")
                for base in local.monitoring_urls()
            ]
            if all(count >= 1 for count in counts):
                break
        else:
            raise AssertionError("nginx never sent a WebSocket to the second replica")
        seen: list[set[tuple[str, int]]] = [set() for _ in clients]

        async def read(index: int) -> None:
            while True:
                message = orjson.loads(await clients[index].recv())
                if message["type"] == "update":
                    seen[index].add((message["symbol"], message["seq"]))
                elif message["type"] == "heartbeat":
                    await clients[index].send(
                        orjson.dumps({"type": "pong", "nonce": message["nonce"]})
                    )

        readers = [asyncio.create_task(read(i)) for i in range(len(clients))]
        for step in range(3):  # the price moves: each refresh publishes updates
            fake.tickers["BTCUSDT"]["lastPrice"] = f"{90000 + 100 * (step + 1):.2f}"
            await asyncio.sleep(REFRESH_SECONDS + 0.5)
        await eventually(lambda: all(len(s) >= 2 for s in seen), seconds=15)
        for reader in readers:
            reader.cancel()
        common = set.intersection(*seen)
        assert len(common) >= 2, seen  # the same updates, same seq, on both replicas


async def one_exchange_refresh_per_interval_for_the_stack(
    http: aiohttp.ClientSession, local: LocalStack, fake: FakeBybit
) -> None:
    """The stack fetches the tickers once per refresh round, not once per replica:
    counted against the rounds the replicas' refreshers ran (their metrics), so a busy
    machine that runs fewer rounds does not fail it."""

    async def rounds() -> list[float]:
        name = "virtuoso_pipeline_refreshes_total"  # every attempt: ok, skipped, error
        return [await metric(http, base, name) for base in local.monitoring_urls()]

    calls_before, before = fake.count(TICKERS_PATH), await rounds()
    await asyncio.sleep(4 * REFRESH_SECONDS)
    ran = [after - b for after, b in zip(await rounds(), before, strict=True)]
    calls = fake.count(TICKERS_PATH) - calls_before
    assert all(n >= 1 for n in ran), ran  # both refreshers ran
    # each replica ran about max(ran) rounds: without coordination, twice as many calls
    assert 1 <= calls <= max(ran) + 1, (calls, ran)


async def invalidation_reaches_the_other_replica(
    http: aiohttp.ClientSession, local: LocalStack
) -> None:
    first, second = local.monitoring_urls()  # where the operator endpoints are
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    async with http.get(f"{second}/api/cache/metrics", headers=headers) as response:
        generation = (await response.json())["generations"].get("confluence", 0)
    async with http.post(
        f"{first}/api/cache/invalidate", json={"family": "confluence"}, headers=headers
    ) as response:
        assert response.status == 200, await response.text()

    async def moved() -> int:
        async with http.get(f"{second}/api/cache/metrics", headers=headers) as response:
            return (await response.json())["generations"].get("confluence", 0)

    for _ in range(50):
        if await moved() > generation:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the other replica never saw the invalidation")


async def prometheus_sees_both_replicas(http: aiohttp.ClientSession, local: LocalStack) -> None:
    wanted = {f"127.0.0.1:{port}" for port in local.ports.monitoring}
    for _ in range(100):
        async with http.get(f"{local.prometheus_url}/api/v1/targets") as response:
            targets = (await response.json())["data"]["activeTargets"]
        up = {t["labels"]["instance"] for t in targets if t["health"] == "up"}
        if wanted <= up:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus targets: {targets}")
