"""Every endpoint against the app on the simulated market: content, freshness, HTTP caching,
and bad input answered with a clear 4xx JSON error."""

from __future__ import annotations

import io

import orjson
import pytest
import zstandard
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.analytics.overview import market_regime
from app.market.errors import ExchangeUnavailable
from tests.conftest import ManualClock, state_of

DATA_ENDPOINTS = [
    "/api/dashboard/data",
    "/api/dashboard/mobile",
    "/api/dashboard/overview",
    "/api/dashboard/signals",
    "/api/market/overview",
    "/api/market/movers",
    "/api/bitcoin-beta",
    "/api/symbols",
    "/api/confluence/BTCUSDT",
]


async def get_json(test_app: QuartTestApp, path: str, status: int = 200, **kwargs) -> dict:
    response = await test_app.test_client().get(path, **kwargs)
    body = await response.get_data()
    assert response.status_code == status, body
    assert response.content_type == "application/json"
    return orjson.loads(body)


@pytest.mark.parametrize("path", DATA_ENDPOINTS)
async def test_every_payload_says_how_fresh_it_is(
    simulated_app: QuartTestApp, clock: ManualClock, path: str
) -> None:
    clock.advance(2.5)
    payload = await get_json(simulated_app, path)
    assert payload["age_ms"] == 2500
    assert payload["stale"] is False
    assert payload["generated_at"] == int((clock.now - 2.5) * 1000)
    assert payload["source"] == "simulated" and payload["exchange"] == "simulated"
    assert payload["errors"] == {}


async def test_desktop_dashboard(simulated_app: QuartTestApp) -> None:
    payload = await get_json(simulated_app, "/api/dashboard/data")
    rows = payload["symbols"]
    assert len(rows) == 25
    volumes = [row["volume_24h"] for row in rows]
    assert volumes == sorted(volumes, reverse=True)
    for row in rows:
        confluence = row["confluence"]
        assert 0 <= confluence["score"] <= 100
        assert set(confluence["timeframes"]) == {"1m", "5m", "30m", "4h"}
        # every simulated USDT pair has a perpetual: the sixth component is available
        assert 0 <= confluence["components"]["sentiment"] <= 100
        assert row["beta"] is None if row["symbol"] == "BTCUSDT" else row["beta"]["beta"] > 0
        assert row["bid"] < row["ask"]
    assert payload["overview"]["symbols"] == 25


async def test_mobile_dashboard_is_reduced_and_small(simulated_app: QuartTestApp) -> None:
    response = await simulated_app.test_client().get("/api/dashboard/mobile")
    body = await response.get_data()
    assert len(body) <= 50 * 1024
    payload = orjson.loads(body)
    assert len(payload["confluence_scores"]) == 20
    card = payload["confluence_scores"][0]
    assert set(card) >= {
        "symbol",
        "score",
        "sentiment",
        "reliability",
        "price",
        "change_24h",
        "volume_24h",
        "high_24h",
        "low_24h",
        "components",
        "funding_rate",  # of the derivatives, the rate alone: no histories on the phone
    }
    assert "funding_history" not in card
    assert len(payload["top_movers"]["gainers"]) <= 5 and len(payload["top_movers"]["losers"]) <= 5
    assert payload["critical_alerts"] == []
    assert set(payload["beta_summary"]["bands"]) == {
        "defensive",
        "low",
        "neutral",
        "moderate",
        "high",
    }


