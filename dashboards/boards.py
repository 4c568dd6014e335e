"""The four Virtuoso boards, one function each, built with grafana-foundation-sdk (Grafana 11.6).

Every query reads the metrics of the observability contract (names and labels fixed there),
through the templated ``${datasource}`` and restricted to a scrape job: ``$job``, the serving
replicas, or ``$collector_job`` for what only a collector counts (exchange calls, refreshes,
views built, alerts fired, leadership) — the compose stack scrapes the collectors as a job of
their own; with ``VIRTUOSO_COLLECTOR=embedded`` both are the app's job. Rates use
``$__rate_interval``; percentiles are ``histogram_quantile`` over ``sum by (le, …)`` of the
bucket rates. Latencies stay in seconds (unit ``s``): Grafana shows 0.1 s as "100 ms".
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from grafana_foundation_sdk.builders import common as common_b
from grafana_foundation_sdk.builders import dashboard as dash_b
from grafana_foundation_sdk.builders import prometheus as prom_b
from grafana_foundation_sdk.builders import stat as stat_b
from grafana_foundation_sdk.builders import statetimeline as timeline_b
from grafana_foundation_sdk.builders import timeseries as ts_b
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as dm
from grafana_foundation_sdk.models.prometheus import QueryEditorMode

TAGS = ["virtuoso"]
RATE_INTERVAL = "$__rate_interval"
JOB = 'job="$job"'
DEFAULT_JOB = "virtuoso"
COLLECTOR_JOB = 'job="$collector_job"'
DEFAULT_COLLECTOR_JOB = "virtuoso-collector"
EVERY_PROCESS = 'job=~"$job|$collector_job"'  # the replicas and the collectors
DATASOURCE_UID = "prometheus"  # the provisioned Prometheus (grafana/provisioning/datasources)

# KPI targets (the design's numbers).
HIT_RATIO_TARGET = 0.95
API_P99_TARGET = 0.1
MEAN_RESPONSE_TARGET = 0.1
WS_DELIVERY_P99_TARGET = 0.05
MARKET_DATA_AGE_P99_TARGET = 0.25  # exchange event → WebSocket client
DESKTOP_LOAD_P95_TARGET = 0.8
MOBILE_LOAD_P95_TARGET = 1.5
CACHE_MEMORY_TARGET = 0.8
AVAILABILITY_SLO = 0.999
ERROR_BUDGET = "0.001"  # 1 − SLO, written out: 1 - 0.999 is not 0.001 in floating point
BURN_RATE_TARGET = 1.0

HTTP = "virtuoso_http_request_duration_seconds"
API = 'route=~"/api/.*"'
SERVER_ERROR = 'status=~"5.."'
L1 = 'tier="l1"'
SHARED_TIERS = 'tier!="l1"'
SERVED = 'outcome=~"hit|stale"'  # what the KPI counts as a hit: fresh or served stale
TIER_SERVED = 'result=~"hit|stale"'
NOT_REJECTED = 'outcome!="rejected"'  # rejected = breaker open, no call made
FIRST_DATA = 'phase="first_data"'
DESKTOP = 'device="desktop"'
MARKET = 'channel="market"'
MOBILE = 'device="mobile"'


# --- PromQL ------------------------------------------------------------------------------------


def sel(metric: str, *matchers: str, job: str = JOB) -> str:
    """``metric{job="$job", …}`` (``job``: the job matcher, ``COLLECTOR_JOB`` for a
    collector's metric)."""
    return f"{metric}{{{', '.join((job, *matchers))}}}"


def rate(metric: str, *matchers: str, job: str = JOB) -> str:
    return f"rate({sel(metric, *matchers, job=job)}[{RATE_INTERVAL}])"


def increase(metric: str, *matchers: str, job: str = JOB) -> str:
    return f"increase({sel(metric, *matchers, job=job)}[{RATE_INTERVAL}])"


def total(inner: str, by: str = "") -> str:
    return f"sum by ({by}) ({inner})" if by else f"sum({inner})"


def quantile(q: float, histogram: str, *matchers: str, by: str = "", job: str = JOB) -> str:
    labels = f"le, {by}" if by else "le"
    buckets = rate(histogram + "_bucket", *matchers, job=job)
    return f"histogram_quantile({q}, sum by ({labels}) ({buckets}))"


def per_tier(expr_for: Callable[[str], str]) -> str:
    """One series per tier: l1 is per replica (summed over replicas); memcached and redis are
    shared, every replica reports the same figures (so the max, not the sum)."""
    return f"sum by (tier) ({expr_for(L1)}) or max by (tier) ({expr_for(SHARED_TIERS)})"


API_ERROR_RATIO = (
    f"({total(rate(HTTP + '_count', API, SERVER_ERROR))} or vector(0))"
    f" / {total(rate(HTTP + '_count', API))}"
)
AVAILABILITY = f"1 - ({API_ERROR_RATIO})"
BURN_RATE = f"({API_ERROR_RATIO}) / {ERROR_BUDGET}"
API_P99 = quantile(0.99, HTTP, API)
API_MEAN = f"{total(rate(HTTP + '_sum', API))} / {total(rate(HTTP + '_count', API))}"
HIT_RATIO = (
    f"{total(rate('virtuoso_cache_requests_total', SERVED))}"
    f" / {total(rate('virtuoso_cache_requests_total'))}"
)
EXCHANGE_CALLS_PER_MINUTE = (
    f"{total(rate('virtuoso_exchange_requests_total', NOT_REJECTED, job=COLLECTOR_JOB))} * 60"
)
HTTP_REQUESTS_PER_MINUTE = f"{total(rate(HTTP + '_count'))} * 60"
WS_DELIVERY_P99 = quantile(0.99, "virtuoso_ws_delivery_latency_seconds")
MARKET_DATA_AGE_P99 = quantile(0.99, "virtuoso_ws_data_age_seconds", MARKET)
CACHE_MEMORY_RATIO = (
    f"max by (tier) ({sel('virtuoso_cache_memory_used_bytes')}"
    f" / {sel('virtuoso_cache_memory_limit_bytes')})"
)


def page_load_p95(*matchers: str, by: str = "") -> str:
    return quantile(0.95, "virtuoso_page_load_seconds", *matchers, by=by)


# --- Panels ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Q:
    """One Prometheus query of a panel."""

    expr: str
    legend: str
    exemplar: bool = False

    def build(self, ref_id: str) -> prom_b.Dataquery:
        return (
            prom_b.Dataquery()
            .ref_id(ref_id)
            .datasource(datasource())
            .editor_mode(QueryEditorMode.CODE)
            .expr(self.expr)
            .legend_format(self.legend)
            .range()
            .exemplar(self.exemplar)
        )


def datasource() -> dm.DataSourceRef:
    return dm.DataSourceRef(type_val="prometheus", uid="${datasource}")


def at_least(target: float) -> dash_b.ThresholdsConfig:
    """Red below the target, green from it on."""
    return (
        dash_b.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color="red"), dm.Threshold(value=target, color="green")])
    )


