"""The wire between servers and the collector, on a real Redis: a RemoteCollector (the
server's link) and a CollectorDesk (the collector's end) around a real pipeline on the
simulated market.

Questions are answered and shared; a collector that is not there fails fast and names
why; a collector that stops reporting is named; hostile or broken messages on either
side are counted and dropped without stopping anything.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from app.backends.guard import RedisGuard
from app.main.collectors import CollectorLinkMetrics
from app.market.errors import MarketDataError
from app.resilience.breaker import CircuitBreaker
from app.services.collector_desk import CollectorDesk
from app.services.collector_link import LocalCollector
from app.services.collector_wire import (
    CollectorChannels,
    CollectorUnavailable,
    Request,
    WireError,
    decode_reply,
    decode_request,
    decode_status,
    encode_request,
)
from app.services.pipeline import Pipeline
from app.services.remote_collector import RemoteCollector, RemoteTimings
from app.services.wire_redis import RedisCollectorEnd, RedisServerEnd
from tests.conftest import ManualClock
from tests.integration.test_pipeline import started_pipeline

CHANNELS = CollectorChannels("wiretest")


def guard() -> RedisGuard:
    return RedisGuard(CircuitBreaker("redis"), timeout_seconds=5)


@pytest.fixture
async def pipeline(clock: ManualClock) -> AsyncIterator[Pipeline]:
    started = await started_pipeline(clock)
    yield started
    await started.stop()


@pytest.fixture
async def desk(redis_client, pipeline, clock) -> AsyncIterator[CollectorDesk]:
    end = RedisCollectorEnd(redis_client, guard(), CHANNELS)
    answering = CollectorDesk(end, LocalCollector(pipeline), "collector-1", clock)
    await answering.start()
    assert await answering.wait_listening(10)
    yield answering
    await answering.stop()


@pytest.fixture
async def remote(redis_client, clock) -> AsyncIterator[RemoteCollector]:
    timings = RemoteTimings(gone_after_seconds=5, request_seconds=10)
    end = RedisServerEnd(redis_client, guard(), CHANNELS, "server-1", poll_seconds=0.05)
    link = RemoteCollector(end, "server-1", clock, timings)
    await link.start()
    assert await end.wait_listening(10)
    yield link
    await link.close()


async def test_the_server_reads_the_collectors_status(desk, remote) -> None:
    await desk.publish_status()
    await remote.end.read_status()
    report = remote.report
    assert report is not None and report.collector_id == "collector-1"
    assert remote.started.is_set()
    assert remote.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert remote.status.snapshot_version >= 1
    assert remote.problems() == []


async def test_a_silent_collector_is_named(desk, remote, clock: ManualClock) -> None:
    await desk.publish_status()
    await remote.end.read_status()
    await desk.stop()
    clock.advance(6)  # past gone_after_seconds without a new report
    assert remote.problems() == ["collector not heard from for 6s"]
    assert remote.status.last_error == "collector not heard from for 6s"
    assert remote.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]  # the last known


async def test_candles_are_asked_for_and_shared(desk, remote) -> None:
    answers = await asyncio.gather(*(remote.candles("ETHUSDT", "4h") for _ in range(50)))
    bodies = {body for body, _ in answers}
    assert len(bodies) == 1
    assert orjson.loads(bodies.pop())["candles"]
    assert desk.counts["ok"] == 1  # one request for the fifty callers


async def test_refresh_and_republish_are_answered(desk, remote, pipeline) -> None:
    version = pipeline.status.snapshot_version
    await remote.refresh(force=True)
    assert pipeline.status.snapshot_version > version
    assert await remote.republish() is True
    assert await remote.republish(fresh_within=-1) is False  # none that recent


async def test_a_collector_error_reaches_the_asker_as_market_data_error(desk, remote) -> None:
    with pytest.raises(MarketDataError, match="NOPEUSDT"):
        await remote.candles("NOPEUSDT", "1h")
    with pytest.raises(CollectorUnavailable, match="malformed candles"):
        await remote._ask_once(("odd",), "candles", {"symbol": "BTCUSDT"})  # no timeframe
    assert desk.counts["error"] == 2


async def test_without_a_collector_a_question_fails_at_once(remote) -> None:
    with pytest.raises(CollectorUnavailable, match="no collector is listening"):
        await remote.refresh()
    assert await remote.republish() is False  # told, not raised
    assert remote.problems() == ["no collector has reported yet"]


async def test_hostile_messages_are_dropped_and_counted(desk, remote, redis_client) -> None:
    for junk in (
        b"",
        b"not json",
        b"[1,2]",
        b'{"id": "x"}',
        b'{"id":"a b","kind":"refresh","reply_to":"s","deadline_ms":9e18}',
        b'{"id":"a","kind":"rm -rf","reply_to":"s","deadline_ms":1}',
    ):
        await redis_client.publish(CHANNELS.requests, junk)
        await redis_client.publish(CHANNELS.replies("server-1"), junk)
    await redis_client.set(CHANNELS.status, b'{"status": 3}')
    await remote.end.read_status()  # unreadable: kept what it had (nothing), counted
    # The desk still answers, the link still asks.
    body, _ = await remote.candles("BTCUSDT", "1h")
    assert orjson.loads(body)["candles"]
    assert desk.counts.get("malformed", 0) >= 5
    assert remote.unreadable_messages >= 7


async def test_a_status_from_the_future_does_not_outdate_the_true_ones(
    desk, remote, redis_client, clock: ManualClock
) -> None:
    """Another Redis client writes a report dated years ahead: it is refused, so the
    collector's next reports are still taken and its silence still named."""
    await desk.publish_status()
    await remote.end.read_status()
    forged = orjson.loads(await redis_client.get(CHANNELS.status))
    forged |= {"heartbeat_ms": 9_999_999_999_999, "symbols": ["BTCUSDT"]}
    remote.take_status(orjson.dumps(forged))  # as read from the key
    assert remote.symbols() == ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
    assert remote.unreadable_messages == 1
    clock.advance(2)
    await desk.publish_status()
    await remote.end.read_status()
    assert remote.report is not None
    assert remote.report.heartbeat_ms == int(clock() * 1000)
    await desk.stop()
    clock.advance(6)
    assert remote.problems() == ["collector not heard from for 6s"]


