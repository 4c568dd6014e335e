"""The broadcaster and connection queues without a server: a fake WebSocket."""

from __future__ import annotations

import asyncio
import time

import orjson
import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from app.realtime import Broadcaster, Rejected, WsLimits, protocol
from app.realtime.connection import Connection


class FakeSocket:
    """Records what is sent; ``gate`` cleared → send blocks (a slow client)."""

    def __init__(self) -> None:
        self.sent: list[dict] = []
        self.gate = asyncio.Event()
        self.gate.set()

    async def send(self, text: str) -> None:
        await self.gate.wait()
        self.sent.append(orjson.loads(text))


async def connected(broadcaster: Broadcaster, client: str = "c") -> tuple[Connection, FakeSocket]:
    ws = FakeSocket()
    return await broadcaster.connect(ws, client), ws


def subscribe(broadcaster: Broadcaster, conn: Connection, channels, symbols=None) -> None:
    message = {"type": "subscribe", "channels": channels}
    if symbols is not None:
        message["symbols"] = symbols
    broadcaster.handle_message(conn, orjson.dumps(message))


def queued_types(conn: Connection) -> list[str]:
    texts = []
    while (item := conn._next()) is not None:
        texts.append(orjson.loads(item[0]))
    return texts


async def test_coalescing_keeps_the_latest_per_symbol_and_every_alert_first() -> None:
    broadcaster = Broadcaster("r1")
    conn, ws = await connected(broadcaster)
    subscribe(broadcaster, conn, ["market", "alerts"])
    ws.gate.clear()
    sender = asyncio.create_task(conn.run_sender())
    try:
        await asyncio.sleep(0.01)  # the sender now waits in send() of the first snapshot
        for i in range(5):
            await broadcaster.publish("market", "BTCUSDT", {"i": i}, 1000 + i)
        for i in range(3):
            await broadcaster.publish("market", "ETHUSDT", {"i": i}, 1000 + i)
            await broadcaster.publish_alert({"symbol": "ETHUSDT", "n": i}, 2000 + i)
        assert conn.queued == 2 + 3 + 1  # second snapshot, 3 alerts, 2 coalesced updates
        ws.gate.set()
        async with asyncio.timeout(5):
            while conn.queued or len(ws.sent) < 7:  # noqa: ASYNC110
                await asyncio.sleep(0.01)
    finally:
        sender.cancel()
    kinds = [
        (m["type"], m.get("symbol"), m.get("data", {}).get("i", m.get("data", {}).get("n")))
        for m in ws.sent
    ]
    assert kinds == [
        ("snapshot", None, None),
        ("snapshot", None, None),
        ("alert", "ETHUSDT", 0),
        ("alert", "ETHUSDT", 1),
        ("alert", "ETHUSDT", 2),
        ("update", "BTCUSDT", 4),
        ("update", "ETHUSDT", 2),
    ]
    assert broadcaster.stats.coalesced["market"] == 4 + 2
    assert broadcaster.stats.sent["market"] == 2 and broadcaster.stats.sent["alerts"] == 3
    assert len(broadcaster.stats.latencies) == 5


async def test_fan_out_reaches_only_matching_subscriptions() -> None:
    broadcaster = Broadcaster("r1")
    btc, _ = await connected(broadcaster, "a")
    everything, _ = await connected(broadcaster, "b")
    other, _ = await connected(broadcaster, "c")
    subscribe(broadcaster, btc, ["market"], ["btc/usdt"])
    subscribe(broadcaster, everything, ["market"])
    subscribe(broadcaster, other, ["beta"])
    for conn in (btc, everything, other):
        queued_types(conn)  # the snapshots
    await broadcaster.publish("market", "BTCUSDT", {}, 1)
    await broadcaster.publish("market", "ETHUSDT", {}, 1)
    await broadcaster.publish("market", None, {"all": True}, 1)
    assert [m["symbol"] for m in queued_types(btc)] == ["BTCUSDT", None]
    assert [m["symbol"] for m in queued_types(everything)] == ["BTCUSDT", "ETHUSDT", None]
    assert queued_types(other) == []
    broadcaster.handle_message(btc, b'{"type":"unsubscribe","channels":["market"]}')
    await broadcaster.publish("market", "BTCUSDT", {}, 1)
    assert queued_types(btc) == []
    assert broadcaster.hub._index["market"].keys() == {None}


