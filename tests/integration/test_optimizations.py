"""The benchmark's ablation switches (VIRTUOSO_OPTIMIZATIONS_OFF): each turns off
exactly what it names, and the responses stay the same."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator

import orjson
import zstandard
from werkzeug.datastructures import Headers

from app.main.embedded import create_app
from tests.conftest import ManualClock, eventually, make_settings, state_of
from tests.support.markets import CountingMarket


async def app_with(clock: ManualClock, market: CountingMarket, **environ: str) -> AsyncIterator:
    app = create_app(make_settings(**environ), market, clock)
    async with app.test_app() as test_app:
        await eventually(lambda: state_of(test_app).warmed, seconds=30)
        yield test_app


async def body_of(test_app, path: str, **headers: str) -> tuple[dict, Headers]:
    """The decoded JSON body and the (case-insensitive) response headers."""
    response = await test_app.test_client().get(path, headers=headers)
    data = await response.get_data()
    if response.headers.get("Content-Encoding") == "zstd":
        reader = zstandard.ZstdDecompressor().stream_reader(
            io.BytesIO(data), read_across_frames=True
        )
        data = reader.read()
    return orjson.loads(data), response.headers


async def test_l1_off_keeps_nothing_in_process(memcached, clock: ManualClock) -> None:
    market = CountingMarket(clock)
    environ = {"VIRTUOSO_OPTIMIZATIONS_OFF": "l1", "VIRTUOSO_MEMCACHED_URL": memcached.address}
    async for test_app in app_with(clock, market, **environ):
        _, headers = await body_of(test_app, "/api/dashboard/data")
        assert headers["X-Cache"] == "memcached"
        assert len(state_of(test_app).runtime.cache.l1) == 0


async def test_single_flight_off_refreshes_once_per_caller(clock: ManualClock) -> None:
    """Concurrent refreshes share one exchange fetch, unless single_flight is off."""
    for switched_off, expected in (("", 1), ("single_flight", 5)):
        market = CountingMarket(clock)
        environ = {"VIRTUOSO_OPTIMIZATIONS_OFF": switched_off} if switched_off else {}
        async for test_app in app_with(clock, market, **environ):
            market.ticker_delay = 0.1  # the callers overlap while the first one fetches
            pipeline = state_of(test_app).pipeline
            before = market.calls["tickers"]
            await asyncio.gather(*(pipeline.refresh(force=True) for _ in range(5)))
            assert market.calls["tickers"] - before == expected, switched_off


async def test_serialize_once_off_serves_the_same_content(clock: ManualClock) -> None:
    market = CountingMarket(clock)
    async for test_app in app_with(clock, market):
        normal, _ = await body_of(test_app, "/api/dashboard/mobile", **{"Accept-Encoding": "zstd"})
    async for test_app in app_with(
        clock, CountingMarket(clock), VIRTUOSO_OPTIMIZATIONS_OFF="serialize_once"
    ):
        again, headers = await body_of(
            test_app, "/api/dashboard/mobile", **{"Accept-Encoding": "zstd"}
        )
        assert headers["Content-Encoding"] == "zstd"  # compressed per request instead
    for payload in (normal, again):
        payload.pop("age_ms")
    assert again == normal


async def test_compression_off_serves_mobile_uncompressed(clock: ManualClock) -> None:
    market = CountingMarket(clock)
    async for test_app in app_with(clock, market, VIRTUOSO_OPTIMIZATIONS_OFF="compression"):
        payload, headers = await body_of(
            test_app, "/api/dashboard/mobile", **{"Accept-Encoding": "zstd"}
        )
        assert "Content-Encoding" not in headers
        assert payload["confluence_scores"]


async def test_refresh_ahead_off_stops_the_scheduled_refresh(clock: ManualClock) -> None:
    for switched_off, refreshes_more in (("", True), ("refresh_ahead", False)):
        market = CountingMarket(clock)
        environ = {"VIRTUOSO_REFRESH_SECONDS": "1"}
        if switched_off:
            environ["VIRTUOSO_OPTIMIZATIONS_OFF"] = switched_off
        async for _started in app_with(clock, market, **environ):
            first = market.calls["tickers"]
            await asyncio.sleep(2.5)
            assert (market.calls["tickers"] > first) is refreshes_more, switched_off
