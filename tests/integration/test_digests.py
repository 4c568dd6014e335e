"""Digests on the running app: the message on a simulated market names exactly its top
movers and signals; the store (a real Redis and JSON files) keeps digests, caps them
and remembers the slots sent across a restart; the API refuses bad input with 4xx JSON
and answers 503 while Redis is down; the collector's scheduler hands each due digest to
the sink once per slot (not again in the same slot, nor after a restart), with the
channels, title, body and idempotency key, and again when the sink refused it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import orjson
import pytest
from quart.typing import TestAppProtocol as QuartTestApp

from app.backends.keyspace import Keyspace
from app.main.embedded import create_app
from app.resilience.redis_breaker import redis_guard
from app.services.alerts.delivery import idempotency_key
from app.services.alerts.digest_scheduler import DigestScheduler
from app.services.alerts.digest_store import (
    DigestStore,
    FileDigestStore,
    RedisDigestStore,
    TooManyDigests,
)
from app.services.alerts.digests import PERIOD_MS, Digest, compose_digest
from tests.conftest import (
    RATE_LIMITS_OFF,
    ManualClock,
    eventually,
    make_settings,
    state_of,
)
from tests.support.markets import CountingMarket
from tests.support.receivers import http_receivers

TOKEN = "digests-api-token-for-tests"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
PATIENT = 5.0


class RecordingSink:
    """The sink the scheduler hands digests to: each call recorded; ``refuse``: raise."""

    def __init__(self) -> None:
        self.calls: list[tuple[tuple[str, ...], str, str, str]] = []
        self.refuse = False

    async def __call__(self, channels: Sequence[str], title: str, body: str, key: str) -> None:
        if self.refuse:
            raise ConnectionError("the outbox is down")
        self.calls.append((tuple(channels), title, body, key))


@contextlib.asynccontextmanager
async def running(clock: ManualClock, **environ: str) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(
        VIRTUOSO_API_TOKEN=TOKEN,
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
        VIRTUOSO_WEBHOOK_ALLOW="127.0.0.1",  # the channels' receivers
        **environ,
    )
    app = create_app(settings, CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


def wired_scheduler(app: QuartTestApp) -> DigestScheduler:
    """The scheduler the collector wired into the pipeline (its listener)."""
    pipeline = state_of(app).pipeline
    assert pipeline is not None
    found = [getattr(listener, "__self__", None) for listener in pipeline.listeners]
    (scheduler,) = [s for s in found if isinstance(s, DigestScheduler)]
    return scheduler


async def call(app: QuartTestApp, method: str, path: str, json=None, headers=None):
    client = app.test_client()
    response = await getattr(client, method)(path, json=json, headers=headers or {})
    return response.status_code, orjson.loads(await response.get_data())


async def channels(app: QuartTestApp, *names: str, port: int = 9) -> list[str]:
    """The ids of new json:// channels to 127.0.0.1:``port``, one per name."""
    ids = []
    for name in names:
        url = f"json://127.0.0.1:{port}/{name}"
        body = {"name": name, "url": url}
        status, created = await call(app, "post", "/api/alerts/channels", json=body, headers=AUTH)
        assert status == 201, created
        ids.append(created["channel"]["id"])
    return ids


async def refresh(app: QuartTestApp, clock: ManualClock, seconds: float) -> None:
    clock.advance(seconds)
    await state_of(app).pipeline.refresh(force=True)  # type: ignore[union-attr]


def seconds_to_next(clock: ManualClock, every: str) -> float:
    """Seconds from now to the next slot of ``every`` (a little past it)."""
    now_ms = int(clock() * 1000)
    period = PERIOD_MS[every]
    return (period - now_ms % period) / 1000 + 1


# -- the message ----------------------------------------------------------------------


async def test_compose_names_exactly_the_top_movers_and_the_signals(simulated_app) -> None:
    pipeline = state_of(simulated_app).pipeline
    snapshot, analysis = pipeline.latest, pipeline.latest_analysis
    # The movers, worked out from the tickers: liquid (≥ the default 1,000,000 turnover),
    # best 24h change first, at most 3 each way.
    liquid = [t for t in snapshot.tickers.values() if t.quote_volume_24h >= 1_000_000]
    ranked = sorted(liquid, key=lambda t: t.change_24h_pct, reverse=True)
    gainers = [t for t in ranked if t.change_24h_pct > 0][:3]
    losers = [t for t in reversed(ranked) if t.change_24h_pct < 0][:3]
    assert gainers and losers  # the simulated market moves both ways

    title, body = compose_digest(
        "Desk", 1_790_002_800_000, analysis.movers, analysis.signals, count=3
    )
    assert title == "Desk — 2026-09-21 15:00 UTC"
    lines = body.splitlines()
    start = lines.index("  Gainers:")
    shown_gainers = [line.split()[0] for line in lines[start + 1 : start + 1 + len(gainers)]]
    assert shown_gainers == [t.symbol for t in gainers]
    start = lines.index("  Losers:")
    shown_losers = [line.split()[0] for line in lines[start + 1 : start + 1 + len(losers)]]
    assert shown_losers == [t.symbol for t in losers]
    first = gainers[0]
    assert f"{first.symbol} {round(first.change_24h_pct, 4):+.2f}%" in body
    signals = lines[lines.index("Signals (confluence)") + 1 :]
    if analysis.signals:
        assert [s.split()[0] for s in signals][: len(analysis.signals)] == [
            row["symbol"] for row in analysis.signals[:10]
        ]
    else:
        assert signals == ["  none: every symbol is neutral"]