async def test_queue_bound_closes_with_1013_and_counts_drops() -> None:
    broadcaster = Broadcaster("r1", limits=WsLimits(max_queue=3))
    conn, _ = await connected(broadcaster)
    subscribe(broadcaster, conn, ["market"])
    for symbol in ("AAAUSDT", "BBBUSDT", "CCCUSDT", "DDDUSDT"):
        await broadcaster.publish("market", symbol, {}, 1)
    assert conn.closed.is_set() and conn.close_code == 1013 and conn.close_cause == "queue_full"
    broadcaster.release(conn)
    assert broadcaster.stats.dropped["market"] == 3
    assert broadcaster.stats.disconnects["queue_full"] == 1
    assert broadcaster.connections == set()


async def test_subscription_limit_and_abuse() -> None:
    broadcaster = Broadcaster("r1", limits=WsLimits(max_subscriptions=2, max_bad_messages=3))
    conn, _ = await connected(broadcaster)
    subscribe(broadcaster, conn, ["market"], ["BTCUSDT", "ETHUSDT", "SOLUSDT"])
    (reply,) = queued_types(conn)
    assert reply["type"] == "error" and reply["code"] == "too_many_subscriptions"
    assert conn.subscriptions == {}
    broadcaster.handle_message(conn, b"{nope")
    assert not conn.closed.is_set()
    broadcaster.handle_message(conn, b'{"type":"dance"}')
    assert conn.closed.is_set() and conn.close_code == 1008


async def test_per_client_connection_limit_without_rate_limiter() -> None:
    broadcaster = Broadcaster("r1", limits=WsLimits(max_connections_per_client=1))
    first, _ = await connected(broadcaster, "ip:1")
    with pytest.raises(Rejected, match="too many connections") as info:
        await connected(broadcaster, "ip:1")
    assert info.value.code == 1008
    broadcaster.release(first)
    await connected(broadcaster, "ip:1")


async def test_heartbeat_without_pong_closes_1011() -> None:
    broadcaster = Broadcaster("r1", limits=WsLimits(heartbeat_seconds=0.05, pong_timeout=0.1))
    conn, ws = await connected(broadcaster)
    tasks = [asyncio.create_task(conn.run_sender()), asyncio.create_task(conn.run_heartbeat())]
    try:
        async with asyncio.timeout(2):
            await conn.closed.wait()
    finally:
        for task in tasks:
            task.cancel()
    assert conn.close_code == 1011 and ws.sent[0]["type"] == "heartbeat"


# -- the alerts channel: the recent alerts, keyed by id, with their current statuses --


def alert(alert_id: str, symbol: str, created: int, status: str = "pending") -> dict:
    return {"id": alert_id, "symbol": symbol, "created_at_ms": created, "status": status}


def alerts_snapshot(broadcaster: Broadcaster, symbols=None) -> list[tuple[str, str]]:
    """(id, status) of the alerts snapshot a new subscriber gets, in its order."""
    conn = Connection(FakeSocket(), "probe", broadcaster.limits, broadcaster.stats, time.time)
    subscribe(broadcaster, conn, ["alerts"], symbols)
    (snapshot,) = queued_types(conn)
    assert snapshot["type"] == "snapshot" and snapshot["channel"] == "alerts"
    return [(item["data"]["id"], item["data"]["status"]) for item in snapshot["items"]]


async def test_the_alerts_snapshot_holds_every_recent_alert_with_its_current_status() -> None:
    broadcaster = Broadcaster("r1")
    await broadcaster.publish_alert(alert("a1", "BTCUSDT", 100), 100)
    await broadcaster.publish_alert(alert("a2", "BTCUSDT", 200), 200)  # same symbol: both kept
    await broadcaster.publish_alert(alert("a3", "ETHUSDT", 300), 300)
    await broadcaster.publish_alert(alert("a1", "BTCUSDT", 100, "acknowledged"), 400)
    assert alerts_snapshot(broadcaster) == [
        ("a3", "pending"),
        ("a2", "pending"),
        ("a1", "acknowledged"),
    ]
    assert alerts_snapshot(broadcaster, ["BTCUSDT"]) == [("a2", "pending"), ("a1", "acknowledged")]
    await broadcaster.publish_alert(alert("a1", "BTCUSDT", 100, "resolved"), 500)
    await broadcaster.publish_alert(alert("a1", "BTCUSDT", 100, "acknowledged"), 600)  # late
    assert alerts_snapshot(broadcaster, ["BTCUSDT"]) == [("a2", "pending"), ("a1", "resolved")]


async def test_the_alerts_snapshot_keeps_the_newest_by_creation() -> None:
    broadcaster = Broadcaster("r1")
    kept = protocol.ALERTS_KEPT
    for n in range(kept + 5):  # published newest first: the order of creation decides
        created = 10_000 - n
        await broadcaster.publish_alert(alert(f"x{created}", "BTCUSDT", created), created)
    ids = [alert_id for alert_id, _ in alerts_snapshot(broadcaster)]
    assert ids == [f"x{10_000 - n}" for n in range(kept)]
    await broadcaster.publish_alert({"symbol": "ETHUSDT", "n": 1}, 20_000)  # no id: kept too
    assert len(broadcaster.kept_alerts()) == kept and broadcaster.kept_alerts()[0]["n"] == 1


