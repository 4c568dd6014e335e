"""The report's part for the two roles (bench/roles.py): KPI rows and a section that
puts the embedded single process and the split (external server + collector) side by
side."""

from __future__ import annotations

from typing import Any

Row = tuple[str, str, str, bool | None]  # KPI, target, measured, met (as bench/report.py)

SETUPS = (("embedded", "embedded (one process)"), ("external", "external server + collector"))


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _p99(summary: dict[str, Any] | None) -> float | None:
    return None if not summary else summary.get("p99")


def _worst_window(polling: dict[str, Any]) -> float | None:
    values = [w["latency_ms"]["p99"] for w in polling.get("refresh_windows", [])]
    values = [v for v in values if v is not None]
    return max(values) if values else None


def _throughput_ratio(roles: dict[str, Any], setup: str) -> float | None:
    bare = roles.get("bare", {}).get("throughput", {}).get("requests_per_s")
    ours = roles.get(setup, {}).get("throughput", {}).get("requests_per_s")
    return ours / bare if ours and bare else None


def kpis(results: dict[str, Any]) -> list[Row]:
    roles = results.get("roles")
    if not roles:
        return []
    rows: list[Row] = []
    bare_p99 = _p99(roles.get("bare", {}).get("polling", {}).get("http", {}).get("latency_ms"))
    for setup, label in SETUPS:
        measured = roles.get(setup)
        if not measured:
            continue
        polling = measured["polling"]
        p99 = _p99(polling["http"]["latency_ms"])
        around = _p99(polling["around_refreshes"])
        ratio = p99 / bare_p99 if p99 is not None and bare_p99 else None
        met = (
            None
            if p99 is None or ratio is None
            else (p99 < 10 and (around is None or around < 10) and ratio <= 3)
        )
        rows.append(
            (
                f"API p99, 200 polling clients (800 req/s), {label}, refresh every "
                f"{roles['refresh_seconds']:g} s",
                "< 10 ms, refreshes included; ≤ 3× bare route",
                f"{_ms(p99)} ms (around {polling['refreshes']} refreshes {_ms(around)} ms); "
                f"bare {_ms(bare_p99)} ms, ×{ratio:.1f}"
                if ratio
                else f"{_ms(p99)} ms",
                met,
            )
        )
        fraction = _throughput_ratio(roles, setup)
        if fraction is not None:
            rows.append(
                (
                    f"throughput vs bare Quart route, {label}",
                    "≥ 80%",
                    f"{100 * fraction:.2f}%",
                    fraction >= 0.8,
                )
            )
    external = roles.get("external")
    if external:
        idle = external["rss_idle"]
        rows.append(
            (
                "serving process RSS idle, external server",
                "< 80 MB",
                f"{idle['server_mb']:.0f} MB (tree {idle['server_tree_mb']:.0f} MB; "
                f"collector {idle['collector_mb']:.0f} MB)",
                idle["server_tree_mb"] < 80,
            )
        )
        ws = external["ws"]
        peak = ws["rss_peak"]
        rows.append(
            (
                f"serving process RSS, {ws['connected']} WS clients, external server",
                "< 150 MB",
                f"{peak['server_mb']:.0f} MB (tree {peak['server_tree_mb']:.0f}"
                f" MB; collector {peak['collector_mb']:.0f} MB)",
                peak["server_tree_mb"] < 150 and ws["connected"] >= 1000,
            )
        )
    replicas = roles.get("replicas")
    if replicas:
        rows.append(replica_kpi(replicas))
    return rows


def replica_kpi(replicas: list[dict[str, Any]]) -> Row:
    """Flat: the exchange calls per minute with 2 and 4 replicas stay within 25% of one
    replica's (a refresh is 50-60 calls spread over several seconds, so a window of a few
    refreshes moves by one refresh's calls at its edges)."""
    base = replicas[0]["exchange_calls_per_minute"]
    flat = bool(base) and all(r["exchange_calls_per_minute"] <= base * 1.25 for r in replicas)
    measured = ", ".join(
        f"{r['replicas']}: {r['exchange_calls_per_minute']:g}/min ({r['ticker_calls']} ticker)"
        for r in replicas
    )
    return ("exchange calls vs serving replicas (one collector)", "flat", measured, flat)