async def test_mobile_is_served_zstd_compressed_to_clients_that_accept_it(
    simulated_app: QuartTestApp, clock: ManualClock
) -> None:
    client = simulated_app.test_client()
    plain = await client.get("/api/dashboard/mobile")
    clock.advance(1.5)
    packed = await client.get("/api/dashboard/mobile", headers={"Accept-Encoding": "gzip, zstd"})
    assert (
        packed.headers["Content-Encoding"] == "zstd" and "Accept-Encoding" in packed.headers["Vary"]
    )
    raw = await packed.get_data()
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(raw), read_across_frames=True)
    unpacked = orjson.loads(reader.read())
    assert len(raw) < len(await plain.get_data()) / 3
    assert unpacked["age_ms"] == 1500 and unpacked["stale"] is False
    assert (
        unpacked["confluence_scores"] == orjson.loads(await plain.get_data())["confluence_scores"]
    )
    refused = await client.get("/api/dashboard/mobile", headers={"Accept-Encoding": "zstd;q=0"})
    assert "Content-Encoding" not in refused.headers
    desktop = await client.get("/api/dashboard/data", headers={"Accept-Encoding": "zstd"})
    assert "Content-Encoding" not in desktop.headers  # only the mobile view is kept compressed


async def test_desktop_and_mobile_agree(simulated_app: QuartTestApp) -> None:
    desktop = await get_json(simulated_app, "/api/dashboard/data")
    mobile = await get_json(simulated_app, "/api/dashboard/mobile")
    assert desktop["version"] == mobile["version"]
    rows = {row["symbol"]: row for row in desktop["symbols"]}
    for card in mobile["confluence_scores"]:
        assert card["score"] == rows[card["symbol"]]["confluence"]["score"]
        assert card["price"] == rows[card["symbol"]]["price"]


async def test_market_overview_is_consistent(simulated_app: QuartTestApp) -> None:
    overview = (await get_json(simulated_app, "/api/market/overview"))["overview"]
    rows = (await get_json(simulated_app, "/api/dashboard/data"))["symbols"]
    changes = {row["symbol"]: row["change_24h"] for row in rows}
    assert overview["gainers"] == sum(1 for c in changes.values() if c > 0)
    assert overview["gainers"] + overview["losers"] + overview["unchanged"] == 25
    assert overview["market_regime"] == market_regime(changes["BTCUSDT"])
    assert overview["total_volume_24h"] == pytest.approx(sum(r["volume_24h"] for r in rows))
    assert 10 < overview["btc_volatility"] < 200


async def test_movers_are_liquid_and_ordered(simulated_app: QuartTestApp) -> None:
    movers = await get_json(simulated_app, "/api/market/movers")
    gainers, losers = movers["gainers"], movers["losers"]
    assert [g["change_24h"] for g in gainers] == sorted(
        (g["change_24h"] for g in gainers), reverse=True
    )
    assert [x["change_24h"] for x in losers] == sorted(x["change_24h"] for x in losers)
    assert all(g["change_24h"] > 0 for g in gainers) and all(x["change_24h"] < 0 for x in losers)
    assert all(m["volume_24h"] >= 1_000_000 for m in gainers + losers)
    assert movers["excluded_illiquid"] >= 1  # SEI and WLD trade under $1M a day


async def test_signals_cross_the_thresholds(simulated_app: QuartTestApp) -> None:
    payload = await get_json(simulated_app, "/api/dashboard/signals")
    assert payload["thresholds"] == {"long": 70.0, "short": 35.0}
    for signal in payload["signals"]:
        assert signal["score"] >= 70 if signal["signal"] == "long" else signal["score"] <= 35
    desktop = await get_json(simulated_app, "/api/dashboard/data")
    expected = {r["symbol"] for r in desktop["symbols"] if r["confluence"]["signal"] != "neutral"}
    assert {s["symbol"] for s in payload["signals"]} == expected


async def test_bitcoin_beta(simulated_app: QuartTestApp) -> None:
    payload = await get_json(simulated_app, "/api/bitcoin-beta")
    assert payload["overview"]["symbols"] == 24
    assert sum(payload["overview"]["bands"].values()) == 24
    assert payload["overview"]["regime"] in {"RISK_ON", "RISK_OFF", "NEUTRAL", "CORRELATED_CRASH"}
    windows = {row["symbol"]: row["windows"] for row in payload["symbols"]}
    assert set(windows["ETHUSDT"]) == {"4h", "1h", "5m"}
    assert windows["ETHUSDT"]["4h"]["points"] == 180