async def test_a_new_leader_behind_the_old_ones_clock_is_heard(
    desk, remote, redis_client, clock: ManualClock
) -> None:
    """Reports are ordered per collector: another collector's report is taken even when
    dated before the last one of the collector it replaces."""
    await desk.publish_status()
    await remote.end.read_status()
    successor = orjson.loads(await redis_client.get(CHANNELS.status))
    successor |= {"collector_id": "collector-2", "heartbeat_ms": int(clock() * 1000) - 3000}
    remote.take_status(orjson.dumps(successor))  # as read from the key
    assert remote.report is not None and remote.report.collector_id == "collector-2"


async def test_republish_does_not_wait_for_a_hung_collector(
    desk, redis_client, clock: ManualClock
) -> None:
    """An alert write republishes the views: a collector that listens but does not answer
    (stopped) holds it ``republish_seconds`` at most, and once it is known gone it is
    not asked at all."""
    timings = RemoteTimings(gone_after_seconds=5, request_seconds=600, republish_seconds=0.2)
    end = RedisServerEnd(redis_client, guard(), CHANNELS, "server-2", poll_seconds=600)
    link = RemoteCollector(end, "server-2", clock, timings)
    await link.start()
    assert await end.wait_listening(10)
    await desk.publish_status()
    await end.read_status()
    await desk.stop()
    hung = redis_client.pubsub()  # listens on the requests channel, never answers
    await hung.subscribe(CHANNELS.requests)
    try:
        assert await hung.get_message(timeout=5) is not None  # the subscription
        assert await link.republish() is False  # within republish_seconds, not 600 s
        assert await hung.get_message(timeout=5) is not None  # it was asked
        clock.advance(6)  # now known gone
        assert await link.republish() is False
        assert await hung.get_message(timeout=0.2) is None  # not asked
    finally:
        await hung.aclose()
        await link.close()