def section(results: dict[str, Any]) -> list[str]:
    roles = results.get("roles")
    if not roles:
        return []
    before, after = roles["window_s"]
    lines = [
        "## The two roles side by side",
        "",
        f"The embedded single process, then `virtuoso serve` with VIRTUOSO_COLLECTOR=external "
        f"and one `virtuoso collect`, one after the other on a fresh Memcached and Redis, with "
        f"a refresh every {roles['refresh_seconds']:g} s (the bench's own service stopped). "
        f"A refresh's window runs from {before:g} s before its first exchange request to "
        f"{after:g} s after its last (seen from the fake exchange's request counts). "
        f"Load average at the end: {roles.get('machine_load', '—')}.",
        "",
        "| | " + " | ".join(label for _, label in SETUPS) + " | bare route |",
        "|---|---|---|---|",
    ]
    bare = roles.get("bare", {})
    for name, value in _comparison_rows(roles):
        lines.append(
            f"| {name} | "
            + " | ".join(value(roles.get(s)) for s, _ in SETUPS)
            + f" | {value(bare, bare=True) if bare else '—'} |"
        )
    for failure in roles.get("failed", []):
        lines.append(f"\nFailed: {failure}")
    replicas = roles.get("replicas")
    if replicas:
        lines += [
            "",
            "Serving replicas behind one collector (the standard workload, "
            "400 req/s split evenly; calls counted by the fake exchange):",
            "",
            "| replicas | s | requests | statuses | exchange calls | per minute | "
            "ticker calls | collector refreshes | calls per refresh |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in replicas:
            lines.append(
                f"| {r['replicas']} | {r['seconds']:g} | {r['requests']} | {r['statuses']} | "
                f"{r['exchange_calls']} | {r['exchange_calls_per_minute']:g} | "
                f"{r['ticker_calls']} | {r['refreshes']:g} | {r['calls_per_refresh']} |"
            )
    return lines


def _get(data: dict[str, Any] | None, *path: str) -> Any:
    for key in path:
        if not isinstance(data, dict):
            return None
        data = data.get(key)
    return data


def _comparison_rows(roles: dict[str, Any]) -> list[tuple[str, Any]]:
    def latency(*path: str, field: str = "p99"):
        def value(data: dict[str, Any] | None, bare: bool = False) -> str:
            if bare and path[1] != "http":
                return "—"
            return _ms(_get(data, *path, field))

        return value

    def figure(*path: str, unit: str = ""):
        def value(data: dict[str, Any] | None, bare: bool = False) -> str:
            found = _get(data, *path)
            return "—" if found is None else f"{found:g}{unit}"

        return value

    def worst(data: dict[str, Any] | None, bare: bool = False) -> str:
        return "—" if bare or not data else _ms(_worst_window(data["polling"]))

    def ratio(data: dict[str, Any] | None, bare: bool = False) -> str:
        if bare or not data:
            return "—"
        for setup, _ in SETUPS:
            if roles.get(setup) is data:
                fraction = _throughput_ratio(roles, setup)
                return "—" if fraction is None else f"{100 * fraction:.1f}%"
        return "—"

    return [
        ("polling p50 ms", latency("polling", "http", "latency_ms", field="p50")),
        ("polling p99 ms", latency("polling", "http", "latency_ms")),
        ("polling max ms", latency("polling", "http", "latency_ms", field="max")),
        ("p99 ms around refreshes", latency("polling", "around_refreshes")),
        ("p99 ms between refreshes", latency("polling", "between_refreshes")),
        ("worst refresh window p99 ms", worst),
        ("refreshes in the window", figure("polling", "refreshes")),
        ("dropped (200 in flight)", figure("polling", "http", "dropped")),
        ("server CPU % (polling)", figure("polling", "server_cpu_percent")),
        ("collector CPU % (polling)", figure("polling", "collector_cpu_percent")),
        ("throughput req/s", figure("throughput", "requests_per_s")),
        ("throughput vs bare", ratio),
        ("RSS idle: server MB", figure("rss_idle", "server_mb")),
        ("RSS idle: server tree MB", figure("rss_idle", "server_tree_mb")),
        ("RSS idle: collector MB", figure("rss_idle", "collector_mb")),
        ("WS clients connected", figure("ws", "connected")),
        ("RSS peak with them: server MB", figure("ws", "rss_peak", "server_mb")),
        ("RSS peak: server tree MB", figure("ws", "rss_peak", "server_tree_mb")),
        ("RSS peak: collector MB", figure("ws", "rss_peak", "collector_mb")),
        ("WS p99 ms (not this work's target)", latency("ws", "latency_ms")),
    ]
