"""The Grafana boards (dashboards/): up to date, complete, and true to the metric contract."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from dashboards import build

ROOT = Path(__file__).resolve().parents[2]
PROVISIONING = ROOT / "grafana" / "provisioning"

BOARDS = {
    "virtuoso-kpi": "Virtuoso — KPI overview",
    "virtuoso-cache": "Virtuoso — Cache tiers",
    "virtuoso-backends": "Virtuoso — Backends & resilience",
    "virtuoso-realtime": "Virtuoso — Realtime & alerts",
}
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}

# The observability contract (the metric names the app exposes at /metrics): every
# metric with its type and labels; a label's set of values when the contract bounds it.
FAMILIES = {
    "market", "confluence", "signals", "beta", "overview", "movers", "symbols", "candles",
    "alerts", "dash", "session", "ratelimit", "other",
}  # fmt: skip
TIERS = {"l1", "memcached", "redis"}
CHANNELS = {"market", "confluence", "signals", "beta", "alerts", "dashboard"}
DISCONNECT_REASONS = {
    "normal", "slow_client", "heartbeat_timeout", "policy", "server_full", "shutdown", "error",
}  # fmt: skip
CONTRACT: dict[str, tuple[str, dict[str, set[str] | None]]] = {
    "virtuoso_http_request_duration_seconds": (
        "histogram",
        {"route": None, "method": None, "status": None},
    ),
    "virtuoso_cache_operations_total": (
        "counter",
        {"tier": TIERS, "family": FAMILIES, "result": {"hit", "miss", "stale", "error"}},
    ),
    "virtuoso_cache_requests_total": (
        "counter",
        {"family": FAMILIES, "outcome": {"hit", "stale", "miss", "error"}},
    ),
    "virtuoso_cache_operation_duration_seconds": (
        "histogram",
        {"tier": TIERS, "operation": {"get", "set"}},
    ),
    "virtuoso_cache_items": ("gauge", {"tier": TIERS}),
    "virtuoso_cache_memory_used_bytes": ("gauge", {"tier": TIERS}),
    "virtuoso_cache_memory_limit_bytes": ("gauge", {"tier": TIERS}),
    "virtuoso_cache_evictions_total": ("counter", {"tier": TIERS}),
    "virtuoso_cache_singleflight_waits_total": ("counter", {"family": FAMILIES}),
    "virtuoso_cache_invalidations_total": ("counter", {"family": FAMILIES}),
    "virtuoso_cache_computations_total": ("counter", {"family": FAMILIES}),
    "virtuoso_exchange_requests_total": (
        "counter",
        {
            "exchange": None,
            "endpoint": {"start", "tickers", "ohlcv", "order_book", "derivatives"},
            "outcome": {"ok", "error", "timeout", "rate_limited", "rejected"},
        },
    ),
    "virtuoso_exchange_request_duration_seconds": (
        "histogram",
        {"exchange": None, "endpoint": {"start", "tickers", "ohlcv", "order_book", "derivatives"}},
    ),
    "virtuoso_exchange_ratelimit_wait_seconds": (
        "histogram",
        {"exchange": None, "endpoint": {"start", "tickers", "ohlcv", "order_book", "derivatives"}},
    ),
    "virtuoso_breaker_state": ("gauge", {"breaker": None}),
    "virtuoso_breaker_transitions_total": (
        "counter",
        {"breaker": None, "state": {"closed", "open", "half_open"}},
    ),
    "virtuoso_rate_limit_rejections_total": (
        "counter",
        {"family": {"data", "session", "admin", "rum", "ws"}},
    ),
    "virtuoso_pipeline_refresh_duration_seconds": ("histogram", {"outcome": {"ok", "error"}}),
    "virtuoso_pipeline_refreshes_total": ("counter", {"outcome": {"ok", "error", "skipped"}}),
    "virtuoso_snapshot_age_seconds": ("gauge", {}),
    "virtuoso_refresh_interval_seconds": ("gauge", {}),
    "virtuoso_views_built_total": ("counter", {}),
    "virtuoso_ws_connections": ("gauge", {}),
    "virtuoso_ws_messages_total": (
        "counter",
        {"channel": CHANNELS, "result": {"sent", "coalesced", "dropped"}},
    ),
    "virtuoso_ws_disconnects_total": (
        "counter",
        {"reason": DISCONNECT_REASONS},
    ),
    "virtuoso_ws_delivery_latency_seconds": ("histogram", {"channel": CHANNELS}),
    "virtuoso_ws_data_age_seconds": ("histogram", {"channel": CHANNELS}),
    "virtuoso_page_load_seconds": (
        "histogram",
        {"device": {"desktop", "mobile"}, "phase": {"ttfb", "dom_ready", "first_data"}},
    ),
    "virtuoso_alerts_triggered_total": ("counter", {"level": {"info", "warning", "critical"}}),
    "virtuoso_collector_leading": ("gauge", {}),
    "virtuoso_collector_requests_total": (
        "counter",
        {
            "kind": {"refresh", "candles", "republish"},
            "outcome": {"ok", "refused", "timeout", "unavailable"},
        },
    ),
    "virtuoso_collector_report_age_seconds": ("gauge", {}),
    "process_cpu_seconds_total": ("counter", {}),
    "process_resident_memory_bytes": ("gauge", {}),
    "process_open_fds": ("gauge", {}),
}
TARGET_LABELS = {"job", "instance"}  # added by Prometheus to every scraped series
# What only a collector counts (it alone calls the exchange, refreshes and fires alerts):
# read from the collectors' job; process_* from every process; the rest from the replicas'.
COLLECTOR_METRICS = {
    "virtuoso_exchange_requests_total",
    "virtuoso_exchange_request_duration_seconds",
    "virtuoso_exchange_ratelimit_wait_seconds",
    "virtuoso_pipeline_refresh_duration_seconds",
    "virtuoso_pipeline_refreshes_total",
    "virtuoso_views_built_total",
    "virtuoso_alerts_triggered_total",
    "virtuoso_collector_leading",
}
SELECTOR = re.compile(r"\b((?:virtuoso|process)_[a-z_]+)\{([^}]*)\}")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")

# KPI stat → (direction, target) from the design: "at_least" = red below, green from the
# target on; "below" = green below, red from the target on.
KPI_TARGETS = {
    "Availability": ("at_least", 0.999),
    "Error budget burn rate": ("below", 1),
    "API p99 latency": ("below", 0.1),
    "Mean API response time": ("below", 0.1),
    "Cache hit ratio": ("at_least", 0.95),
    "WebSocket delivery p99": ("below", 0.05),
    "Exchange → fan-out p99 (market)": ("below", 0.25),
    "Desktop page load p95": ("below", 0.8),
    "Mobile page load p95": ("below", 1.5),
    "Cache memory used": ("below", 0.8),
}

METRIC = re.compile(r"\b(?:virtuoso_[a-z_]+|process_[a-z_]+)")
MATCHER = re.compile(r'([A-Za-z_]\w*)\s*(=~|!~|!=|=)\s*"([^"]*)"')
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
RANGE_FUNCTION = re.compile(r"(?<![\w])(irate|rate|increase)\(")


@pytest.fixture(scope="module")
def boards() -> dict[str, dict]:
    """Every board as Grafana reads it: the JSON of a fresh build."""
    return {uid: json.loads(text) for uid, text in build.rendered().items()}


def panels(board: dict) -> Iterator[dict]:
    """The panels of a board (rows left out, the panels of collapsed rows included)."""
    for panel in board["panels"]:
        if panel["type"] == "row":
            yield from panel.get("panels", [])
        else:
            yield panel


def queries(boards: dict[str, dict]) -> Iterator[tuple[str, dict, dict]]:
    for uid, board in boards.items():
        for panel in panels(board):
            for target in panel["targets"]:
                yield uid, panel, target


def contract_metric(name: str) -> tuple[str, bool]:
    """The contract's metric for a name used in a query, and whether it is a histogram
    series (``_bucket``, ``_sum`` or ``_count``)."""
    if name in CONTRACT:
        return name, False
    for suffix in HISTOGRAM_SUFFIXES:
        base = name.removesuffix(suffix)
        if name.endswith(suffix) and CONTRACT.get(base, ("",))[0] == "histogram":
            return base, True
    raise AssertionError(f"{name} is not in the metric contract")


def range_function_arguments(expr: str) -> Iterator[tuple[str, str]]:
    """(function, its argument) for every rate(), irate() and increase() in ``expr``."""
    for match in RANGE_FUNCTION.finditer(expr):
        depth, end = 1, match.end()
        while depth:
            assert end < len(expr), f"unbalanced parentheses in {expr!r}"
            depth += {"(": 1, ")": -1}.get(expr[end], 0)
            end += 1
        yield match.group(1), expr[match.end() : end - 1]


# --- The build ---------------------------------------------------------------------------------


def test_committed_json_is_a_fresh_build() -> None:
    assert build.check() == [], "run: python -m dashboards.build"


def test_check_names_every_board_out_of_date(tmp_path: Path) -> None:
    build.write(tmp_path)
    assert build.check(tmp_path) == []
    assert build.main(["--check", "--out", str(tmp_path)]) == 0

    kpi = tmp_path / "virtuoso-kpi.json"
    kpi.write_text(kpi.read_text(encoding="utf-8").replace("30s", "5s"), encoding="utf-8")
    (tmp_path / "virtuoso-cache.json").unlink()
    (tmp_path / "old-board.json").write_text("{}\n", encoding="utf-8")
    problems = build.check(tmp_path)
    assert [problem.split(":")[0] for problem in problems] == [
        "virtuoso-kpi",
        "virtuoso-cache",
        "old-board",
    ]
    assert build.main(["--check", "--out", str(tmp_path)]) == 1

    build.write(tmp_path)  # rewrites the boards and removes the stray file
    assert build.check(tmp_path) == []
    assert sorted(path.stem for path in tmp_path.glob("*.json")) == sorted(BOARDS)


def test_json_is_stable_sorted_and_ends_with_a_newline(boards: dict[str, dict]) -> None:
    for uid, text in build.rendered().items():
        assert text.endswith("}\n") and not text.endswith("\n\n")
        again = json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False)
        assert text == again + "\n", uid
    assert build.rendered() == build.rendered()


# --- The boards --------------------------------------------------------------------------------


def test_the_four_boards_with_their_settings(boards: dict[str, dict]) -> None:
    assert {uid: board["title"] for uid, board in boards.items()} == BOARDS
    for uid, board in boards.items():
        assert board["uid"] == uid
        assert board["tags"] == ["virtuoso"], uid
        assert board["time"] == {"from": "now-1h", "to": "now"}, uid
        assert board["refresh"] == "30s", uid
        variables = {variable["name"]: variable for variable in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource", uid
        assert variables["datasource"]["query"] == "prometheus", uid
        ids = [panel["id"] for panel in board["panels"]]
        ids += [nested["id"] for panel in board["panels"] for nested in panel.get("panels", [])]
        assert len(ids) == len(set(ids)), f"{uid}: repeated panel ids"


def test_every_panel_has_description_unit_and_the_datasource_variable(
    boards: dict[str, dict],
) -> None:
    for uid, board in boards.items():
        assert list(panels(board)), uid
        for panel in panels(board):
            where = f"{uid} / {panel.get('title')!r}"
            assert panel.get("title"), where
            assert isinstance(panel.get("description"), str) and panel["description"].strip()
            assert panel["fieldConfig"]["defaults"].get("unit"), f"{where}: no unit"
            assert panel.get("datasource") == DATASOURCE, where
            assert panel["targets"], f"{where}: no query"
            ref_ids = [target["refId"] for target in panel["targets"]]
            assert all(ref_ids) and len(ref_ids) == len(set(ref_ids)), where
            for target in panel["targets"]:
                assert target.get("datasource") == DATASOURCE, where
                assert target["expr"].strip(), where


def test_the_grid_has_no_overlap_and_no_overflow(boards: dict[str, dict]) -> None:
    for uid, board in boards.items():
        boxes = []
        for panel in board["panels"]:
            grid = panel["gridPos"]
            assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, uid
            assert grid["y"] >= 0 and grid["h"] > 0, uid
            for title, other in boxes:
                overlap = (
                    grid["x"] < other["x"] + other["w"]
                    and other["x"] < grid["x"] + grid["w"]
                    and grid["y"] < other["y"] + other["h"]
                    and other["y"] < grid["y"] + grid["h"]
                )
                assert not overlap, f"{uid}: {panel['title']!r} overlaps {title!r}"
            boxes.append((panel["title"], grid))


def test_kpi_stats_have_thresholds_at_their_targets(boards: dict[str, dict]) -> None:
    stats = {
        panel["title"]: panel for panel in panels(boards["virtuoso-kpi"]) if panel["type"] == "stat"
    }
    assert set(KPI_TARGETS) <= set(stats), set(KPI_TARGETS) - set(stats)
    assert "Exchange calls per minute" in stats
    for title, (direction, target) in KPI_TARGETS.items():
        steps = stats[title]["fieldConfig"]["defaults"]["thresholds"]["steps"]
        colors = ["red", "green"] if direction == "at_least" else ["green", "red"]
        assert steps == [
            {"color": colors[0], "value": None},
            {"color": colors[1], "value": target},
        ], title
        assert stats[title]["options"]["colorMode"] == "background", title


def test_http_latency_panels_ask_for_exemplars(boards: dict[str, dict]) -> None:
    latency = [
        (uid, panel, target)
        for uid, panel, target in queries(boards)
        if panel["type"] == "timeseries"
        and "virtuoso_http_request_duration_seconds_bucket" in target["expr"]
    ]
    assert latency
    for uid, panel, target in latency:
        assert target.get("exemplar") is True, f"{uid} / {panel['title']!r}"


# --- PromQL ------------------------------------------------------------------------------------


def test_every_rate_and_increase_uses_rate_interval(boards: dict[str, dict]) -> None:
    for uid, panel, target in queries(boards):
        expr, where = target["expr"], f"{uid} / {panel['title']!r}"
        for function, argument in range_function_arguments(expr):
            assert argument.endswith("[$__rate_interval]"), f"{where}: {function}({argument})"
        for window in re.findall(r"\[([^\]]*)\]", expr):
            assert window == "$__rate_interval", f"{where}: range [{window}] in {expr}"


def test_percentiles_sum_bucket_rates_by_le(boards: dict[str, dict]) -> None:
    for uid, panel, target in queries(boards):
        expr = target["expr"]
        if "histogram_quantile(" in expr:
            assert re.search(
                r"histogram_quantile\(0\.\d+, sum by \(le(, [a-z_, ]+)?\) \(rate\(\w+_bucket\{",
                expr,
            ), f"{uid} / {panel['title']!r}: {expr}"


def test_queries_use_only_contract_metrics_and_labels(boards: dict[str, dict]) -> None:
    for uid, panel, target in queries(boards):
        expr, where = target["expr"], f"{uid} / {panel['title']!r}"
        names = METRIC.findall(expr)
        assert names, f"{where}: no contract metric in {expr}"
        metrics = [contract_metric(name) for name in names]
        labels: dict[str, set[str] | None] = {label: None for label in TARGET_LABELS}
        if any(is_histogram_series for _, is_histogram_series in metrics):
            labels["le"] = None
        for metric, _ in metrics:
            for label, values in CONTRACT[metric][1].items():
                if values is None or (label in labels and labels[label] is None):
                    labels[label] = None  # some metric of the query does not bound it
                else:
                    labels[label] = labels.get(label, set()) | values
        for grouping in GROUPING.findall(expr):
            for label in filter(None, (part.strip() for part in grouping.split(","))):
                assert label in labels, f"{where}: grouping by unknown label {label!r}"
        for label, operator, value in MATCHER.findall(expr):
            assert label in labels, f"{where}: unknown label {label!r}"
            allowed = labels[label]
            if allowed is None or value.startswith("$"):
                continue
            alternatives = value.split("|") if operator in ("=~", "!~") else [value]
            for alternative in alternatives:
                if re.fullmatch(r"[\w-]+", alternative):
                    assert alternative in allowed, f"{where}: {label}={alternative!r}"


def test_each_metric_is_read_from_the_job_that_counts_it(boards: dict[str, dict]) -> None:
    """Exchange calls, refreshes, views built, alerts fired and leadership from
    ``$collector_job``; process metrics from both jobs; everything else (HTTP, cache,
    WebSocket, breakers, snapshot age) from the replicas' ``$job``."""
    for uid, panel, target in queries(boards):
        where = f"{uid} / {panel['title']!r}"
        for name, matchers in SELECTOR.findall(target["expr"]):
            metric, _ = contract_metric(name)
            if metric in COLLECTOR_METRICS:
                wanted = 'job="$collector_job"'
            elif metric.startswith("process_"):
                wanted = 'job=~"$job|$collector_job"'
            else:
                wanted = 'job="$job"'
            assert wanted in matchers, f"{where}: {name}{{{matchers}}} is not read with {wanted}"


