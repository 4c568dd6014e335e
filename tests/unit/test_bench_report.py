"""The benchmark report: each KPI judged against its target from the figures, and the
report and plots written."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from bench.exchange import counted_path
from bench.exchange_latency import derivatives_calls, spot_calls
from bench.report import kpis, write
from tools.fake_bybit import RecordedRequest


def latency(p50: float, p99: float) -> dict:
    return {"count": 10, "p50": p50, "p90": p99, "p99": p99, "max": p99, "mean": p50}


def http(rps: float, p50: float, p99: float) -> dict:
    return {"throughput_rps": rps, "latency_ms": latency(p50, p99), "target_rps": 200,
            "status_counts": {"200": 10}, "dropped": 0, "loadgen_cpu_share": 0.1}  # fmt: skip


def results(**overrides) -> dict:
    scale_row = {"concurrency": 200, "http": http(1500, 90, 280), "ticker_calls_per_minute": 0,
                 "server_cpu_percent": 99}  # fmt: skip
    base = {
        "date": "2026-11-22 00:00 UTC",
        "profile": "quick",
        "machine": {"cpu": "test", "cores": 2, "memory_gb": 24},
        "versions": "test",
        "refresh_seconds": 10,
        "steady": {
            "http": http(200, 2, 9),
            "ws": {"clients": 50, "reach": 1.0, "latency_ms": latency(1, 5)},
            "hit_ratio": {"served": 0.990, "l1": 0.99, "memcached": None, "redis": None},
            "exchange_calls_per_minute": 50,
            "ticker_calls_per_minute": 6,
            "server_cpu_percent": 20,
            "server_rss_mb": 160,
            "seconds": 10,
        },
        "scale_http": {
            "closed_loop": [scale_row],
            "polling_200": {**scale_row, "http": http(800, 1.5, 8)},
            "ticker_calls": 3,
            "refresh_intervals": 2.5,
            "seconds": 25,
        },
        "pages": {
            device: {
                "cold": {p: latency(ready, ready) for p in ("ttfb", "dom_ready", "first_data")},
                "warm": {p: latency(ready, ready) for p in ("ttfb", "dom_ready", "first_data")},
                "data_payload_bytes": 3000,
            }
            for device, ready in (("desktop", 220), ("mobile", 320))
        },
    }
    return base | overrides


def verdicts(data: dict) -> dict[str, bool | None]:
    return {kpi: met for kpi, _, _, met in kpis(data)}


def test_kpis_are_judged_against_their_targets() -> None:
    found = verdicts(results())
    assert found["cache hit ratio, standard load"] is False  # 99.0% < 99.5%
    assert found["exchange calls vs clients"] is True  # 3 calls in 2.5 intervals
    assert found["cached API p99, 200 clients polling (800 req/s)"] is True
    assert found["cached API p99, 200 back-to-back clients (saturation)"] is False
    assert found["desktop page ready (cold, median)"] is True
    assert found["mobile page ready (cold, median)"] is False  # 320 ms
    assert found["mobile payload"] is True


def test_a_herd_of_calls_is_not_flat() -> None:
    data = results()
    data["scale_http"] = {**data["scale_http"], "ticker_calls": 9}
    assert verdicts(data)["exchange calls vs clients"] is False


def test_report_and_plots_are_written(tmp_path: Path) -> None:
    report = write(results(), tmp_path)
    text = report.read_text()
    assert "| cache hit ratio, standard load |" in text and "**not met**" in text
    assert (tmp_path / "results.json").is_file()
    assert (tmp_path / "scale_http.png").stat().st_size > 1000


def fanout_row(path: str, p99: float, reach: float = 1.0) -> dict:
    return {"path": path, "connected": 1000, "reach": reach, "latency_ms": latency(5, p99),
            "first_client_ms": latency(2, p99 / 2), "spread_ms": latency(3, p99 / 2),
            "server_us_per_frame": 2.5, "stalled_close_codes": {}}  # fmt: skip


def test_the_websocket_kpi_is_the_fan_out_path_and_both_paths_are_reported(
    tmp_path: Path,
) -> None:
    data = results(ws_fanout=[fanout_row("direct", 20), fanout_row("queued", 400)])
    kpi = "WebSocket p99, 1000 clients + 1 stalled (serving process's fan-out, via Redis)"
    assert verdicts(data)[kpi] is True
    data["ws_fanout"][0] = fanout_row("direct", 20, reach=0.98)
    assert verdicts(data)[kpi] is False
    text = write(data, tmp_path).read_text()
    assert "| direct | 1000 | 98.00% |" in text and "| queued | 1000 | 100.00% |" in text


def test_the_derivatives_rest_reads_are_counted_apart_from_the_spot_markets() -> None:
    """Streams replace the spot market's REST reads; the derivatives (funding, open
    interest, account ratio, linear tickers) stay on REST by design, counted apart."""
    requests = [
        RecordedRequest("/v5/market/tickers", {"category": "spot"}),
        RecordedRequest("/v5/market/tickers", {"category": "linear"}),
        RecordedRequest("/v5/market/kline", {"category": "spot", "symbol": "BTCUSDT"}),
        RecordedRequest("/v5/market/open-interest", {"category": "linear"}),
        RecordedRequest("/v5/market/account-ratio", {"category": "linear"}),
        RecordedRequest("/v5/market/funding/history", {"category": "linear"}),
    ]
    counted = dict(Counter(counted_path(r) for r in requests))
    assert spot_calls(counted) == {"/v5/market/tickers": 1, "/v5/market/kline": 1}
    assert derivatives_calls(counted) == {
        "/v5/market/tickers?category=linear": 1,
        "/v5/market/open-interest?category=linear": 1,
        "/v5/market/account-ratio?category=linear": 1,
        "/v5/market/funding/history?category=linear": 1,
    }
