"""Two `virtuoso serve` processes sharing a real Redis and Memcached, real WebSocket
clients on each: updates reach the clients of both replicas exactly once, with the
same sequence numbers; an alert triggered on one replica shows on both."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from collections.abc import Iterator

import pytest
import websockets

from tests.conftest import RATE_LIMITS_OFF
from tests.support.serve import start_serve, stop, wait_until_ready
from tests.support.servers import free_port

TOKEN = "alerts-api-token-for-tests"


@pytest.fixture
def replicas(memcached, redis, tmp_path) -> Iterator[list[str]]:
    processes, bases = [], []
    for name in ("a", "b"):
        port = free_port()
        environ = {
            "VIRTUOSO_BIND": f"127.0.0.1:{port}",
            "VIRTUOSO_REFRESH_SECONDS": "1",
            "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT",
            "VIRTUOSO_REPLICA_ID": name,
            "VIRTUOSO_MEMCACHED_URL": memcached.address,
            "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
            "VIRTUOSO_API_TOKEN": TOKEN,
            "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
            "VIRTUOSO_DATA_DIR": str(tmp_path / name),
        }
        process = start_serve(environ)
        processes.append(process)
        bases.append(f"127.0.0.1:{port}")
    try:
        for base, process in zip(bases, processes, strict=True):
            wait_until_ready(f"http://{base}", process)
        yield bases
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            stop(process)


class Reader:
    """Reads one connection in the background: answers heartbeats, keeps the rest."""

    def __init__(self, ws) -> None:
        self.ws = ws
        self.messages: asyncio.Queue[dict] = asyncio.Queue()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if message["type"] == "heartbeat":
                await self.ws.send(json.dumps({"type": "pong", "nonce": message["nonce"]}))
            else:
                await self.messages.put(message)

    async def until(self, count: int, seconds: float, kind: str) -> list[dict]:
        """``count`` messages of ``kind`` (others skipped), within ``seconds``."""
        found: list[dict] = []
        async with asyncio.timeout(seconds):
            while len(found) < count:
                message = await self.messages.get()
                if message["type"] == kind:
                    found.append(message)
        return found


def get(base: str, path: str) -> dict:
    with urllib.request.urlopen(f"http://{base}{path}", timeout=5) as response:
        return json.load(response)


def post(base: str, path: str, body: dict) -> dict:
    request = urllib.request.Request(
        f"http://{base}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {TOKEN}"},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


async def test_updates_and_alerts_reach_both_replicas_once(replicas: list[str]) -> None:
    # Simulated prices move every 5 s: three symbols give an update every few seconds.
    symbols = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    subscribe = {"type": "subscribe", "channels": ["market", "alerts"], "symbols": symbols}
    async with (  # the app's own heartbeat is answered; no library keepalive on top
        websockets.connect(f"ws://{replicas[0]}/ws", ping_interval=None) as on_a,
        websockets.connect(f"ws://{replicas[1]}/ws", ping_interval=None) as on_b,
    ):
        a, b = Reader(on_a), Reader(on_b)
        for ws, reader in ((on_a, a), (on_b, b)):
            await ws.send(json.dumps(subscribe))
            snapshots = await reader.until(1, 10, "snapshot")
            assert snapshots[0]["channel"] in ("market", "alerts")
        updates_a = await a.until(3, 40, "update")
        seqs_a = [u["seq"] for u in updates_a]
        assert all(u["channel"] == "market" and u["symbol"] in symbols for u in updates_a)
        assert seqs_a == sorted(set(seqs_a))  # increasing, no duplicate
        updates_b = await b.until(6, 40, "update")
        seqs_b = [u["seq"] for u in updates_b]
        assert seqs_b == sorted(set(seqs_b))
        assert set(seqs_a) & set(seqs_b)  # the same messages, same numbers, on both

        price = (await asyncio.to_thread(get, replicas[0], "/api/market/overview"))["overview"][
            "btc_price"
        ]
        rule = (
            await asyncio.to_thread(
                post,
                replicas[0],
                "/api/alerts/rules",
                {
                    "kind": "price_above",
                    "symbol": "BTCUSDT",
                    "threshold": price / 2,
                    "level": "critical",
                },
            )
        )["rule"]
        alert_a = (await a.until(1, 30, "alert"))[0]
        alert_b = (await b.until(1, 30, "alert"))[0]
        assert alert_a["data"]["rule_id"] == rule["id"]
        assert alert_a["data"]["id"] == alert_b["data"]["id"] and alert_a["seq"] == alert_b["seq"]