# -- the store ------------------------------------------------------------------------


@pytest.fixture(params=["file", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path):
    """``open_store(max_digests=...)``: a fresh instance over the same data each call
    (as after a restart)."""
    if request.param == "file":
        return lambda max_digests=20: FileDigestStore(tmp_path, max_digests)
    client = request.getfixturevalue("redis_client")
    keyspace = Keyspace(f"digests-{tmp_path.name}")
    guard = redis_guard(timeout_seconds=PATIENT)
    return lambda max_digests=20: RedisDigestStore(client, guard, keyspace, max_digests)


def make_digest(n: int, every: str = "1h") -> Digest:
    return Digest(id=f"d{n}", name=f"D{n}", channels=("c1", "c2"), every=every, created_at_ms=n)


async def test_store_keeps_caps_and_remembers_the_slots(open_store) -> None:
    store: DigestStore = open_store(max_digests=3)
    for n in (1, 2, 3):
        await store.add_digest(make_digest(n))
    with pytest.raises(TooManyDigests):
        await store.add_digest(make_digest(4))
    await store.mark_sent("d2", 7_200_000)
    await store.mark_sent("d2", 3_600_000)  # a late evaluation: never backwards
    await store.mark_sent("gone", 3_600_000)  # not stored: nothing
    reopened: DigestStore = open_store(max_digests=3)
    listed = await reopened.list_digests()
    assert [(d.id, d.last_sent_ms) for d in listed] == [
        ("d1", None),
        ("d2", 7_200_000),
        ("d3", None),
    ]
    assert listed[0].channels == ("c1", "c2")
    assert await reopened.delete_digest("d2") and not await reopened.delete_digest("d2")
    assert [d.id for d in await store.list_digests()] == ["d1", "d3"]
    await store.add_digest(make_digest(5))  # below the cap again
    assert [d.id for d in await reopened.list_digests()] == ["d1", "d3", "d5"]


# -- the API --------------------------------------------------------------------------


async def test_api_creates_lists_deletes_and_refuses_bad_input(tmp_path: Path, clock) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app:
        named = await channels(app, "ops-mail", "team-ntfy")
        good = {"name": "Morning desk", "channels": named, "every": "1h"}
        assert (await call(app, "post", "/api/alerts/digests", json=good))[0] == 401
        unknown = {**good, "channels": [*named, "nosuchchannel"]}
        status, error = await call(app, "post", "/api/alerts/digests", json=unknown, headers=AUTH)
        assert (status, error["error"]) == (400, "unknown_channel"), error
        assert "'nosuchchannel'" in error["message"]
        assert (await call(app, "get", "/api/alerts/digests"))[1]["digests"] == []
        cases = [
            ({**good, "every": "2h"}, "every"),
            ({**good, "channels": []}, "channels"),
            ({**good, "channels": ["has space"]}, "channels"),
            ({**good, "name": ""}, "name"),
            ({**good, "extra": True}, "extra"),
            ({"name": "x"}, "channels"),
        ]
        for body, named in cases:
            status, error = await call(app, "post", "/api/alerts/digests", json=body, headers=AUTH)
            assert status == 400 and named in error["message"], (body, error)
        status, created = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        assert status == 201, created
        digest = created["digest"]
        assert digest["channels"] == good["channels"] and digest["last_sent_ms"] is None
        assert digest["next_due_ms"] % PERIOD_MS["1h"] == 0
        assert digest["next_due_ms"] > clock() * 1000
        status, listed = await call(app, "get", "/api/alerts/digests")
        assert status == 200 and [d["id"] for d in listed["digests"]] == [digest["id"]]
        assert listed["max_digests"] == 20
        for _ in range(19):
            await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        status, error = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        assert status == 409 and error["error"] == "too_many_digests"
        gone = f"/api/alerts/digests/{digest['id']}"
        assert (await call(app, "delete", gone))[0] == 401
        assert (await call(app, "delete", gone, headers=AUTH)) == (200, {"deleted": digest["id"]})
        assert (await call(app, "delete", gone, headers=AUTH))[0] == 404


async def test_api_answers_503_while_redis_is_down(persistent_redis, clock) -> None:
    url = f"redis://{persistent_redis.address}/0"
    async with running(clock, VIRTUOSO_REDIS_URL=url) as app:
        good = {"name": "Desk", "channels": await channels(app, "c1"), "every": "15m"}
        status, created = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        assert status == 201
        persistent_redis.kill()
        status, error = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        assert status == 503 and error["error"] == "digest_store_unavailable"
        assert (await call(app, "get", "/api/alerts/digests"))[0] == 503
        path = f"/api/alerts/digests/{created['digest']['id']}"
        assert (await call(app, "delete", path, headers=AUTH))[0] == 503
        persistent_redis.restart()

        # nothing stored is lost: the digest is back with Redis
        async def listed() -> bool:
            status, body = await call(app, "get", "/api/alerts/digests")
            return status == 200 and [d["id"] for d in body["digests"]] == [created["digest"]["id"]]

        await eventually(listed, seconds=30)


# -- the scheduler in the collector ---------------------------------------------------


async def test_the_collector_hands_each_slot_to_the_sink_once(tmp_path: Path, clock) -> None:
    data = {"VIRTUOSO_DATA_DIR": str(tmp_path)}
    sink = RecordingSink()
    async with running(clock, **data) as app:
        wired_scheduler(app).sink = sink
        named = await channels(app, "c1", "c2")
        good = {"name": "Desk", "channels": named, "every": "15m"}
        _, created = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        digest_id, due = created["digest"]["id"], created["digest"]["next_due_ms"]
        await refresh(app, clock, 1)  # before its first slot: nothing
        assert sink.calls == []
        await refresh(app, clock, seconds_to_next(clock, "15m"))
        assert len(sink.calls) == 1
        sent_to, title, body, key = sink.calls[0]
        assert sent_to == tuple(named) and key == f"digest:{digest_id}:{due}"
        analysis = state_of(app).pipeline.latest_analysis  # type: ignore[union-attr]
        expected = compose_digest("Desk", due, analysis.movers, analysis.signals, count=5)
        assert (title, body) == expected
        await refresh(app, clock, 60)  # the same slot: not again
        assert len(sink.calls) == 1
    async with running(clock, **data) as app:  # a restart, still in the same slot
        wired_scheduler(app).sink = sink
        await refresh(app, clock, 60)
        assert len(sink.calls) == 1
        _, listed = await call(app, "get", "/api/alerts/digests")
        assert listed["digests"][0]["last_sent_ms"] == due
        sink.refuse = True  # the next slot: refused, so it stays due
        await refresh(app, clock, seconds_to_next(clock, "15m"))
        assert len(sink.calls) == 1 and wired_scheduler(app).failed == 1
        sink.refuse = False
        await refresh(app, clock, 60)
        assert [call[3] for call in sink.calls] == [
            f"digest:{digest_id}:{due}",
            f"digest:{digest_id}:{due + PERIOD_MS['15m']}",
        ]


async def test_a_due_digest_reaches_its_channel_through_the_outbox(tmp_path: Path, clock) -> None:
    """The collector's default sink is the delivery outbox: a due digest is one message
    to the channel's receiver, with the digest's title and the slot's idempotency key."""
    async with (
        http_receivers(1) as (receiver,),
        running(clock, VIRTUOSO_DATA_DIR=str(tmp_path)) as app,
    ):
        (channel_id,) = await channels(app, "desk", port=receiver.port)
        good = {"name": "Desk", "channels": [channel_id], "every": "15m"}
        _, created = await call(app, "post", "/api/alerts/digests", json=good, headers=AUTH)
        digest_id, due = created["digest"]["id"], created["digest"]["next_due_ms"]
        await refresh(app, clock, seconds_to_next(clock, "15m"))
        await eventually(lambda: len(receiver.requests) == 1, seconds=PATIENT * 6)
        analysis = state_of(app).pipeline.latest_analysis  # type: ignore[union-attr]
        title, _ = compose_digest("Desk", due, analysis.movers, analysis.signals, count=5)
        await refresh(app, clock, 60)  # the same slot: nothing more
    (request,) = receiver.requests
    assert request.path_qs == "/desk" and orjson.loads(request.body)["title"] == title
    key = idempotency_key(f"digest:{digest_id}:{due}", channel_id)
    assert request.headers["Idempotency-Key"] == key