def below(target: float) -> dash_b.ThresholdsConfig:
    """Green below the target, red from it on."""
    return (
        dash_b.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color="green"), dm.Threshold(value=target, color="red")])
    )


def neutral() -> dash_b.ThresholdsConfig:
    return (
        dash_b.ThresholdsConfig()
        .mode(dm.ThresholdsMode.ABSOLUTE)
        .steps([dm.Threshold(value=None, color="blue")])
    )


DASHED = dm.DynamicConfigValue(id_val="custom.lineStyle", value={"fill": "dash", "dash": [10, 10]})


def color(name: str) -> dm.DynamicConfigValue:
    return dm.DynamicConfigValue(id_val="color", value={"mode": "fixed", "fixedColor": name})


P = TypeVar("P", ts_b.Panel, stat_b.Panel, timeline_b.Panel)


def _targets(panel: P, queries: Sequence[Q]) -> P:
    for ref_id, query in zip(string.ascii_uppercase, queries, strict=False):
        panel = panel.with_target(query.build(ref_id))
    return panel


def legend(*, table: bool = False) -> common_b.VizLegendOptions:
    # The SDK's default legend has showLegend false: always say it.
    options = (
        common_b.VizLegendOptions()
        .show_legend(True)
        .placement(common.LegendPlacement.BOTTOM)
        .display_mode(common.LegendDisplayMode.TABLE if table else common.LegendDisplayMode.LIST)
    )
    return options.calcs(["mean", "max", "lastNotNull"] if table else [])


def timeseries(
    title: str,
    description: str,
    unit: str,
    queries: Sequence[Q],
    *,
    w: int = 12,
    h: int = 8,
    thresholds: dash_b.ThresholdsConfig | None = None,
    bars: bool = False,
    stack: bool = False,
    table: bool = False,
    min_val: float | None = 0,
    max_val: float | None = None,
) -> ts_b.Panel:
    panel = (
        ts_b.Panel()
        .title(title)
        .description(description)
        .datasource(datasource())
        .unit(unit)
        .span(w)
        .height(h)
        .line_width(1)
        .fill_opacity(80 if bars else 10)
        .draw_style(common.GraphDrawStyle.BARS if bars else common.GraphDrawStyle.LINE)
        .show_points(common.VisibilityMode.NEVER)
        .span_nulls(False)
        .legend(legend(table=table))
        .tooltip(
            common_b.VizTooltipOptions()
            .mode(common.TooltipDisplayMode.MULTI)
            .sort(common.SortOrder.DESCENDING)
        )
    )
    if thresholds is not None:
        panel = panel.thresholds(thresholds).thresholds_style(
            common_b.GraphThresholdsStyleConfig().mode(common.GraphThresholdsStyleMode.DASHED)
        )
    if stack:
        panel = panel.stacking(common_b.StackingConfig().mode(common.StackingMode.NORMAL))
    if min_val is not None:
        panel = panel.min(min_val)
    if max_val is not None:
        panel = panel.max(max_val)
    return _targets(panel, queries)


