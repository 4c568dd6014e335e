"""Live updates are coalesced per (channel, symbol): at most ``per_second`` a second,
the newest value sent when the key's turn comes, nothing sent twice."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from app.services import live_updates
from app.services.live_updates import LiveUpdates, event_time
from tests.conftest import eventually

pytestmark = pytest.mark.unit


class Recorder:
    def __init__(self) -> None:
        self.published: list[tuple[str, str | None, Any, int]] = []

    async def publish(self, channel: str, symbol: str | None, data: Any, at: int) -> int:
        self.published.append((channel, symbol, data, at))
        return len(self.published)

    async def publish_alert(self, alert: dict, at: int) -> int:
        return 0


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def snapshot(at: int = 1_000, tickers: dict | None = None) -> Any:
    return type("S", (), {"fetched_at_ms": at, "listing": {}, "tickers": tickers or {}})()


async def offer(live: LiveUpdates, monkeypatch, updates: list) -> None:
    monkeypatch.setattr(live_updates, "updates_of", lambda _s, _a: list(updates))
    await live.on_snapshot(snapshot(), None)  # type: ignore[arg-type]


async def test_a_key_changing_faster_than_its_rate_sends_the_newest_value_on_its_turn(
    monkeypatch,
) -> None:
    recorder, clock = Recorder(), Clock()
    live = LiveUpdates(recorder, per_second=4, clock=clock)  # type: ignore[arg-type]
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 1})])
    assert [p[2] for p in recorder.published] == [{"price": 1}]  # the first goes at once
    clock.now += 0.1
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 2})])
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 3})])
    assert len(recorder.published) == 1  # held back: its turn is 0.25 s after the first
    clock.now += 0.2  # the turn has come: the flush sends the newest only
    await eventually(lambda: len(recorder.published) == 2)
    assert recorder.published[-1][2] == {"price": 3}
    assert live.coalesced == 1
    await live.close()


async def test_other_keys_are_not_held_back_by_a_busy_one(monkeypatch) -> None:
    recorder, clock = Recorder(), Clock()
    live = LiveUpdates(recorder, per_second=4, clock=clock)  # type: ignore[arg-type]
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 1})])
    clock.now += 0.01
    await offer(
        live,
        monkeypatch,
        [("market", "BTCUSDT", {"price": 2}), ("market", "ETHUSDT", {"price": 5})],
    )
    assert [(p[1], p[2]) for p in recorder.published] == [
        ("BTCUSDT", {"price": 1}),
        ("ETHUSDT", {"price": 5}),
    ]
    await live.close()


async def test_a_change_undone_before_its_turn_is_not_sent(monkeypatch) -> None:
    recorder, clock = Recorder(), Clock()
    live = LiveUpdates(recorder, per_second=4, clock=clock)  # type: ignore[arg-type]
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 1})])
    clock.now += 0.05
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 2})])
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 1})])  # back again
    clock.now += 1.0
    await asyncio.sleep(0.05)  # the flush (if any) had its chance
    assert [p[2] for p in recorder.published] == [{"price": 1}]
    await live.close()


def test_market_updates_carry_the_exchange_event_time_when_plausible() -> None:
    ticker = type("T", (), {"timestamp_ms": 990})()
    assert event_time(snapshot(1_000, {"BTCUSDT": ticker}), "BTCUSDT", 1_000) == 990
    future = type("T", (), {"timestamp_ms": 5_000})()
    assert event_time(snapshot(1_000, {"BTCUSDT": future}), "BTCUSDT", 1_000) == 1_000
    zero = type("T", (), {"timestamp_ms": 0})()
    assert event_time(snapshot(1_000, {"BTCUSDT": zero}), "BTCUSDT", 100_000_000) == 100_000_000
    assert event_time(snapshot(1_000), "BTCUSDT", 1_000) == 1_000
    assert event_time(snapshot(1_000), None, 1_000) == 1_000


def test_a_rate_must_be_positive() -> None:
    with pytest.raises(ValueError):
        LiveUpdates(Recorder(), per_second=0)  # type: ignore[arg-type]


async def test_a_value_sent_at_once_replaces_the_one_held_back(monkeypatch) -> None:
    recorder, clock = Recorder(), Clock()
    live = LiveUpdates(recorder, per_second=4, clock=clock)  # type: ignore[arg-type]
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 1})])
    clock.now += 0.1
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 2})])  # held
    clock.now += 0.2  # its turn: a newer value comes first and goes at once
    await offer(live, monkeypatch, [("market", "BTCUSDT", {"price": 3})])
    await asyncio.sleep(0.05)  # the flush had its chance: the held value must not follow
    assert [p[2] for p in recorder.published] == [{"price": 1}, {"price": 3}]
    await live.close()


async def test_an_older_price_never_follows_a_newer_one(monkeypatch) -> None:
    recorder, clock = Recorder(), Clock()
    live = LiveUpdates(recorder, per_second=4, clock=clock)  # type: ignore[arg-type]
    newer = type("T", (), {"timestamp_ms": 2_000})()
    older = type("T", (), {"timestamp_ms": 1_500})()
    monkeypatch.setattr(
        live_updates, "updates_of", lambda _s, _a: [("market", "BTCUSDT", {"price": 2})]
    )
    await live.on_snapshot(snapshot(3_000, {"BTCUSDT": newer}), None)  # type: ignore[arg-type]
    clock.now += 1.0
    monkeypatch.setattr(
        live_updates, "updates_of", lambda _s, _a: [("market", "BTCUSDT", {"price": 1})]
    )
    # a refresh that read the ticker before the stream's newer one landed
    await live.on_snapshot(snapshot(3_500, {"BTCUSDT": older}), None)  # type: ignore[arg-type]
    assert [(p[2], p[3]) for p in recorder.published] == [({"price": 2}, 2_000)]
    await live.close()
