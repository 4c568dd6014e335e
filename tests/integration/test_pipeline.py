"""The refresher: single-flight, candles fetched only when due, failures keep the last views."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import replace

import orjson
import pytest

from app.main.collector import pipeline_settings
from app.market.errors import ExchangeUnavailable
from app.market.models.ticker import Ticker
from app.services.pipeline import Pipeline, SnapshotListener
from tests.conftest import ManualClock, eventually, make_settings
from tests.support.markets import CountingMarket


class Published:
    """The views the pipeline published last."""

    def __init__(self) -> None:
        self.views: dict[str, bytes] = {}

    async def __call__(self, bodies: dict[str, bytes], generated_at_ms: int) -> None:
        self.views = dict(bodies)


async def started_pipeline(
    clock: ManualClock, listeners: tuple[SnapshotListener, ...] = ()
) -> Pipeline:
    """A started pipeline over three symbols of a CountingMarket; the caller stops it."""
    market = CountingMarket(clock)
    settings = pipeline_settings(make_settings(VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT"))
    pipeline = Pipeline(settings, market, Published(), clock=clock, listeners=listeners)
    await pipeline.start()
    assert await pipeline.wait_ready(30)
    return pipeline


@pytest.fixture
async def pipeline(clock: ManualClock):
    pipeline = await started_pipeline(clock)
    yield pipeline
    await pipeline.stop()


def view(pipeline: Pipeline, name: str) -> dict:
    return orjson.loads(pipeline.publish.views[name])  # type: ignore[attr-defined]


async def test_concurrent_refreshes_share_one_fetch(pipeline: Pipeline) -> None:
    market: CountingMarket = pipeline.source  # type: ignore[assignment]
    market.ticker_delay = 0.05
    before = market.calls["tickers"]
    snapshots = await asyncio.gather(*(pipeline.refresh() for _ in range(200)))
    assert market.calls["tickers"] - before == 1
    assert len({s.version for s in snapshots}) == 1


async def test_candles_are_fetched_only_when_due(pipeline: Pipeline, clock: ManualClock) -> None:
    market: CountingMarket = pipeline.source  # type: ignore[assignment]
    first = dict(market.calls)
    await pipeline.refresh()  # same instant: nothing is due
    assert market.calls["candles/1m"] == first["candles/1m"]
    assert market.calls["tickers"] == first["tickers"] + 1
    assert market.calls["books"] == first["books"] + 3
    clock.advance(10)  # the refresh interval: 1m candles are due, 4h ones are not
    await pipeline.refresh()
    assert market.calls["candles/1m"] == first["candles/1m"] + 3
    assert market.calls["candles/4h"] == first["candles/4h"]
    clock.advance(1440)  # 4h / 10
    await pipeline.refresh()
    assert market.calls["candles/4h"] == first["candles/4h"] + 3


async def test_forming_candle_follows_the_ticker(pipeline: Pipeline, clock: ManualClock) -> None:
    clock.advance(5)  # one step: tickers move, 4h candles are not re-fetched
    snapshot = await pipeline.refresh()
    last = snapshot.tickers["ETHUSDT"].last
    four_hours = snapshot.candles["ETHUSDT"]["4h"]
    assert four_hours.close[-1] == last
    assert four_hours.low[-1] <= last <= four_hours.high[-1]


async def test_an_outage_keeps_the_last_views(pipeline: Pipeline, clock: ManualClock) -> None:
    market: CountingMarket = pipeline.source  # type: ignore[assignment]
    before = view(pipeline, "dashboard:desktop")
    market.fail_tickers = True
    clock.advance(10)
    with pytest.raises(ExchangeUnavailable):
        await pipeline.refresh()
    assert pipeline.status.last_error == "simulated outage"
    assert pipeline.status.consecutive_failures == 1
    assert view(pipeline, "dashboard:desktop") == before
    market.fail_tickers = False
    await pipeline.refresh()
    assert pipeline.status.consecutive_failures == 0
    assert view(pipeline, "dashboard:desktop")["version"] == before["version"] + 1


async def test_a_missing_part_is_reported_not_fatal(pipeline: Pipeline) -> None:
    market: CountingMarket = pipeline.source  # type: ignore[assignment]
    market.fail_books_for = {"SOLUSDT"}
    await pipeline.refresh()
    desktop = view(pipeline, "dashboard:desktop")
    assert desktop["errors"] == {"SOLUSDT/orderbook": "no book for SOLUSDT"}
    sol = view(pipeline, "confluence:SOLUSDT:all")
    assert sol["components"]["orderbook"]["score"] is None  # unavailable, not invented
    assert "orderbook" not in sol["weights_used"]
    assert len(desktop["symbols"]) == 3


async def test_a_missing_section_leaves_a_partial_dashboard(clock: ManualClock) -> None:
    market = CountingMarket(clock)
    market.fail_candles_for = {"BTCUSDT"}  # no BTC candles: no beta can be measured
    settings = pipeline_settings(make_settings(VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT"))
    published = Published()
    pipeline = Pipeline(settings, market, published, clock=clock)
    await pipeline.start()
    try:
        assert await pipeline.wait_ready(30)
    finally:
        await pipeline.stop()
    desktop = orjson.loads(published.views["dashboard:desktop"])
    assert desktop["beta"] is None
    assert desktop["errors"]["beta"] == "LookupError: no BTC candles to measure beta against"
    assert desktop["errors"]["BTCUSDT/candles/4h"] == "no candles for BTCUSDT"
    assert desktop["overview"]["symbols"] == 3 and desktop["movers"] is not None
    eth = next(row for row in desktop["symbols"] if row["symbol"] == "ETHUSDT")
    assert eth["confluence"]["score"] is not None and eth["beta"] is None
    mobile = orjson.loads(published.views["dashboard:mobile"])
    assert mobile["beta_summary"] is None and len(mobile["confluence_scores"]) == 3
    assert "beta" not in published.views  # its last good version stays served, marked stale
    assert "confluence:ETHUSDT:all" in published.views


async def test_a_listener_whose_backend_is_down_logs_one_warning_per_outage(
    redis, clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Redis down under the alert service: each refresh's listeners on Redis (the alert
    evaluation, the digests' scheduler) fail, but the log says so once per listener (a
    warning, no traceback), and once more when it works again."""
    from app.main.embedded import create_app
    from tests.conftest import RATE_LIMITS_OFF, eventually, state_of

    settings = make_settings(
        VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT",
        VIRTUOSO_REDIS_URL=f"redis://{redis.address}/0",
        VIRTUOSO_RATE_LIMITS=RATE_LIMITS_OFF,
    )
    app = create_app(settings, CountingMarket(clock), clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        pipeline = state_of(test_app).pipeline
        redis.kill()
        caplog.clear()
        for _ in range(4):
            clock.advance(10)
            await pipeline.refresh(force=True)
        about_listeners = [r for r in caplog.records if "snapshot listener" in r.getMessage()]
        loud = [r for r in about_listeners if r.levelno >= logging.WARNING]
        named = sorted(str(r.args[0]) for r in loud)  # type: ignore[index]
        assert named == ["AlertEvaluation.on_snapshot", "DigestScheduler.on_snapshot"], [
            r.getMessage() for r in about_listeners
        ]
        for record in loud:
            assert record.levelno == logging.WARNING and record.exc_info is None
            assert "cannot reach its backend" in record.getMessage()
        redis.restart()
        caplog.clear()
        caplog.set_level(logging.INFO, logger="app.services.pipeline")

        async def recovered() -> bool:
            clock.advance(10)
            await pipeline.refresh(force=True)
            return any("works again" in r.getMessage() for r in caplog.records)

        for _ in range(60):  # the Redis breaker lets a probe through after its back-off
            if await recovered():
                break
            await asyncio.sleep(0.5)
        loud = [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert not [r for r in loud if "snapshot listener" in r.getMessage()]
        assert any("works again" in r.getMessage() for r in caplog.records)


async def test_a_defective_listener_gets_one_traceback_per_episode(
    clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    calls = 0
    armed = False  # the listener is given at construction; it fails from the first refresh

    async def defective(snapshot, analysis) -> None:
        nonlocal calls
        if not armed:
            return
        calls += 1
        raise KeyError("a bug")

    pipeline = await started_pipeline(clock, listeners=(defective,))
    armed = True
    try:
        for _ in range(3):
            clock.advance(10)
            await pipeline.refresh(force=True)
    finally:
        await pipeline.stop()
    assert calls == 3  # it keeps being called: the refresher is not stopped by it
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and errors[0].exc_info is not None


class TickingMarket(CountingMarket):
    """A CountingMarket whose streams push the tickers put in ``ticks``."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__(clock)
        self.ticks: asyncio.Queue[dict[str, Ticker]] = asyncio.Queue()

    async def next_ticks(self) -> dict[str, Ticker]:
        return await self.ticks.get()


class Rounds:
    """The views of every publication, in order."""

    def __init__(self) -> None:
        self.rounds: list[dict[str, bytes]] = []

    async def __call__(self, bodies: dict[str, bytes], generated_at_ms: int) -> None:
        self.rounds.append(dict(bodies))


async def test_a_streamed_tick_republishes_only_the_views_it_changed(clock: ManualClock) -> None:
    """A tick changes a few views of ~40 (the dashboards, the ticked symbol's
    confluence views); the others keep the copy the refresh published. An explicit
    republish (alerts changed) and a refresh publish every view."""
    market = TickingMarket(clock)
    settings = replace(
        pipeline_settings(make_settings(VIRTUOSO_SYMBOLS="BTCUSDT,ETHUSDT,SOLUSDT")),
        refresh_ahead=False,  # one refresh: every later publication comes from the tick
    )
    published = Rounds()
    pipeline = Pipeline(settings, market, published, clock=clock)
    await pipeline.start()
    try:
        assert await pipeline.wait_ready(30)
        everything = set(published.rounds[0])
        eth = pipeline.latest.tickers["ETHUSDT"]  # type: ignore[union-attr]
        moved = replace(eth, last=eth.last * 1.01, timestamp_ms=eth.timestamp_ms + 1)
        market.ticks.put_nowait({"ETHUSDT": moved})
        await eventually(lambda: len(published.rounds) == 2)
        ticked = set(published.rounds[1])
        assert {"dashboard:desktop", "dashboard:mobile", "confluence:ETHUSDT:all"} <= ticked
        assert not {n for n in ticked if n.startswith(("confluence:BTCUSDT", "confluence:SOL"))}
        assert "beta" in everything and "beta" not in ticked  # candles did not change
        assert len(ticked) < len(everything) / 2
        desktop = orjson.loads(published.rounds[1]["dashboard:desktop"])
        row = next(r for r in desktop["symbols"] if r["symbol"] == "ETHUSDT")
        assert row["price"] == pytest.approx(moved.last)
        assert await pipeline.republish()
        assert set(published.rounds[2]) == everything
        await pipeline.refresh()
        assert set(published.rounds[3]) == everything
    finally:
        await pipeline.stop()