def kpi(
    title: str,
    description: str,
    unit: str,
    query: Q,
    thresholds: dash_b.ThresholdsConfig,
    *,
    w: int,
    h: int = 5,
    decimals: int | None = None,
) -> stat_b.Panel:
    """A stat coloured by its thresholds: green on target, red off it."""
    panel = (
        stat_b.Panel()
        .title(title)
        .description(description)
        .datasource(datasource())
        .unit(unit)
        .span(w)
        .height(h)
        .thresholds(thresholds)
        .color_scheme(dash_b.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
        .color_mode(common.BigValueColorMode.BACKGROUND)
        .graph_mode(common.BigValueGraphMode.AREA)
        .text_mode(common.BigValueTextMode.AUTO)
        .justify_mode(common.BigValueJustifyMode.AUTO)
        .reduce_options(common_b.ReduceDataOptions().calcs(["lastNotNull"]).values(False))
    )
    if decimals is not None:
        panel = panel.decimals(decimals)
    return _targets(panel, [query])


# --- Boards ------------------------------------------------------------------------------------


def _board(uid: str, title: str, description: str) -> dash_b.Dashboard:
    return (
        dash_b.Dashboard(title)
        .uid(uid)
        .description(description)
        .tags(TAGS)
        .time("now-1h", "now")
        .refresh("30s")
        .timezone("browser")
        .tooltip(dm.DashboardCursorSync.CROSSHAIR)
        .with_variable(
            dash_b.DatasourceVariable("datasource")
            .label("Data source")
            .type("prometheus")  # the SDK's name for the variable's query: the plugin id
            .current(dm.VariableOption(text="Prometheus", value=DATASOURCE_UID))
        )
        .with_variable(
            dash_b.QueryVariable("job")
            .label("Job")
            .description("Prometheus scrape job of the Virtuoso replicas")
            .datasource(datasource())
            .query("label_values(virtuoso_refresh_interval_seconds, job)")
            .current(dm.VariableOption(text=DEFAULT_JOB, value=DEFAULT_JOB))
            .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        .with_variable(
            dash_b.QueryVariable("collector_job")
            .label("Collector job")
            .description(
                "Prometheus scrape job of the collectors (virtuoso collect): where the "
                "exchange calls, refreshes and fired alerts are counted. The app's own job "
                "with VIRTUOSO_COLLECTOR=embedded."
            )
            .datasource(datasource())
            .query("label_values(virtuoso_pipeline_refresh_duration_seconds_count, job)")
            .current(dm.VariableOption(text=DEFAULT_COLLECTOR_JOB, value=DEFAULT_COLLECTOR_JOB))
            .refresh(dm.VariableRefresh.ON_DASHBOARD_LOAD)
            .sort(dm.VariableSort.ALPHABETICAL_ASC)
        )
        .link(
            dash_b.DashboardLink("Virtuoso boards")
            .type(dm.DashboardLinkType.DASHBOARDS)
            .tags(TAGS)
            .as_dropdown(True)
            .include_vars(True)
            .keep_time(True)
        )
    )


def _finish(board: dash_b.Dashboard) -> dm.Dashboard:
    """Builds the board and numbers its panels (the SDK leaves panel ids unset, rows at 0)."""
    model = board.build()
    panel_id = 0
    for panel in model.panels or []:
        panel_id += 1
        panel.id_val = panel_id
        for nested in getattr(panel, "panels", None) or []:
            panel_id += 1
            nested.id_val = panel_id
    return model


def kpi_board() -> dm.Dashboard:
    """``virtuoso-kpi``: every KPI against its target."""
    board = _board(
        "virtuoso-kpi",
        "Virtuoso — KPI overview",
        "Every Virtuoso KPI against its target: green on target, red off it.",
    ).with_row(dash_b.Row("Objectives"))
    board = (
        board.with_panel(
            kpi(
                "Availability",
                "Share of API requests (routes under /api/) answered without a 5xx. SLO: 99.9%.",
                units.PercentUnit,
                Q(AVAILABILITY, "availability"),
                at_least(AVAILABILITY_SLO),
                w=4,
                decimals=3,
            )
        )
        .with_panel(
            kpi(
                "Error budget burn rate",
                "API 5xx ratio divided by the error budget (0.1%). 1× spends the budget "
                "exactly over the SLO window; above 1× it runs out early.",
                "suffix:×",
                Q(BURN_RATE, "burn rate"),
                below(BURN_RATE_TARGET),
                w=4,
                decimals=2,
            )
        )
        .with_panel(
            kpi(
                "API p99 latency",
                "99th percentile of API request duration (routes under /api/), all "
                "replicas. Target: below 100 ms.",
                units.Seconds,
                Q(API_P99, "p99"),
                below(API_P99_TARGET),
                w=4,
            )
        )
        .with_panel(
            kpi(
                "Mean API response time",
                "Mean API request duration (sum / count of the HTTP histogram, routes "
                "under /api/). Target: below 100 ms.",
                units.Seconds,
                Q(API_MEAN, "mean"),
                below(MEAN_RESPONSE_TARGET),
                w=4,
            )
        )
        .with_panel(
            kpi(
                "Cache hit ratio",
                "What callers got from the cache: (hit + stale) / all requests, every "
                "family. Target: at least 95%.",
                units.PercentUnit,
                Q(HIT_RATIO, "hit ratio"),
                at_least(HIT_RATIO_TARGET),
                w=4,
                decimals=1,
            )
        )
        .with_panel(
            kpi(
                "Exchange calls per minute",
                "Calls made to the exchange (breaker rejections excluded), by the "
                "collectors. The target is a shape, not a number: flat whatever the HTTP "
                "load and the number of replicas — compare with 'Exchange calls vs HTTP "
                "load' below.",
                units.RequestsPerMinute,
                Q(EXCHANGE_CALLS_PER_MINUTE, "exchange calls / min"),
                neutral(),
                w=4,
            )
        )
    )
    board = (
        board.with_row(dash_b.Row("Experience & capacity"))
        .with_panel(
            kpi(
                "WebSocket delivery p99",
                "99th percentile from publish to sent to the client, every channel. "
                "Target: below 50 ms.",
                units.Seconds,
                Q(WS_DELIVERY_P99, "p99"),
                below(WS_DELIVERY_P99_TARGET),
                w=5,
            )
        )
        .with_panel(
            kpi(
                "Exchange → fan-out p99 (market)",
                "99th percentile of the age of market updates when fanned out to the "
                "WebSocket clients: now − the exchange's event time, all replicas. Target: "
                "below 250 ms; seconds while REST polling stands in for the exchange streams.",
                units.Seconds,
                Q(MARKET_DATA_AGE_P99, "p99"),
                below(MARKET_DATA_AGE_P99_TARGET),
                w=5,
            )
        )
        .with_panel(
            kpi(
                "Desktop page load p95",
                "95th percentile of desktop page loads until the first data is shown "
                "(RUM beacons, phase first_data). Target: below 800 ms.",
                units.Seconds,
                Q(page_load_p95(DESKTOP, FIRST_DATA), "desktop p95"),
                below(DESKTOP_LOAD_P95_TARGET),
                w=4,
            )
        )
        .with_panel(
            kpi(
                "Mobile page load p95",
                "95th percentile of mobile page loads until the first data is shown "
                "(RUM beacons, phase first_data). Target: below 1.5 s.",
                units.Seconds,
                Q(page_load_p95(MOBILE, FIRST_DATA), "mobile p95"),
                below(MOBILE_LOAD_P95_TARGET),
                w=4,
            )
        )
        .with_panel(
            kpi(
                "Cache memory used",
                "Memory used over the limit per tier, worst replica (Redis without "
                "maxmemory has no limit and no value). Target: below 80%.",
                units.PercentUnit,
                Q(CACHE_MEMORY_RATIO, "{{tier}}"),
                below(CACHE_MEMORY_TARGET),
                w=6,
                decimals=1,
            )
        )
    )
    board = (
        board.with_row(dash_b.Row("Trends against targets"))
        .with_panel(
            timeseries(
                "API latency vs 100 ms target",
                "API p99 and mean request duration over time; the dashed line is the "
                "100 ms target. Exemplar dots link to the request's trace in Tempo.",
                units.Seconds,
                [Q(API_P99, "p99", exemplar=True), Q(API_MEAN, "mean")],
                thresholds=below(API_P99_TARGET),
                table=True,
            )
        )
        .with_panel(
            timeseries(
                "API p99 latency by route",
                "99th percentile of request duration per API route template. Exemplar "
                "dots link to traces.",
                units.Seconds,
                [Q(quantile(0.99, HTTP, API, by="route"), "{{route}}", exemplar=True)],
                thresholds=below(API_P99_TARGET),
                table=True,
            )
        )
        .with_panel(
            timeseries(
                "Availability vs 99.9% SLO",
                "Share of API requests answered without a 5xx, per rate window; the "
                "dashed line is the 99.9% SLO.",
                units.PercentUnit,
                [Q(AVAILABILITY, "availability")],
                thresholds=at_least(AVAILABILITY_SLO),
                min_val=None,
                max_val=1,
            )
        )
        .with_panel(
            timeseries(
                "Error budget burn rate over time",
                "API 5xx ratio over the 0.1% error budget; the dashed line is 1× "
                "(budget spent exactly over the SLO window).",
                "suffix:×",
                [Q(BURN_RATE, "burn rate")],
                thresholds=below(BURN_RATE_TARGET),
            )
        )
        .with_panel(
            timeseries(
                "Cache hit ratio vs 95% target",
                "(hit + stale) / all cache requests, every family; the dashed line is the "
                "95% target. Per family: the Cache tiers board.",
                units.PercentUnit,
                [Q(HIT_RATIO, "all families")],
                thresholds=at_least(HIT_RATIO_TARGET),
                min_val=None,
                max_val=1,
            )
        )
        .with_panel(
            timeseries(
                "Cache memory used vs 80% of limit",
                "Memory used over the limit per tier, worst replica; the dashed line is "
                "the 80% target.",
                units.PercentUnit,
                [Q(CACHE_MEMORY_RATIO, "{{tier}}")],
                thresholds=below(CACHE_MEMORY_TARGET),
                max_val=1,
            )
        )
        .with_panel(
            timeseries(
                "WebSocket delivery p99 vs 50 ms",
                "99th percentile from publish to sent, every channel; the dashed line is "
                "the 50 ms target.",
                units.Seconds,
                [Q(WS_DELIVERY_P99, "p99")],
                thresholds=below(WS_DELIVERY_P99_TARGET),
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Market data age p99 vs 250 ms",
                "99th percentile of the age of market updates at fan-out (now − the "
                "exchange's event time), all replicas; the dashed line is the 250 ms "
                "target. Seconds while REST polling stands in for the exchange streams.",
                units.Seconds,
                [Q(MARKET_DATA_AGE_P99, "p99")],
                thresholds=below(MARKET_DATA_AGE_P99_TARGET),
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Page load p95 by device vs targets",
                "95th percentile of page loads until the first data, per device. Dashed "
                "lines: 800 ms for desktop, 1.5 s for mobile.",
                units.Seconds,
                [Q(page_load_p95(FIRST_DATA, by="device"), "{{device}}")],
                thresholds=below(DESKTOP_LOAD_P95_TARGET),
                w=6,
            ).override_by_name(
                "mobile",
                [
                    dm.DynamicConfigValue(
                        id_val="thresholds", value=below(MOBILE_LOAD_P95_TARGET).build()
                    )
                ],
            )
        )
        .with_panel(
            timeseries(
                "Exchange calls vs HTTP load",
                "Exchange calls per minute (left) against HTTP requests per minute "
                "(right, dashed). The exchange line should stay flat as the load rises and "
                "replicas are added: requests are served from the cache, which one "
                "collector fills.",
                units.RequestsPerMinute,
                [
                    Q(EXCHANGE_CALLS_PER_MINUTE, "exchange calls / min"),
                    Q(HTTP_REQUESTS_PER_MINUTE, "HTTP requests / min"),
                ],
                w=6,
            ).override_by_name(
                "HTTP requests / min",
                [dm.DynamicConfigValue(id_val="custom.axisPlacement", value="right"), DASHED],
            )
        )
    )
    return _finish(board)


def cache_board() -> dm.Dashboard:
    """``virtuoso-cache``: the tiers (l1, memcached, redis) and the cache families."""
    ops = "virtuoso_cache_operations_total"
    requests = "virtuoso_cache_requests_total"
    op_latency = "virtuoso_cache_operation_duration_seconds"
    used = "virtuoso_cache_memory_used_bytes"
    limit = "virtuoso_cache_memory_limit_bytes"
    board = (
        _board(
            "virtuoso-cache",
            "Virtuoso — Cache tiers",
            "The cache tiers (l1, memcached, redis) and the cache families: lookups, hit "
            "ratios, latency, capacity, evictions and coordination.",
        )
        .with_row(dash_b.Row("Lookups"))
        .with_panel(
            timeseries(
                "Operations by tier and result",
                "Lookups per second in each tier by result (hit, miss, stale, error), "
                "all replicas.",
                units.OpsPerSecond,
                [Q(total(rate(ops), by="tier, result"), "{{tier}} {{result}}")],
            )
        )
        .with_panel(
            timeseries(
                "Requests by outcome",
                "What callers got per second: hit (fresh from any tier), stale (served "
                "stale), miss (computed), error (nothing to serve).",
                units.OpsPerSecond,
                [Q(total(rate(requests), by="outcome"), "{{outcome}}")],
                stack=True,
            )
        )
        .with_panel(
            timeseries(
                "Hit ratio per tier",
                "(hit + stale) / all lookups in each tier — the KPI's definition applied "
                "to one tier.",
                units.PercentUnit,
                [
                    Q(
                        f"{total(rate(ops, TIER_SERVED), by='tier')}"
                        f" / {total(rate(ops), by='tier')}",
                        "{{tier}}",
                    )
                ],
                min_val=None,
                max_val=1,
            )
        )
        .with_panel(
            timeseries(
                "Hit ratio per family",
                "(hit + stale) / all requests per cache family, as callers see it; the "
                "dashed line is the 95% KPI target.",
                units.PercentUnit,
                [
                    Q(
                        f"{total(rate(requests, SERVED), by='family')}"
                        f" / {total(rate(requests), by='family')}",
                        "{{family}}",
                    )
                ],
                thresholds=at_least(HIT_RATIO_TARGET),
                min_val=None,
                max_val=1,
            )
        )
        .with_row(dash_b.Row("Latency"))
        .with_panel(
            timeseries(
                "Get latency per tier",
                "p50 and p99 of one get in each tier, all replicas.",
                units.Seconds,
                [
                    Q(quantile(0.5, op_latency, 'operation="get"', by="tier"), "{{tier}} p50"),
                    Q(quantile(0.99, op_latency, 'operation="get"', by="tier"), "{{tier}} p99"),
                ],
                table=True,
            )
        )
        .with_panel(
            timeseries(
                "Set latency per tier",
                "p50 and p99 of one set in each tier, all replicas.",
                units.Seconds,
                [
                    Q(quantile(0.5, op_latency, 'operation="set"', by="tier"), "{{tier}} p50"),
                    Q(quantile(0.99, op_latency, 'operation="set"', by="tier"), "{{tier}} p99"),
                ],
                table=True,
            )
        )
        .with_row(dash_b.Row("Capacity"))
        .with_panel(
            timeseries(
                "Items per tier",
                "Items held: l1 summed over replicas; memcached and redis are shared "
                "(every replica reports the same count).",
                units.Short,
                [Q(per_tier(lambda tier: sel("virtuoso_cache_items", tier)), "{{tier}}")],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Memory used vs limit per tier",
                "Bytes used (solid) and the limit (dashed) per tier: l1 summed over "
                "replicas, memcached and redis shared. Redis without maxmemory has no "
                "limit line.",
                units.BytesIEC,
                [
                    Q(per_tier(lambda tier: sel(used, tier)), "{{tier}} used"),
                    Q(per_tier(lambda tier: sel(limit, tier)), "{{tier}} limit"),
                ],
                w=8,
            ).override_by_regexp(".* limit$", [DASHED])
        )
        .with_panel(
            timeseries(
                "Memory used (% of limit)",
                "Memory used over the limit per tier, worst replica; the dashed line is "
                "the 80% target.",
                units.PercentUnit,
                [Q(CACHE_MEMORY_RATIO, "{{tier}}")],
                thresholds=below(CACHE_MEMORY_TARGET),
                max_val=1,
                w=8,
            )
        )
        .with_row(dash_b.Row("Churn & coordination"))
        .with_panel(
            timeseries(
                "Evictions per tier",
                "Evictions per second: l1 LRU (summed over replicas), memcached "
                "evictions and redis evicted_keys (shared).",
                units.OpsPerSecond,
                [
                    Q(
                        per_tier(lambda tier: rate("virtuoso_cache_evictions_total", tier)),
                        "{{tier}}",
                    )
                ],
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Single-flight waits by family",
                "Requests per second that waited for another request's computation "
                "instead of computing themselves.",
                units.OpsPerSecond,
                [
                    Q(
                        total(rate("virtuoso_cache_singleflight_waits_total"), by="family"),
                        "{{family}}",
                    )
                ],
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Invalidations by family",
                "Invalidations per second per cache family.",
                units.OpsPerSecond,
                [
                    Q(
                        total(rate("virtuoso_cache_invalidations_total"), by="family"),
                        "{{family}}",
                    )
                ],
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Computations by family",
                "Values computed per second per cache family (the misses that ran the "
                "computation).",
                units.OpsPerSecond,
                [
                    Q(
                        total(rate("virtuoso_cache_computations_total"), by="family"),
                        "{{family}}",
                    )
                ],
                w=6,
            )
        )
    )
    return _finish(board)


BREAKER_STATES = [
    dm.ValueMap(
        options={
            "0": dm.ValueMappingResult(text="closed", color="green", index=0),
            "1": dm.ValueMappingResult(text="open", color="red", index=1),
            "2": dm.ValueMappingResult(text="half-open", color="yellow", index=2),
        }
    )
]


def backends_board() -> dm.Dashboard:
    """``virtuoso-backends``: the exchange, circuit breakers, rate limits, the pipeline and
    the process."""
    exchange = "virtuoso_exchange_requests_total"
    exchange_latency = "virtuoso_exchange_request_duration_seconds"
    ratelimit_wait = "virtuoso_exchange_ratelimit_wait_seconds"
    refresh = "virtuoso_pipeline_refresh_duration_seconds"
    refreshes = rate("virtuoso_pipeline_refreshes_total", job=COLLECTOR_JOB)
    views_built = rate("virtuoso_views_built_total", job=COLLECTOR_JOB)
    board = (
        _board(
            "virtuoso-backends",
            "Virtuoso — Backends & resilience",
            "Exchange calls, circuit breakers, rate limits, the market pipeline (the "
            "collectors) and the processes of the replicas and the collectors.",
        )
        .with_row(dash_b.Row("Exchange"))
        .with_panel(
            timeseries(
                "Exchange calls by endpoint and outcome",
                "Calls per second to the exchange by endpoint (start, tickers, ohlcv, "
                "order_book) and outcome (ok, error, timeout, rate_limited, rejected = "
                "breaker open, no call made), all collectors.",
                units.RequestsPerSecond,
                [
                    Q(
                        total(rate(exchange, job=COLLECTOR_JOB), by="endpoint, outcome"),
                        "{{endpoint}} {{outcome}}",
                    )
                ],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Exchange latency p50 / p99",
                "p50 and p99 of the exchange's own time per endpoint (the requests, from "
                "send to answer), all collectors. The wait in our rate limiter before a "
                "request is not in it: see the panel beside.",
                units.Seconds,
                [
                    Q(
                        quantile(0.5, exchange_latency, by="endpoint", job=COLLECTOR_JOB),
                        "{{endpoint}} p50",
                    ),
                    Q(
                        quantile(0.99, exchange_latency, by="endpoint", job=COLLECTOR_JOB),
                        "{{endpoint}} p99",
                    ),
                ],
                w=8,
                table=True,
            )
        )
        .with_panel(
            timeseries(
                "Rate-limiter wait p50 / p99",
                "p50 and p99 per endpoint of the time a call waited in the client-side "
                "rate limiter (ccxt's throttle) before its request was sent, all collectors: "
                "our own queue, not the exchange. High here with a low exchange latency "
                "means too many calls for the exchange's rate limit (symbols × timeframes "
                "per refresh), not a slow exchange.",
                units.Seconds,
                [
                    Q(
                        quantile(0.5, ratelimit_wait, by="endpoint", job=COLLECTOR_JOB),
                        "{{endpoint}} p50",
                    ),
                    Q(
                        quantile(0.99, ratelimit_wait, by="endpoint", job=COLLECTOR_JOB),
                        "{{endpoint}} p99",
                    ),
                ],
                w=8,
                table=True,
            )
        )
        .with_row(dash_b.Row("Resilience"))
        .with_panel(
            kpi(
                "Breakers not closed",
                "Circuit breakers open or half-open right now, over every replica.",
                units.Short,
                Q(f"count({sel('virtuoso_breaker_state')} > 0) or vector(0)", "not closed"),
                below(1),
                w=4,
                h=8,
            )
        )
        .with_panel(
            _targets(
                timeline_b.Panel()
                .title("Breaker state")
                .description(
                    "State of every circuit breaker on every replica: closed (0), open (1), "
                    "half-open (2)."
                )
                .datasource(datasource())
                .unit(units.Short)
                .span(20)
                .height(8)
                .mappings(BREAKER_STATES)
                .thresholds(neutral())
                .color_scheme(dash_b.FieldColor().mode(dm.FieldColorModeId.THRESHOLDS))
                .show_value(common.VisibilityMode.NEVER)
                .merge_values(True)
                .row_height(0.8)
                .legend(legend()),
                [Q(sel("virtuoso_breaker_state"), "{{breaker}} · {{instance}}")],
            )
        )
        .with_panel(
            timeseries(
                "Breaker transitions",
                "Transitions per rate window by breaker and the state entered (closed, "
                "open, half_open), all replicas.",
                units.Short,
                [
                    Q(
                        total(increase("virtuoso_breaker_transitions_total"), by="breaker, state"),
                        "{{breaker}} → {{state}}",
                    )
                ],
                bars=True,
            )
        )
        .with_panel(
            timeseries(
                "Rate-limit rejections",
                "Requests refused with 429 (and WebSocket connections refused) per second, "
                "by limit family (data, session, admin, rum, ws).",
                units.RequestsPerSecond,
                [
                    Q(
                        total(rate("virtuoso_rate_limit_rejections_total"), by="family"),
                        "{{family}}",
                    )
                ],
                stack=True,
            )
        )
        .with_row(dash_b.Row("Pipeline"))
        .with_panel(
            timeseries(
                "Pipeline refresh duration",
                "p50 and p99 of one market refresh (fetch + analysis + views) on the "
                "collectors against the configured refresh interval (dashed): a refresh "
                "must fit in it.",
                units.Seconds,
                [
                    Q(quantile(0.5, refresh, job=COLLECTOR_JOB), "p50"),
                    Q(quantile(0.99, refresh, job=COLLECTOR_JOB), "p99"),
                    Q(f"max({sel('virtuoso_refresh_interval_seconds')})", "refresh interval"),
                ],
                w=6,
            ).override_by_name("refresh interval", [DASHED, color("red")])
        )
        .with_panel(
            timeseries(
                "Pipeline refreshes by outcome",
                "Refreshes per minute by outcome (ok, error, skipped), all collectors.",
                units.OpsPerMinute,
                [
                    Q(
                        f"{total(refreshes, by='outcome')} * 60",
                        "{{outcome}}",
                    )
                ],
                stack=True,
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Snapshot age vs 3× refresh interval",
                "Age of the newest snapshot each replica can serve; past 3 refresh "
                "intervals (dashed) the data is stale.",
                units.Seconds,
                [
                    Q(sel("virtuoso_snapshot_age_seconds"), "{{instance}}"),
                    Q(
                        f"3 * max({sel('virtuoso_refresh_interval_seconds')})",
                        "3 × refresh interval",
                    ),
                ],
                w=6,
            ).override_by_name("3 × refresh interval", [DASHED, color("red")])
        )
        .with_panel(
            timeseries(
                "Views built",
                "Views built from snapshots per minute, all collectors.",
                units.OpsPerMinute,
                [Q(f"{total(views_built)} * 60", "views / min")],
                w=6,
            )
        )
        .with_panel(
            timeseries(
                "Collector leadership",
                "Which collector leads (1: refreshes and calls the exchange) and which "
                "stand by (0). Their sum should be 1 at all times: 0 means nothing "
                "refreshes (the alert VirtuosoNoCollectorLeading). Empty when the "
                "collector runs inside virtuoso serve (embedded: no election).",
                units.Short,
                [
                    Q(sel("virtuoso_collector_leading", job=COLLECTOR_JOB), "{{instance}}"),
                    Q(total(sel("virtuoso_collector_leading", job=COLLECTOR_JOB)), "leaders"),
                ],
                w=24,
                h=6,
            )
        )
        .with_row(dash_b.Row("Process"))
        .with_panel(
            timeseries(
                "Process CPU",
                "CPU time per second of each replica's and collector's process (100% = one core).",
                units.PercentUnit,
                [Q(rate("process_cpu_seconds_total", job=EVERY_PROCESS), "{{job}} {{instance}}")],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Process resident memory",
                "Resident set size of each replica's and collector's process.",
                units.BytesIEC,
                [
                    Q(
                        sel("process_resident_memory_bytes", job=EVERY_PROCESS),
                        "{{job}} {{instance}}",
                    )
                ],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Open file descriptors",
                "File descriptors (sockets included) each replica's and collector's process holds.",
                units.Short,
                [Q(sel("process_open_fds", job=EVERY_PROCESS), "{{job}} {{instance}}")],
                w=8,
            )
        )
    )
    return _finish(board)


def realtime_board() -> dm.Dashboard:
    """``virtuoso-realtime``: WebSocket delivery, alerts and browser page loads."""
    messages = "virtuoso_ws_messages_total"
    delivery = "virtuoso_ws_delivery_latency_seconds"
    page_load = "virtuoso_page_load_seconds"
    dropped, coalesced = 'result="dropped"', 'result="coalesced"'
    board = (
        _board(
            "virtuoso-realtime",
            "Virtuoso — Realtime & alerts",
            "WebSocket connections and delivery, alerts fired and browser page loads (RUM).",
        )
        .with_row(dash_b.Row("WebSocket"))
        .with_panel(
            timeseries(
                "WebSocket connections",
                "Open WebSocket connections: the total and each replica.",
                units.Short,
                [
                    Q(total(sel("virtuoso_ws_connections")), "total"),
                    Q(total(sel("virtuoso_ws_connections"), by="instance"), "{{instance}}"),
                ],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Messages by channel and result",
                "Messages per second to clients by channel and result: sent, coalesced "
                "(replaced by a newer one before it left) or dropped (slow client).",
                units.MessagesPerSecond,
                [Q(total(rate(messages), by="channel, result"), "{{channel}} {{result}}")],
                w=16,
            )
        )
        .with_panel(
            timeseries(
                "Dropped and coalesced share by channel",
                "Share of the messages per channel that were dropped or coalesced instead of sent.",
                units.PercentUnit,
                [
                    Q(
                        f"{total(rate(messages, dropped), by='channel')}"
                        f" / {total(rate(messages), by='channel')}",
                        "{{channel}} dropped",
                    ),
                    Q(
                        f"{total(rate(messages, coalesced), by='channel')}"
                        f" / {total(rate(messages), by='channel')}",
                        "{{channel}} coalesced",
                    ),
                ],
                max_val=1,
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Disconnects by reason",
                "Connections closed per minute by reason (normal, slow_client, "
                "heartbeat_timeout, policy, server_full, shutdown, error).",
                units.CountsPerMinute,
                [
                    Q(
                        f"{total(rate('virtuoso_ws_disconnects_total'), by='reason')} * 60",
                        "{{reason}}",
                    )
                ],
                stack=True,
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Delivery latency p50 / p99 by channel",
                "Publish → sent to the client, per channel; the dashed line is the 50 ms "
                "p99 target.",
                units.Seconds,
                [
                    Q(quantile(0.5, delivery, by="channel"), "{{channel}} p50"),
                    Q(quantile(0.99, delivery, by="channel"), "{{channel}} p99"),
                ],
                thresholds=below(WS_DELIVERY_P99_TARGET),
                table=True,
                w=8,
            )
        )
        .with_row(dash_b.Row("Alerts"))
        .with_panel(
            timeseries(
                "Alerts triggered by level",
                "Alerts fired per rate window by level (info, warning, critical), by the "
                "collectors (where the alert engine runs).",
                units.Short,
                [
                    Q(
                        total(
                            increase("virtuoso_alerts_triggered_total", job=COLLECTOR_JOB),
                            by="level",
                        ),
                        "{{level}}",
                    )
                ],
                bars=True,
                stack=True,
                w=24,
                h=7,
            )
            .override_by_name("critical", [color("red")])
            .override_by_name("warning", [color("orange")])
            .override_by_name("info", [color("blue")])
        )
        .with_row(dash_b.Row("Page loads (RUM)"))
        .with_panel(
            timeseries(
                "Page loads by device and phase",
                "Browser beacons per minute by device (desktop, mobile) and phase (ttfb, "
                "dom_ready, first_data).",
                units.CountsPerMinute,
                [
                    Q(
                        f"{total(rate(page_load + '_count'), by='device, phase')} * 60",
                        "{{device}} {{phase}}",
                    )
                ],
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Desktop page load p95 by phase",
                "95th percentile of desktop page loads per phase; the dashed line is the "
                "800 ms target (for first_data).",
                units.Seconds,
                [Q(page_load_p95(DESKTOP, by="phase"), "{{phase}}")],
                thresholds=below(DESKTOP_LOAD_P95_TARGET),
                w=8,
            )
        )
        .with_panel(
            timeseries(
                "Mobile page load p95 by phase",
                "95th percentile of mobile page loads per phase; the dashed line is the "
                "1.5 s target (for first_data).",
                units.Seconds,
                [Q(page_load_p95(MOBILE, by="phase"), "{{phase}}")],
                thresholds=below(MOBILE_LOAD_P95_TARGET),
                w=8,
            )
        )
    )
    return _finish(board)


BOARDS: tuple[Callable[[], dm.Dashboard], ...] = (
    kpi_board,
    cache_board,
    backends_board,
    realtime_board,
)
