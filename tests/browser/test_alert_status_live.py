"""Alert status changes travel: every acknowledge and resolve is a live ``alert``
message on every replica, the alerts snapshot of ``/ws`` carries every recent alert
with its current status (also on a replica started after the change, seeded from the
store), the HTTP views follow (the cached list with its ETag, the mobile payload's
pending critical alerts), and a second acknowledge is a 409 carrying the alert as it
is now. Real servers: hypercorn on loopback, real WebSocket clients, real Redis."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from websockets.asyncio.client import ClientConnection, connect

from tests.conftest import RATE_LIMITS_OFF
from tests.support.browser import ServedApp, served_app

TOKEN = "alert-status-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
WAIT = 20.0  # seconds: generous for a busy 2-core machine


def environ(data_dir: Path, **extra: str) -> dict[str, str]:
    return {
        "VIRTUOSO_API_TOKEN": TOKEN,
        "VIRTUOSO_SYMBOLS": "BTCUSDT,ETHUSDT,SOLUSDT",
        "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
        "VIRTUOSO_DATA_DIR": str(data_dir),
        **extra,
    }


class AlertSocket:
    """One ``/ws`` client reading in the background (heartbeats answered)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[dict] = []
        self._arrived = asyncio.Event()
        self._task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = orjson.loads(raw)
            if message["type"] == "heartbeat":
                await self.send({"type": "pong", "nonce": message["nonce"]})
                continue
            self.received.append(message)
            self._arrived.set()

    async def send(self, message: dict) -> None:
        await self.ws.send(orjson.dumps(message).decode())

    async def first(self, wanted: Callable[[dict], bool], seconds: float = WAIT) -> dict:
        """The first message received (so far or later) that ``wanted`` accepts."""
        async with asyncio.timeout(seconds):
            while True:
                for message in self.received:
                    if wanted(message):
                        return message
                self._arrived.clear()
                await self._arrived.wait()

    async def snapshot(self, wanted: Callable[[dict[str, str]], bool]) -> dict[str, str]:
        """The statuses by alert id of the first alerts snapshot ``wanted`` accepts."""
        message = await self.first(
            lambda m: m["type"] == "snapshot" and wanted(statuses(m["items"]))
        )
        return statuses(message["items"])

    def close(self) -> None:
        self._task.cancel()


def statuses(items: list[dict]) -> dict[str, str]:
    return {item["data"]["id"]: item["data"]["status"] for item in items}


def alert_message(alert_id: str, status: str) -> Callable[[dict], bool]:
    return lambda m: (
        m["type"] == "alert" and m["data"]["id"] == alert_id and m["data"]["status"] == status
    )


@contextlib.asynccontextmanager
async def alert_socket(served: ServedApp, symbols: list[str] | None = None):
    url = served.base.replace("http://", "ws://") + "/ws"
    async with connect(url, ping_interval=None, open_timeout=10) as ws:
        socket = AlertSocket(ws)
        subscribe: dict[str, Any] = {"type": "subscribe", "channels": ["alerts"]}
        if symbols is not None:
            subscribe["symbols"] = symbols
        await socket.send(subscribe)
        await socket.first(lambda m: m["type"] == "snapshot")
        try:
            yield socket
        finally:
            socket.close()


@contextlib.asynccontextmanager
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=WAIT)) as session:
        yield session


async def call(
    session: aiohttp.ClientSession, served: ServedApp, method: str, path: str, **kw: Any
) -> tuple[int, Any]:
    async with session.request(method, served.base + path, **kw) as response:
        return response.status, await response.json()


async def add_rule(session: aiohttp.ClientSession, served: ServedApp, symbol: str, **kw) -> dict:
    """A critical rule that fires on the next snapshot: price above ``fraction`` of now."""
    price = served.state.pipeline.latest.tickers[symbol].last
    rule = {
        "kind": "price_above",
        "symbol": symbol,
        "threshold": price * kw.pop("fraction", 0.5),
        "level": "critical",
        "title": f"{symbol} holds",
        **kw,
    }
    status, body = await call(session, served, "post", "/api/alerts/rules", json=rule, headers=AUTH)
    assert status == 201, body
    return body["rule"]


async def fired(served: ServedApp, count: int) -> list[dict]:
    """Makes a snapshot (the rules fire on it), then waits until ``count`` alerts are
    stored; them by symbol, then threshold highest first."""
    await served.next_snapshot()
    async with asyncio.timeout(WAIT):
        while len(alerts := (await served.state.alerts.store.list_alerts())[0]) < count:  # noqa: ASYNC110
            await asyncio.sleep(0.05)
    return [a.to_dict() for a in sorted(alerts, key=lambda a: (a.symbol, -a.values["threshold"]))]