@pytest.mark.parametrize("spelling", ["ETHUSDT", "ethusdt", "ETH-USDT"])
async def test_confluence_per_symbol(simulated_app: QuartTestApp, spelling: str) -> None:
    combined = await get_json(simulated_app, f"/api/confluence/{spelling}")
    assert combined["symbol"] == "ETHUSDT" and combined["timeframe"] == "all"
    one = await get_json(simulated_app, f"/api/confluence/{spelling}?timeframe=5m")
    assert one["timeframe"] == "5m"
    assert 0 <= one["score"] <= 100
    # all six components, at their configured weights (the simulated ETH has a perpetual)
    assert one["weights_used"]["sentiment"] == pytest.approx(0.07)
    assert one["components"]["sentiment"]["score"] is not None
    assert one["components"]["orderflow"]["sub_scores"]["open_interest"] is not None
    assert sum(one["weights_used"].values()) == pytest.approx(1.0)


async def test_symbols_list(simulated_app: QuartTestApp) -> None:
    payload = await get_json(simulated_app, "/api/symbols")
    assert payload["symbols"][0] == {
        "symbol": "BTCUSDT",
        "base": "BTC",
        "quote": "USDT",
        "price": payload["symbols"][0]["price"],
    }
    assert payload["timeframes"] == ["1m", "5m", "30m", "4h", "all"]


async def test_unknown_symbol_is_404_with_valid_values(simulated_app: QuartTestApp) -> None:
    for bad in ["FOOUSDT", "not a symbol!"]:
        error = await get_json(simulated_app, f"/api/confluence/{bad}", status=404)
        assert error["error"] == "unknown_symbol"
        assert "BTCUSDT" in error["valid"] and len(error["valid"]) == 25
    long = "X" * 5000
    error = await get_json(simulated_app, f"/api/confluence/{long}", status=404)
    assert len(error["message"]) < 80 and error["message"].endswith("…'")


@pytest.mark.parametrize("query", ["timeframe=2h", "timeframe=", "timeframe=1d", "tf=5m"])
async def test_bad_query_is_400_naming_the_valid_values(
    simulated_app: QuartTestApp, query: str
) -> None:
    error = await get_json(simulated_app, f"/api/confluence/BTCUSDT?{query}", status=400)
    assert error["error"] == "invalid_request"
    assert error["message"].startswith(("timeframe:", "tf:"))


async def test_etag_and_304(simulated_app: QuartTestApp) -> None:
    client = simulated_app.test_client()
    first = await client.get("/api/dashboard/data")
    etag = first.headers["ETag"]
    assert etag.startswith('W/"') and first.headers["Cache-Control"] == "public, no-cache"
    again = await client.get("/api/dashboard/data", headers={"If-None-Match": etag})
    assert again.status_code == 304 and await again.get_data() == b""
    strong = await client.get("/api/dashboard/data", headers={"If-None-Match": etag[2:]})
    assert strong.status_code == 304
    other = await client.get("/api/dashboard/data", headers={"If-None-Match": '"other"'})
    assert other.status_code == 200
    await state_of(simulated_app).pipeline.refresh()
    newer = await client.get("/api/dashboard/data", headers={"If-None-Match": etag})
    assert newer.status_code == 200 and newer.headers["ETag"] != etag


async def test_expired_views_are_recomputed_on_read(
    simulated_app: QuartTestApp, clock: ManualClock
) -> None:
    first = await get_json(simulated_app, "/api/market/overview")
    clock.advance(120)  # past TTL and grace: a read computes a new snapshot
    again = await get_json(simulated_app, "/api/market/overview")
    assert again["version"] > first["version"]
    assert again["stale"] is False and again["age_ms"] == 0