def test_panel_queries_cover_every_board_and_substitute_every_variable() -> None:
    listed = build.panel_queries()
    assert {uid for uid, _, _ in listed} == set(BOARDS)
    for uid in BOARDS:
        assert any(board == uid for board, _, _ in listed), uid
    for uid, title, expr in listed:
        assert title and expr, uid
        evaluated = build.substitute(expr)
        assert "$" not in evaluated, f"{uid} / {title!r}: {evaluated}"
        assert "[1m]" in evaluated or "rate(" not in evaluated


def test_substitute() -> None:
    assert build.substitute("rate(x[$__rate_interval])") == "rate(x[1m])"
    assert build.substitute('up{job="$job"}') == 'up{job="virtuoso"}'
    assert build.substitute("${datasource}/${job}") == "prometheus/virtuoso"
    assert build.substitute('up{job="$collector_job"}') == 'up{job="virtuoso-collector"}'
    with pytest.raises(KeyError):
        build.substitute("up{instance=~'$nowhere'}")


# --- Provisioning ------------------------------------------------------------------------------


def test_datasource_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING / "datasources" / "datasources.yml").read_text())
    sources = {source["uid"]: source for source in config["datasources"]}
    assert set(sources) == {"prometheus", "tempo"}
    prometheus, tempo = sources["prometheus"], sources["tempo"]
    assert prometheus["type"] == "prometheus"
    assert prometheus["url"] == "http://prometheus:9090"
    assert prometheus["isDefault"] is True
    assert prometheus["jsonData"]["exemplarTraceIdDestinations"] == [
        {"name": "trace_id", "datasourceUid": "tempo"}
    ]
    assert tempo["type"] == "tempo"
    assert tempo["url"] == "http://tempo:3200"
    assert not tempo.get("isDefault")


def test_dashboard_provisioning() -> None:
    config = yaml.safe_load((PROVISIONING / "dashboards" / "dashboards.yml").read_text())
    (provider,) = config["providers"]
    assert provider["type"] == "file"
    assert provider["folder"] == "Virtuoso"
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards"