async def test_the_seed_fills_the_snapshot_and_never_undoes_a_newer_message() -> None:
    broadcaster = Broadcaster("r1")
    early, _ = await connected(broadcaster)
    subscribe(broadcaster, early, ["alerts"])
    assert queued_types(early)[0]["items"] == []  # subscribed before the seed arrived
    await broadcaster.publish_alert(alert("a1", "BTCUSDT", 100, "acknowledged"), 150)
    queued_types(early)
    stored = [alert("a2", "ETHUSDT", 200), alert("a1", "BTCUSDT", 100, "pending")]
    calls = 0

    async def recent() -> list[dict]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("store down")  # retried
        return stored

    broadcaster.seed_alerts_from(recent)
    broadcaster.seed_retry_seconds = (0.01, 0.01)
    await broadcaster.start()
    async with asyncio.timeout(5):
        await broadcaster.alerts_seeded.wait()
    assert calls == 2
    assert alerts_snapshot(broadcaster) == [("a2", "pending"), ("a1", "acknowledged")]
    (resent,) = queued_types(early)  # the early subscriber gets the seeded snapshot
    assert [i["data"]["id"] for i in resent["items"]] == ["a2", "a1"]
    assert [i["seq"] for i in resent["items"]] == [0, 1]
    await broadcaster.close()