async def set_status(
    session: aiohttp.ClientSession, served: ServedApp, alert_id: str, action: str
) -> tuple[int, Any]:
    return await call(session, served, "post", f"/api/alerts/{alert_id}/{action}", headers=AUTH)


async def until(check: Callable[[], Awaitable[bool]], seconds: float = WAIT) -> None:
    """Until the async ``check`` is true (every 50 ms, at most ``seconds``)."""
    async with asyncio.timeout(seconds):
        while not await check():  # noqa: ASYNC110 (polling a server)
            await asyncio.sleep(0.05)


async def mobile_critical(session: aiohttp.ClientSession, served: ServedApp) -> list[str]:
    status, body = await call(session, served, "get", "/api/dashboard/mobile")
    assert status == 200
    return [a["id"] for a in body["critical_alerts"]]


async def no_critical(session: aiohttp.ClientSession, served: ServedApp) -> bool:
    return await mobile_critical(session, served) == []


async def test_status_changes_go_live_and_snapshots_carry_them(tmp_path: Path) -> None:
    async with served_app(**environ(tmp_path)) as served, http() as session:
        await add_rule(session, served, "BTCUSDT")
        await add_rule(session, served, "BTCUSDT", fraction=0.25)  # two alerts, one symbol
        await add_rule(session, served, "ETHUSDT")
        async with alert_socket(served) as early, alert_socket(served, ["ETHUSDT"]) as eth_only:
            btc, btc_low, eth = await fired(served, 3)
            for alert in (btc, btc_low, eth):
                await early.first(alert_message(alert["id"], "pending"))
            await eth_only.first(alert_message(eth["id"], "pending"))

            status, body = await set_status(session, served, btc["id"], "ack")
            assert status == 200 and body["alert"]["status"] == "acknowledged"
            changed = await early.first(alert_message(btc["id"], "acknowledged"))
            assert changed["data"]["acknowledged_at_ms"] == body["alert"]["acknowledged_at_ms"]
            assert set(await mobile_critical(session, served)) == {eth["id"], btc_low["id"]}

            status, conflict = await set_status(session, served, btc["id"], "ack")  # again
            assert status == 409 and conflict["error"] == "invalid_transition"
            assert conflict["alert"] == body["alert"]  # the alert as it is now
            status, missing = await set_status(session, served, "nosuchalert", "ack")
            assert status == 404 and missing["error"] == "unknown_alert"

            async with alert_socket(served) as late:  # opened after the change
                assert late.received[0]["channel"] == "alerts"
                assert statuses(late.received[0]["items"]) == {
                    btc["id"]: "acknowledged",
                    btc_low["id"]: "pending",
                    eth["id"]: "pending",
                }
                await set_status(session, served, eth["id"], "resolve")
                await late.first(alert_message(eth["id"], "resolved"))
                await eth_only.first(alert_message(eth["id"], "resolved"))
                await late.send({"type": "resync", "channels": ["alerts"]})
                await late.snapshot(lambda s: s.get(eth["id"]) == "resolved")
            assert not any(  # a symbol filter still applies to alerts and their changes
                m["type"] == "alert" and m["symbol"] != "ETHUSDT" for m in eth_only.received
            )
            assert await mobile_critical(session, served) == [btc_low["id"]]


async def test_the_alert_list_revalidates_cheaply_and_follows_every_change(
    tmp_path: Path,
) -> None:
    """What a page polls while WebSockets are blocked: /api/alerts with If-None-Match."""
    async with served_app(**environ(tmp_path)) as served, http() as session:
        await add_rule(session, served, "SOLUSDT")
        (alert,) = await fired(served, 1)
        path = "/api/alerts?limit=50"
        async with session.get(served.base + path) as first:
            etag = first.headers["ETag"]
            assert [a["status"] for a in (await first.json())["alerts"]] == ["pending"]
        async with session.get(served.base + path, headers={"If-None-Match": etag}) as same:
            assert same.status == 304 and await same.read() == b""
        await set_status(session, served, alert["id"], "ack")
        async with session.get(served.base + path, headers={"If-None-Match": etag}) as after:
            assert after.status == 200 and after.headers["ETag"] != etag
            assert [a["status"] for a in (await after.json())["alerts"]] == ["acknowledged"]
        assert await mobile_critical(session, served) == []