async def test_a_late_request_is_dropped(desk, redis_client, clock: ManualClock) -> None:
    late = Request("r1", "refresh", "server-9", deadline_ms=int(clock() * 1000) - 1)
    await redis_client.publish(CHANNELS.requests, encode_request(late))
    for _ in range(100):
        if desk.counts.get("late"):
            break
        await asyncio.sleep(0.05)
    assert desk.counts == {"late": 1}


@pytest.mark.parametrize(
    "raw",
    [b"", b"{}", b"null", b'{"id": 1}', b'{"id":"x","kind":"candles","reply_to":"y"}'],
)
def test_malformed_requests_are_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_request(raw)


@pytest.mark.parametrize("raw", [b"", b"{}\nbody", b"[]\n", b'{"id":"x","ok":true}\n'])
def test_malformed_replies_and_status_are_wire_errors(raw: bytes) -> None:
    with pytest.raises(WireError):
        decode_reply(raw)
    with pytest.raises(WireError):
        decode_status(raw)


@pytest.mark.parametrize(
    "status",
    [
        {"delisted": [1, "x", None]},  # the listing lookup would fail on every request
        {"snapshot_version": "abc"},
        {"last_success_ms": "soon"},  # readiness computes the data's age from it
        {"refreshes": 5},
        {"unlisted_symbols": 7},
    ],
)
async def test_a_status_with_fields_of_the_wrong_type_is_refused(
    desk, remote, redis_client, status: dict
) -> None:
    """Written by another Redis client (or another version): refused as a whole, the
    last good report kept, rather than failing the requests that read it."""
    await desk.publish_status()
    await remote.end.read_status()
    report = orjson.loads(await redis_client.get(CHANNELS.status))
    report["status"] |= status
    with pytest.raises(WireError):
        decode_status(orjson.dumps(report))
    remote.take_status(orjson.dumps(report))
    assert remote.unreadable_messages == 1
    kept = remote.report  # the collector's own, not the forged one
    assert kept is not None and kept.status.delisted == []
    assert isinstance(kept.status.snapshot_version, int) and kept.status.snapshot_version >= 1
    assert remote.listing_issue("BTCUSDT") is None


def test_a_breaker_that_is_not_a_mapping_is_refused() -> None:
    report = {
        "status": {},
        "symbols": None,
        "breakers": {"bybit:tickers": 5},
        "source": "s",
        "collector_id": "c",
        "heartbeat_ms": 1,
    }
    with pytest.raises(WireError):
        decode_status(orjson.dumps(report))
    report["breakers"] = {"bybit:tickers": {"state": "closed"}}
    assert decode_status(orjson.dumps(report)).breakers == report["breakers"]


def scraped(remote: RemoteCollector, clock: ManualClock) -> str:
    registry = CollectorRegistry()
    registry.register(CollectorLinkMetrics(remote, clock, lambda: clock() - 30))
    return generate_latest(registry).decode()


async def test_requests_and_report_age_are_metrics(desk, remote, clock: ManualClock) -> None:
    text = scraped(remote, clock)
    assert 'virtuoso_collector_requests_total{kind="candles",outcome="ok"} 0.0' in text
    await remote.candles("BTCUSDT", "1h")
    with pytest.raises(MarketDataError):
        await remote.candles("NOPEUSDT", "1h")
    await desk.publish_status()
    await remote.end.read_status()
    clock.advance(2)
    text = scraped(remote, clock)
    assert 'virtuoso_collector_requests_total{kind="candles",outcome="ok"} 1.0' in text
    assert 'virtuoso_collector_requests_total{kind="candles",outcome="refused"} 1.0' in text
    assert "virtuoso_collector_report_age_seconds 2.0" in text


async def test_a_question_nobody_hears_counts_as_unavailable(remote, clock) -> None:
    with pytest.raises(CollectorUnavailable):
        await remote.refresh()
    text = scraped(remote, clock)
    assert 'virtuoso_collector_requests_total{kind="refresh",outcome="unavailable"} 1.0' in text
    assert "virtuoso_collector_report_age_seconds 30.0" in text  # since start: none came