async def test_exchange_outage_serves_stale_then_503(
    simulated_app: QuartTestApp, clock: ManualClock
) -> None:
    state = state_of(simulated_app)
    before = await get_json(simulated_app, "/api/market/overview")

    async def outage(symbols):
        raise ExchangeUnavailable("exchange down")

    client = simulated_app.test_client()
    fresh_etag = (await client.get("/api/market/overview")).headers["ETag"]
    state.pipeline.source.fetch_tickers = outage  # type: ignore[method-assign]
    clock.advance(61)  # past the TTL and grace of every view
    stale = await get_json(simulated_app, "/api/market/overview")
    assert stale["stale"] is True and stale["age_ms"] == 61_000
    assert stale["overview"] == before["overview"]
    # A client revalidating its fresh copy learns it went stale (not a 304).
    revalidated = await client.get("/api/market/overview", headers={"If-None-Match": fresh_etag})
    assert revalidated.status_code == 200 and (await revalidated.get_json())["stale"] is True
    stale_etag = revalidated.headers["ETag"]
    assert stale_etag != fresh_etag
    again = await client.get("/api/market/overview", headers={"If-None-Match": stale_etag})
    assert again.status_code == 304
    ready = await get_json(simulated_app, "/health/ready")  # degraded, not dead
    assert ready["status"] == "degraded" and "stale" in ready["reasons"][0]
    clock.advance(900)  # beyond max_stale: nothing honest is left to serve
    gone = await get_json(simulated_app, "/api/market/overview", status=503)
    assert gone["error"] == "data_unavailable" and "exchange down" in gone["message"]
    dead = await get_json(simulated_app, "/health/ready", status=503)
    assert dead["status"] == "unavailable" and dead["ready"] is False


async def test_health_says_simulated(simulated_app: QuartTestApp) -> None:
    health = await get_json(simulated_app, "/health")
    assert health["status"] == "ok" and health["simulated"] is True
    assert health["cache"] == {"tiers": {"l1": True}, "embedded": True}
    assert health["pipeline"]["snapshot_version"] >= 1


async def test_unknown_routes_and_methods_are_json(simulated_app: QuartTestApp) -> None:
    missing = await get_json(simulated_app, "/api/nope", status=404)
    assert missing["error"] == "not_found"
    response = await simulated_app.test_client().post("/api/dashboard/data")
    assert response.status_code == 405
    assert orjson.loads(await response.get_data())["error"] == "method_not_allowed"


async def test_openapi_documents_every_endpoint(simulated_app: QuartTestApp) -> None:
    spec = await get_json(simulated_app, "/openapi.json")
    paths = set(spec["paths"])
    expected = {p for p in DATA_ENDPOINTS if "confluence" not in p}
    assert expected | {"/api/confluence/{symbol}", "/health", "/health/ready"} <= paths
    confluence = spec["paths"]["/api/confluence/{symbol}"]["get"]
    assert any(p["name"] == "timeframe" for p in confluence["parameters"])
    client = simulated_app.test_client()
    docs = await client.get("/docs")
    page = await docs.get_data(as_text=True)
    assert docs.status_code == 200 and "http" not in page  # every asset from this server
    script = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(await script.get_data()) > 100_000


async def test_a_defect_is_a_json_500_without_traceback(simulated_app: QuartTestApp) -> None:
    views = state_of(simulated_app).views

    async def broken(name: str) -> None:
        raise RuntimeError("secret internals")

    views.read = broken  # type: ignore[method-assign]
    response = await simulated_app.test_client().get("/api/dashboard/data")
    body = await response.get_data(as_text=True)
    assert response.status_code == 500
    assert orjson.loads(body) == {
        "error": "internal_error",
        "message": "the server failed to answer this request",
    }
    assert "secret" not in body and "Traceback" not in body


def test_the_candles_query_offers_the_markets_timeframes() -> None:
    """One list of timeframes: what the market reads is what /api/market/candles takes."""
    from app.market.models.timeframes import TIMEFRAME_SECONDS
    from app.web.schemas import CandlesQuery

    schema = CandlesQuery.model_json_schema()
    assert schema["properties"]["timeframe"]["enum"] == list(TIMEFRAME_SECONDS)