async def test_a_restarted_replica_snapshots_alerts_with_their_current_status(
    tmp_path: Path,
) -> None:
    async with served_app(**environ(tmp_path)) as served, http() as session:
        await add_rule(session, served, "BTCUSDT")
        await add_rule(session, served, "ETHUSDT")
        alerts = await fired(served, 2)
        first_id, second_id = (a["id"] for a in alerts)
        await set_status(session, served, first_id, "ack")
        await set_status(session, served, second_id, "resolve")
    # a restart: the alert file is read at start
    async with served_app(**environ(tmp_path)) as served, alert_socket(served) as socket:
        seeded = await socket.snapshot(lambda s: len(s) == 2)
    assert seeded == {first_id: "acknowledged", second_id: "resolved"}


async def test_status_changes_cross_replicas_through_redis(redis, tmp_path: Path) -> None:
    shared = {"VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0"}
    async with contextlib.AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                served_app(**environ(tmp_path / name, VIRTUOSO_REPLICA_ID=name, **shared))
            )
            for name in ("one", "two")
        ]
        for replica in (one, two):
            assert await replica.state.broadcaster.wait_ready(WAIT)
        session = await stack.enter_async_context(http())
        on_one = await stack.enter_async_context(alert_socket(one))
        on_two = await stack.enter_async_context(alert_socket(two))
        await add_rule(session, one, "BTCUSDT")
        (alert,) = await fired(one, 1)
        for socket in (on_one, on_two):
            await socket.first(alert_message(alert["id"], "pending"))

        # Acknowledged on replica one, which made the snapshot (and rebuilds the views)
        assert one.state.pipeline.latest is not None
        status, _ = await set_status(session, one, alert["id"], "ack")
        assert status == 200
        for socket in (on_one, on_two):
            await socket.first(alert_message(alert["id"], "acknowledged"))
        for replica in (one, two):  # each replica's cached list follows
            status, listed = await call(session, replica, "get", "/api/alerts")
            assert [a["status"] for a in listed["alerts"]] == ["acknowledged"]
        for replica in (one, two):  # and the phones' payload, live or polled
            await until(lambda r=replica: no_critical(session, r))
        status, conflict = await set_status(session, two, alert["id"], "ack")  # too late
        assert status == 409 and conflict["alert"]["status"] == "acknowledged"

        three = await stack.enter_async_context(  # started after the change
            served_app(**environ(tmp_path / "three", VIRTUOSO_REPLICA_ID="three", **shared))
        )
        on_three = await stack.enter_async_context(alert_socket(three))
        assert await on_three.snapshot(bool) == {alert["id"]: "acknowledged"}
        await set_status(session, two, alert["id"], "resolve")  # through replica two
        for socket in (on_one, on_two, on_three):
            await socket.first(alert_message(alert["id"], "resolved"))
        async with alert_socket(two) as fresh:
            assert statuses(fresh.received[0]["items"]) == {alert["id"]: "resolved"}


async def test_a_change_on_a_replica_without_the_snapshot_reaches_phones_at_once(
    redis, tmp_path: Path
) -> None:
    """The replica that makes the snapshots rebuilds the phones' payload when another
    replica changes an alert, not at its next refresh (stopped here: never)."""
    shared = {"VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0"}
    async with contextlib.AsyncExitStack() as stack:
        one, two = [
            await stack.enter_async_context(
                served_app(**environ(tmp_path / name, VIRTUOSO_REPLICA_ID=name, **shared))
            )
            for name in ("one", "two")
        ]
        session = await stack.enter_async_context(http())
        await add_rule(session, one, "BTCUSDT")
        (alert,) = await fired(one, 1)
        for replica in (one, two):
            await until(lambda r=replica: _has_critical(session, r, alert["id"]))
        idle = two if two.state.pipeline.latest is None else one
        maker = one if idle is two else two
        assert idle.state.pipeline.latest is None  # only one replica made a snapshot
        for replica in (maker, idle):
            await replica.state.pipeline.stop()  # no refresh will rebuild the views
        status, _ = await set_status(session, idle, alert["id"], "ack")
        assert status == 200
        for replica in (maker, idle):
            await until(lambda r=replica: no_critical(session, r))


async def _has_critical(session: aiohttp.ClientSession, served: ServedApp, alert_id: str) -> bool:
    return alert_id in await mobile_critical(session, served)
