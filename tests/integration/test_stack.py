"""The compose topology with local processes (tools/local_stack.py): one `virtuoso
collect` on ccxt against the loopback fake Bybit, publishing into Memcached and Redis;
nginx in front of two `virtuoso serve` replicas serving from them
(VIRTUOSO_COLLECTOR=external); Prometheus scraping the replicas and the collector on
their monitoring listeners.

Only the collector calls the exchange (one refresh per interval however many replicas
serve); killing it leaves the replicas answering 200 with the last data marked stale,
and a collector started again makes it fresh."""

from __future__ import annotations

import asyncio
import contextlib
import re
import signal
import time
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest_asyncio
import websockets

from tests.conftest import FAKE_EXCHANGE_RATE_LIMIT_MS, RATE_LIMITS_OFF, eventually
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
                # REST polling: the checks below move prices and count calls by REST
                # (the streams have tests of their own: test_streaming_service)
                "VIRTUOSO_STREAMS": "off",
                "VIRTUOSO_EXCHANGE_RATE_LIMIT_MS": FAKE_EXCHANGE_RATE_LIMIT_MS,
                "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT",
                "VIRTUOSO_REFRESH_SECONDS": str(REFRESH_SECONDS),
                "VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN,
                "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,  # the waits below poll every 50 ms
                # a killed collector: gone after 3 s without a report, its lease lapsed
                # after 3 s (5 s each in production)
                "VIRTUOSO_COLLECTOR_SILENCE_SECONDS": "3",
                "VIRTUOSO_COLLECTOR_LEASE_SECONDS": "3",
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
        await only_the_collector_calls_the_exchange(http, local, fake)
        await invalidation_reaches_the_other_replica(http, local)
        await prometheus_sees_the_replicas_and_the_collector(http, local)
        await without_the_collector_the_replicas_serve_stale(http, local)
        await a_collector_started_again_makes_it_fresh(http, local)


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
        for step in range(3):  # the price moves: the next refresh publishes updates
            fake.tickers["BTCUSDT"]["lastPrice"] = f"{90000 + 100 * (step + 1):.2f}"
            await eventually(lambda moved=step + 1: all(len(s) >= moved for s in seen), seconds=15)
        for reader in readers:
            reader.cancel()
        common = set.intersection(*seen)
        assert len(common) >= 2, seen  # the same updates, same seq, on both replicas


async def only_the_collector_calls_the_exchange(
    http: aiohttp.ClientSession, local: LocalStack, fake: FakeBybit
) -> None:
    """The stack fetches the tickers once per refresh, whatever the replicas serve
    meanwhile: counted against the refreshes the collector ran (its metrics), so a busy
    machine that runs fewer does not fail it. The collector counts every call the fake
    exchange saw; the replicas count none and lead nothing."""
    (collector,) = local.collector_urls()
    requests = "virtuoso_exchange_requests_total"

    async def refreshes() -> float:  # every attempt: ok, skipped, error
        return await metric(http, collector, "virtuoso_pipeline_refreshes_total")

    calls_before, before = fake.count(TICKERS_PATH), await refreshes()
    batches = 0
    # traffic on the replicas while the collector refreshes twice or more: it must not
    # reach the exchange
    while batches < 4 or await refreshes() - before < 2:
        assert batches < 120, "the collector did not refresh twice within a minute"
        for _ in range(10):
            async with http.get(f"{local.url}/api/dashboard/data") as response:
                assert response.status == 200
        batches += 1
        await asyncio.sleep(0.5)
    ran = await refreshes() - before
    calls = fake.count(TICKERS_PATH) - calls_before
    assert ran >= 1 and 1 <= calls <= ran + 1, (calls, ran)
    assert await metric(http, collector, "virtuoso_collector_leading") == 1
    # what the fake exchange saw is what the collector counted (a call in flight aside)
    seen, counted = (
        fake.count(TICKERS_PATH),
        await metric(http, collector, requests, endpoint="tickers"),
    )
    assert counted <= seen <= counted + 1, (seen, counted)
    for base in local.monitoring_urls():  # the replicas never call it
        assert await metric(http, base, requests) == 0


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


async def prometheus_sees_the_replicas_and_the_collector(
    http: aiohttp.ClientSession, local: LocalStack
) -> None:
    """Every replica up in job ``virtuoso``, the collector in ``virtuoso-collector`` (as
    the compose configuration names them)."""
    wanted = {("virtuoso", f"127.0.0.1:{port}") for port in local.ports.monitoring}
    wanted |= {("virtuoso-collector", f"127.0.0.1:{port}") for port in local.ports.collectors}
    for _ in range(100):
        async with http.get(f"{local.prometheus_url}/api/v1/targets") as response:
            targets = (await response.json())["data"]["activeTargets"]
        up = {(t["labels"]["job"], t["labels"]["instance"]) for t in targets if t["health"] == "up"}
        if wanted <= up:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"Prometheus targets: {targets}")


async def dashboard(http: aiohttp.ClientSession, base: str) -> dict:
    """The dashboard from ``base`` (the proxy or a replica); anything but a 200 fails
    the test."""
    async with http.get(f"{base}/api/dashboard/data") as response:
        assert response.status == 200, await response.text()
        return await response.json()


async def readiness(http: aiohttp.ClientSession, local: LocalStack) -> list[dict]:
    """Each replica's /health/ready; anything but a 200 fails the test (data can be had)."""
    found = []
    for base in local.replica_urls():
        async with http.get(f"{base}/health/ready") as response:
            assert response.status == 200, await response.text()
            found.append(await response.json())
    return found


async def without_the_collector_the_replicas_serve_stale(
    http: aiohttp.ClientSession, local: LocalStack
) -> None:
    """The collector killed: every answer stays a 200, readiness turns ``degraded``
    naming the silent collector, and the data is marked stale once it ages."""
    await eventually(lambda: all_fresh(http, local), seconds=60)  # after the invalidation
    collector = local.process("collector-1").popen
    assert collector is not None
    collector.send_signal(signal.SIGKILL)
    await asyncio.to_thread(collector.wait, 10)

    async def degraded() -> bool:
        states = await readiness(http, local)
        return all(
            state["status"] == "degraded"
            and any("collector" in reason for reason in state.get("reasons", []))
            for state in states
        )

    async def stale() -> bool:
        return all([(await dashboard(http, base))["stale"] for base in local.replica_urls()])

    await eventually(degraded, seconds=60)
    await eventually(stale, seconds=60)
    for _ in range(10):  # through the proxy: served, marked stale
        body = await dashboard(http, local.url)
        assert body["stale"] and body["source"] == "ccxt"


async def a_collector_started_again_makes_it_fresh(
    http: aiohttp.ClientSession, local: LocalStack
) -> None:
    collector = local.process("collector-1")
    collector.start(local.dir)
    await asyncio.to_thread(collector.wait_listening, time.monotonic() + 60)
    await eventually(lambda: all_fresh(http, local), seconds=60)


async def all_fresh(http: aiohttp.ClientSession, local: LocalStack) -> bool:
    """Both replicas ready (``ok``) and serving fresh data; False while either is not
    (a 503 included: an invalidated view waits for the collector's next refresh)."""
    for base in local.replica_urls():
        async with http.get(f"{base}/health/ready") as response:
            if response.status != 200 or (await response.json())["status"] != "ok":
                return False
        async with http.get(f"{base}/api/dashboard/data") as response:
            if response.status != 200 or (await response.json())["stale"]:
                return False
    return True
