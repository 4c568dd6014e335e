"""The roles scenario's bookkeeping (bench/roles.py, bench/roles_report.py): refreshes
seen in the exchange's activity, latency split around them, the KPI verdicts. No
servers: the inputs are built by hand."""

from __future__ import annotations

from bench import roles_report
from bench.loadgen.http import HttpResult
from bench.roles import AFTER_S, BEFORE_S, GAP_S, ExchangeWatch, split_by_refresh


def watch_with(activity: list[tuple[float, float]]) -> ExchangeWatch:
    watch = ExchangeWatch.__new__(ExchangeWatch)
    watch.activity = activity
    return watch


def test_activity_closer_than_the_gap_is_one_refresh() -> None:
    step = GAP_S / 2
    watch = watch_with([(0.0, 0.1), (0.1 + step, 0.2 + step), (10.0, 10.1)])
    assert watch.refreshes() == [(0.0, 0.2 + step), (10.0, 10.1)]


def test_latency_is_split_by_the_window_around_each_refresh() -> None:
    result = HttpResult(mode="open")
    # due at 0 … 19 s, 1 ms each, except 50 ms inside the refresh at 10–11 s
    for second in range(20):
        inside = 10 - BEFORE_S <= second <= 11 + AFTER_S
        result.started_s.append(100.0 + second)
        result.latencies_ms.append(50.0 if inside else 1.0)
    split = split_by_refresh(result, [(110.0, 111.0)])
    assert split["around_refreshes"]["p99"] == 50.0
    assert split["between_refreshes"]["p99"] == 1.0
    assert split["around_refreshes"]["count"] + split["between_refreshes"]["count"] == 20
    (window,) = split["refresh_windows"]
    assert window["from_s"] == 10 - BEFORE_S and window["to_s"] == 11 + AFTER_S
    assert len(split["p99_by_second_ms"]) == 20


def test_no_refresh_leaves_everything_between() -> None:
    result = HttpResult(mode="open", started_s=[1.0, 2.0], latencies_ms=[1.0, 2.0])
    split = split_by_refresh(result, [])
    assert split["refresh_windows"] == [] and split["between_refreshes"]["count"] == 2


def polling(p99: float, around: float) -> dict:
    return {
        "http": {"latency_ms": {"p50": 1.0, "p99": p99, "max": p99}, "dropped": 0},
        "around_refreshes": {"p99": around},
        "between_refreshes": {"p99": p99},
        "refresh_windows": [{"latency_ms": {"p99": around}}],
        "refreshes": 1,
    }


def setup(p99: float, around: float, rps: float, idle_mb: float, ws_mb: float) -> dict:
    rss = {"server_mb": idle_mb, "server_tree_mb": idle_mb, "collector_mb": 150.0}
    peak = {"server_mb": ws_mb, "server_tree_mb": ws_mb, "collector_mb": 150.0}
    return {
        "polling": polling(p99, around),
        "throughput": {"requests_per_s": rps},
        "rss_idle": rss,
        "ws": {
            "clients": 1000,
            "connected": 1000,
            "reach": 1.0,
            "latency_ms": {},
            "rss_peak": peak,
        },
    }


def test_kpis_judge_the_external_setup() -> None:
    replicas = [
        {
            "replicas": n,
            "seconds": 40,
            "requests": 1,
            "statuses": {},
            "exchange_calls": 200,
            "exchange_calls_per_minute": calls,
            "ticker_calls": 4,
            "refreshes": 3,
            "calls_per_refresh": 66.0,
        }
        for n, calls in ((1, 300.0), (2, 310.0), (4, 305.0))
    ]
    results = {
        "roles": {
            "refresh_seconds": 5,
            "window_s": [BEFORE_S, AFTER_S],
            "embedded": setup(300.0, 400.0, 1000, 180, 230),
            "external": setup(5.0, 4.0, 4500, 70, 120),
            "bare": {
                "polling": {"http": {"latency_ms": {"p99": 2.0}}},
                "throughput": {"requests_per_s": 5000},
            },
            "replicas": replicas,
        }
    }
    verdicts = {kpi: met for kpi, _, _, met in roles_report.kpis(results)}
    external_p99 = next(k for k in verdicts if k.startswith("API p99") and "external" in k)
    embedded_p99 = next(k for k in verdicts if k.startswith("API p99") and "embedded" in k)
    assert verdicts[external_p99] is True and verdicts[embedded_p99] is False
    assert verdicts["throughput vs bare Quart route, external server + collector"] is True
    assert verdicts["serving process RSS idle, external server"] is True
    assert verdicts["exchange calls vs serving replicas (one collector)"] is True
    assert any("The two roles" in line for line in roles_report.section(results))


def test_calls_growing_with_replicas_are_not_flat() -> None:
    rows = [
        {"replicas": n, "exchange_calls_per_minute": 300.0 * n, "ticker_calls": 4 * n}
        for n in (1, 2, 4)
    ]
    assert roles_report.replica_kpi(rows)[3] is False


def test_a_run_without_roles_adds_nothing() -> None:
    assert roles_report.kpis({}) == [] and roles_report.section({}) == []