class FakeFrameWriter:
    """A stream's frame writer: records frames; ``full`` → refuses (a full socket)."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.full = False
        self.max_buffered: list[int] = []

    def __call__(self, frame: bytes, max_buffered: int) -> bool:
        self.max_buffered.append(max_buffered)
        if self.full:
            return False
        self.frames.append(frame)
        return True


def frames_in(data: bytes) -> list[dict]:
    """The messages of the server frames in ``data``, read as a client reads them."""
    reader = FrameProtocol(client=True, extensions=[])
    reader.receive_bytes(data)
    messages = []
    for frame in reader.received_frames():
        assert frame.opcode is Opcode.TEXT and frame.message_finished
        messages.append(orjson.loads(frame.payload))
    return messages


async def test_a_turn_of_updates_is_one_write_of_the_same_frames_for_every_client() -> None:
    broadcaster = Broadcaster("r1")
    writers = [FakeFrameWriter() for _ in range(3)]
    conns = [await broadcaster.connect(FakeSocket(), f"c{i}", w) for i, w in enumerate(writers)]
    for conn in conns:
        subscribe(broadcaster, conn, ["market"])
        queued_types(conn)  # the snapshot, as if sent
    seqs = [await broadcaster.publish("market", s, {"p": 1}, 1000) for s in ("AUSDT", "BUSDT")]
    assert all(w.frames == [] for w in writers)  # written at the end of the loop turn
    await asyncio.sleep(0)
    assert all(len(w.frames) == 1 for w in writers) and len({w.frames[0] for w in writers}) == 1
    assert writers[0].frames[0][1] & 0x80 == 0  # server frames are not masked
    assert [m["seq"] for m in frames_in(writers[0].frames[0])] == seqs
    assert all(conn.queued == 0 for conn in conns)
    assert broadcaster.stats.direct["market"] == broadcaster.stats.sent["market"] == 6
    assert len(broadcaster.stats.latencies) == 2  # one sample per message
    assert writers[0].max_buffered == [broadcaster.limits.direct_write_bytes]


async def test_an_update_waits_its_turn_behind_a_queued_reply_or_a_full_socket() -> None:
    broadcaster = Broadcaster("r1")
    writer = FakeFrameWriter()
    conn = await broadcaster.connect(FakeSocket(), "c", writer)
    subscribe(broadcaster, conn, ["market"])  # the snapshot waits in the queue
    await broadcaster.publish("market", "BTCUSDT", {"i": 1}, 1000)
    await asyncio.sleep(0)
    assert writer.frames == []  # never before the snapshot
    assert [m["type"] for m in queued_types(conn)] == ["snapshot", "update"]
    writer.full = True
    await broadcaster.publish("market", "BTCUSDT", {"i": 2}, 1001)
    await asyncio.sleep(0)
    assert writer.frames == [] and conn.queued == 1  # the sender will wait for it
    assert broadcaster.stats.direct["market"] == broadcaster.stats.sent["market"] == 0
    writer.full = False
    await broadcaster.publish("market", "BTCUSDT", {"i": 3}, 1002)
    await asyncio.sleep(0)
    assert writer.frames == []  # coalesced into the queued one: order kept
    assert [m["data"]["i"] for m in queued_types(conn)] == [3]
    await broadcaster.publish("market", "BTCUSDT", {"i": 4}, 1003)
    await asyncio.sleep(0)
    assert [m["data"]["i"] for m in frames_in(writer.frames[0])] == [4]  # nothing waits
    assert broadcaster.stats.direct["market"] == 1
    assert len(broadcaster.stats.latencies) == 1  # only what was written counts


async def test_a_batch_of_a_client_closed_before_its_write_is_dropped() -> None:
    broadcaster = Broadcaster("r1")
    writer = FakeFrameWriter()
    conn = await broadcaster.connect(FakeSocket(), "c", writer)
    subscribe(broadcaster, conn, ["market", "alerts"])
    queued_types(conn)
    await broadcaster.publish("market", "BTCUSDT", {"i": 1}, 1000)
    await broadcaster.publish_alert({"symbol": "BTCUSDT"}, 1000)
    conn.request_close(protocol.CLOSE_GOING_AWAY, "bye", "shutdown")
    await asyncio.sleep(0)
    assert writer.frames == [] and conn.queued == 0
    assert broadcaster.stats.dropped == {"market": 1, "alerts": 1}
    assert sum(broadcaster.stats.sent.values()) == sum(broadcaster.stats.direct.values()) == 0


async def test_direct_writes_switched_off_queue_every_update() -> None:
    broadcaster = Broadcaster("r1", limits=WsLimits(direct_write_bytes=0))
    writer = FakeFrameWriter()
    conn = await broadcaster.connect(FakeSocket(), "c", writer)
    subscribe(broadcaster, conn, ["market"])
    queued_types(conn)
    await broadcaster.publish("market", "BTCUSDT", {"i": 1}, 1000)
    await asyncio.sleep(0)
    assert writer.frames == [] and conn.queued == 1


async def test_a_write_that_raises_closes_its_client_and_spares_the_others() -> None:
    broadcaster = Broadcaster("r1")

    def broken(_frames: bytes, _max_buffered: int) -> bool:
        raise RuntimeError("the transport is gone")

    good = FakeFrameWriter()
    bad_conn = await broadcaster.connect(FakeSocket(), "bad", broken)
    good_conn = await broadcaster.connect(FakeSocket(), "good", good)
    for conn in (bad_conn, good_conn):
        subscribe(broadcaster, conn, ["market"])
        queued_types(conn)
    await broadcaster.publish("market", "BTCUSDT", {"i": 1}, 1000)
    await asyncio.sleep(0)
    assert len(good.frames) == 1
    assert bad_conn.closed.is_set() and bad_conn.close_code == 1011


async def test_a_backlog_in_one_turn_goes_to_the_queue_and_coalesces_there() -> None:
    broadcaster = Broadcaster("r1")
    writer = FakeFrameWriter()
    conn = await broadcaster.connect(FakeSocket(), "c", writer)
    subscribe(broadcaster, conn, ["market"])
    queued_types(conn)
    pad = "x" * 8192  # 8 batched frames fit within direct_write_bytes (64 KiB), not 9
    for i in range(100):
        await broadcaster.publish("market", f"S{i % 10}USDT", {"i": i, "pad": pad}, i)
    await asyncio.sleep(0)
    assert writer.frames == []  # the batch outgrew its bound before the turn ended
    latest = {m["symbol"]: m["data"]["i"] for m in queued_types(conn)}
    assert latest == {f"S{n}USDT": 90 + n for n in range(10)}  # in order, coalesced
    assert broadcaster.stats.direct["market"] == broadcaster.stats.sent["market"] == 0


async def test_each_update_tells_its_data_age_at_fan_out() -> None:
    """now − generated_at per update and channel (0 for a clock ahead of ours); alerts
    and updates without a time tell none."""
    now = 1_800_000_000.0
    ages: list[tuple[str, float]] = []
    broadcaster = Broadcaster("r1", clock=lambda: now, on_data_age=lambda c, s: ages.append((c, s)))
    await broadcaster.publish("market", "BTCUSDT", {"price": 1.0}, int(now * 1000) - 300)
    await broadcaster.publish("confluence", "BTCUSDT", {"score": 50}, int(now * 1000) - 4_000)
    await broadcaster.publish("market", "ETHUSDT", {"price": 2.0}, int(now * 1000) + 50)
    await broadcaster.publish("market", "SOLUSDT", {"price": 3.0}, 0)
    await broadcaster.publish_alert({"symbol": "ETHUSDT", "n": 1}, int(now * 1000) - 100)
    assert [(c, round(s, 6)) for c, s in ages] == [
        ("market", 0.3),
        ("confluence", 4.0),
        ("market", 0.0),
    ]
