"""The benchmark's report: the KPI table (met / not met, with the figure), a section
per scenario, results.json and PNG plots (matplotlib)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from bench import exchange_latency_report, roles_report

Row = tuple[str, str, str, bool | None]  # KPI, target, measured, met

SCALE_HEADER = "| clients | req/s | p50 ms | p99 ms | max ms | ticker calls/min | server CPU % |"
WS_HEADER = (
    "| WS clients (+1 stalled) | reach | p50 ms | p99 ms | stalled closed with "
    "| RSS peak MB | KB / connection |"
)
FANOUT_HEADER = (
    "| path | clients (+1 stalled) | reach | p50 ms | p99 ms | first client p99 ms "
    "| spread p99 ms | server p99 ms | server µs per client and frame | stalled closed with |"
)
OUTAGE_HEADER = "| outage | answered | 5xx | connection errors | stale while down | recovery s |"
PAGES_HEADER = "| page | load | TTFB ms | DOM ready ms | first data ms |"
SIDE_HEADER = "| server | req/s | p50 ms | p99 ms | hit ratio | ours ÷ theirs |"
ABLATION_HEADER = (
    "| off | req/s | p99 ms | hit ratio | herd ticker calls | mobile bytes | server CPU % |"
)


def kpis(results: dict[str, Any]) -> list[Row]:
    rows: list[Row] = []
    steady = results.get("steady")
    if steady:
        ratio = steady["hit_ratio"]["served"]
        rows.append(("cache hit ratio, standard load", "≥ 99.5% (audit: > 95%)",
                     _pct(ratio), ratio is not None and ratio >= 0.995))  # fmt: skip
    scale = results.get("scale_http")
    if scale:
        levels = [row["concurrency"] for row in scale["closed_loop"]]
        calls, intervals = scale["ticker_calls"], scale["refresh_intervals"]
        rows.append(("exchange calls vs clients", "flat: 1 per refresh interval",
                     f"{calls} in {intervals:g} intervals at {levels[0]}…{levels[-1]} clients",
                     calls <= math.ceil(intervals) + 1))  # fmt: skip
        p99 = scale["polling_200"]["http"]["latency_ms"]["p99"]
        rows.append(("cached API p99, 200 clients polling (800 req/s)",
                     "< 10 ms (audit: < 100 ms avg)", f"{_ms(p99)} ms",
                     p99 is not None and p99 < 10))  # fmt: skip
        at_200 = next((r for r in scale["closed_loop"] if r["concurrency"] == 200), None)
        if at_200:
            p99 = at_200["http"]["latency_ms"]["p99"]
            mean = at_200["http"]["latency_ms"]["mean"]
            rows.append(("cached API p99, 200 back-to-back clients (saturation)",
                         "< 10 ms", f"{_ms(p99)} ms (mean {_ms(mean)} ms)",
                         p99 is not None and p99 < 10))  # fmt: skip
    herd = results.get("herd")
    if herd:
        # 0 calls: the herd joined a refresh already under way — still one computation
        one = herd["refreshes"] == 1 and herd["ticker_calls"] <= 1
        measured = f"{herd['refreshes']:g} refresh, {herd['ticker_calls']} ticker call(s)"
        rows.append((f"thundering herd ({herd['clients']} cold requests)",
                     "1 refresh, ≤ 1 exchange ticker call", measured, one))  # fmt: skip
    side = results.get("side_by_side")
    if side:
        fraction = side["ours"]["requests_per_s"] / side["ceiling"]["requests_per_s"]
        rows.append(("throughput vs bare Quart route", "≥ 80%", _pct(fraction), fraction >= 0.8))
    pages = results.get("pages")
    if pages:
        for device, target in (("desktop", 300), ("mobile", 300)):
            ready = pages[device]["cold"]["first_data"]["p50"]
            rows.append((f"{device} page ready (cold, median)", f"< {target} ms (audit: "
                         f"{'< 800 ms' if device == 'desktop' else '< 1.5 s'})",
                         f"{_ms(ready)} ms", ready is not None and ready < target))  # fmt: skip
        size = pages["mobile"]["data_payload_bytes"]
        rows.append(("mobile payload", "≤ 50 KB", f"{size / 1024:.1f} KB", size <= 50 * 1024))
    fanout = _fanout_path(results.get("ws_fanout"), "direct")
    if fanout:
        rows.append(_ws_kpi(f"WebSocket p99, {fanout['connected']} clients + 1 stalled "
                            "(serving process's fan-out, via Redis)",
                            fanout["latency_ms"]["p99"], fanout["reach"]))  # fmt: skip
    ws = _ws_at(results.get("scale_ws"), 1000)
    if ws:
        rows.append(_ws_kpi(f"WebSocket p99, {ws['clients']} clients + 1 stalled "
                            "(the whole service as `make bench` starts it)",
                            ws["ws"]["latency_ms"]["p99"], ws["ws"]["reach"]))  # fmt: skip
        rows.append((f"RSS at {ws['clients']} WS clients", "< 150 MB",
                     f"{ws['rss_peak_mb']:.0f} MB", ws["rss_peak_mb"] < 150))  # fmt: skip
    for outage in results.get("outages", []):
        ok = outage["answered_ratio"] == 1 and outage["http_5xx"] == 0
        measured = f"{_pct(outage['answered_ratio'])}, {outage['http_5xx']} 5xx"
        rows.append(
            (f"availability, {outage['what']} outage", "100% answered, 0 5xx", measured, ok)
        )
    return rows


def _ws_kpi(name: str, p99: float | None, reach: float | None) -> Row:
    met = p99 is not None and p99 < 25 and (reach or 0) >= 0.999
    return (name, "< 25 ms, reach 100%", f"{_ms(p99)} ms, reach {_pct(reach)}", met)


def _fanout_path(rows: list[dict] | None, path: str) -> dict | None:
    """The fan-out comparison's row of ``path``, if it ran."""
    return next((row for row in rows or [] if row["path"] == path), None)


def _ws_at(rows: list[dict] | None, clients: int) -> dict | None:
    """The row at ``clients``, else the largest level below it (quick mode)."""
    if not rows:
        return None
    below = [row for row in rows if row["clients"] <= clients]
    return max(below, key=lambda row: row["clients"]) if below else None


def _fanout_section(rows: list[dict]) -> list[str]:
    """The fan-out comparison: the serving process alone, direct writes vs queued."""
    out = [
        "WebSocket fan-out path alone (`python -m bench.ws_fanout`): the realtime endpoint "
        "in its own process (no refresh), 10 market updates a second published through "
        "Redis as the collector publishes them, read by raw-socket clients in two "
        "processes. *first client*: per message, the latency to the first client that "
        "got it; *spread*: from the first to the last client; *server p99*: publish → "
        "written to the socket, the server's own count; *µs per client and frame*: "
        "the server's CPU over the publishing window ÷ the update frames it sent. "
        "`direct`: the service; `direct-gc-default`: the same with CPython's collector "
        "thresholds; `queued`: the path before (a queue and sender task per client).",
        "",
        FANOUT_HEADER,
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lat, first, spread = row["latency_ms"], row["first_client_ms"], row["spread_ms"]
        server = (row.get("server_latency_s") or {}).get("p99")
        out.append(
            f"| {row['path']} | {row['connected']} | {_pct(row['reach'])} | {_ms(lat['p50'])} "
            f"| {_ms(lat['p99'])} | {_ms(first['p99'])} | {_ms(spread['p99'])} "
            f"| {_ms(server * 1000 if server is not None else None)} "
            f"| {row['server_us_per_frame']} | {row['stalled_close_codes'] or 'open'} |"
        )
    return [*out, ""]


def _recovery(row: dict) -> str:
    if row["recovery_seconds"] is not None:
        return f"{row['recovery_seconds']:g}"
    watched = row["timeline"][-1]["t"] - row["marks"]["up"] if row["timeline"] else 0
    return f"> {watched:.0f} (not within the watch)"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def write(results: dict[str, Any], out: Path) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    plots = _plots(results, out)
    report = out / "report.md"
    report.write_text(markdown(results, plots))
    return report


def markdown(results: dict[str, Any], plots: list[str]) -> str:
    lines = [f"# Virtuoso benchmark — {results['date']} ({results['profile']})", ""]
    machine = results["machine"]
    lines += [
        f"Machine: {machine['cpu']}, {machine['cores']} cores, {machine['memory_gb']} GB; "
        f"{results['versions']}. Everything on loopback; the load generator shares the cores "
        "with the servers (its CPU is reported with each figure).",
        "",
        "## KPIs",
        "",
        "| KPI | target | measured | |",
        "|---|---|---|---|",
    ]
    rows = kpis(results) + exchange_latency_report.kpis(results) + roles_report.kpis(results)
    for kpi, target, measured, met in rows:
        verdict = "met" if met else ("**not met**" if met is False else "—")
        lines.append(f"| {kpi} | {target} | {measured} | {verdict} |")
    lines += ["", *_sections(results), *exchange_latency_report.section(results)]
    lines += [*roles_report.section(results), ""]
    lines += [f"![{name}]({name})" for name in plots]
    return "\n".join(lines) + "\n"


def _sections(results: dict[str, Any]) -> list[str]:
    out: list[str] = []
    if steady := results.get("steady"):
        http, ws = steady["http"], steady["ws"]
        lat = http["latency_ms"]
        out += [
            "## 1. Steady state",
            "",
            f"Standard workload, open loop at {http['target_rps']:g} req/s for "
            f"{steady['seconds']:g} s (Zipf symbols, half the polls with If-None-Match) plus "
            f"{ws['clients']} WebSocket subscribers.",
            "",
            f"- throughput {http['throughput_rps']:g} req/s; latency p50 {_ms(lat['p50'])} ms, "
            f"p90 {_ms(lat['p90'])}, p99 {_ms(lat['p99'])}, max {_ms(lat['max'])} ms; "
            f"statuses {http['status_counts']}; dropped {http['dropped']}",
            f"- hit ratio: served {_pct(steady['hit_ratio']['served'])}; per tier "
            + ", ".join(
                f"{t} {_pct(steady['hit_ratio'][t])}" for t in ("l1", "memcached", "redis")
            ),
            f"- exchange calls {steady['exchange_calls_per_minute']:g}/min "
            f"(tickers {steady['ticker_calls_per_minute']:g}/min)",
            f"- server CPU {steady['server_cpu_percent']:g}% of one core, RSS "
            f"{steady['server_rss_mb']:g} MB; load generator CPU "
            f"{http['loadgen_cpu_share']} cores; exchange simulator CPU "
            f"{steady.get('exchange_simulator_cpu_percent', '—')}% of one core",
            f"- WebSocket: reach {_pct(ws['reach'])}, delivery p99 "
            f"{_ms(ws['latency_ms']['p99'])} ms",
            "",
        ]
    if herd := results.get("herd"):
        out += [
            "## 2. Thundering herd",
            "",
            f"Every view invalidated, then {herd['clients']} concurrent cold requests: "
            f"{herd['ticker_calls']} exchange ticker call(s), {herd['refreshes']:g} refresh(es), "
            f"statuses {herd['statuses']}, first byte after {_ms(herd['first_byte_ms'])} ms, "
            f"p99 {_ms(herd['http']['latency_ms']['p99'])} ms.",
            "",
        ]
    if scale := results.get("scale_http"):
        out += ["## 3. Scale", "",
                "Closed loop: each client sends its next request as soon as the last one is "
                "answered, so latency is concurrency ÷ throughput once the 2 cores are busy "
                "(Little's law). The polling row is an open loop: 200 clients at 800 req/s, "
                "latency measured from each request's scheduled time.", "",
                SCALE_HEADER, "|---|---|---|---|---|---|---|"]  # fmt: skip
        polled = scale["polling_200"]
        for row in [*scale["closed_loop"], {**polled, "concurrency": "200 polling"}]:
            lat = row["http"]["latency_ms"]
            out.append(
                f"| {row['concurrency']} | {row['http']['throughput_rps']:g} | {_ms(lat['p50'])} "
                f"| {_ms(lat['p99'])} | {_ms(lat['max'])} | {row['ticker_calls_per_minute']:g} "
                f"| {row['server_cpu_percent']:g} |"
            )
        intervals = f"{scale['seconds']:g} s ({scale['refresh_intervals']:g} refresh intervals)"
        calls = f"Exchange ticker calls over the whole scale run: {scale['ticker_calls']} in"
        out += ["", f"{calls} {intervals}.", ""]
    if ws_rows := results.get("scale_ws"):
        out += [WS_HEADER,
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in ws_rows:
            ws = row["ws"]
            out.append(
                f"| {row['clients']} | {_pct(ws['reach'])} | {_ms(ws['latency_ms']['p50'])} | "
                f"{_ms(ws['latency_ms']['p99'])} | {ws['stalled_close_codes'] or 'open'} | "
                f"{row['rss_peak_mb']:g} | {row['rss_kb_per_connection']:g} |"
            )
        out.append("")
    if fanout_rows := results.get("ws_fanout"):
        out += _fanout_section(fanout_rows)
    if outages := results.get("outages"):
        out += ["## 4. Outages", "", OUTAGE_HEADER,
                "|---|---|---|---|---|---|"]  # fmt: skip
        for row in outages:
            out.append(
                f"| {row['what']} | {_pct(row['answered_ratio'])} | {row['http_5xx']} | "
                f"{row['connection_errors']} | {_pct(row['stale_ratio_during'])} | "
                f"{_recovery(row)} |"
            )
        out.append("")
    if pages := results.get("pages"):
        out += ["## 5. Page loads (headless Chromium, median of each page's RUM beacon)", "",
                PAGES_HEADER, "|---|---|---|---|---|"]  # fmt: skip
        for device in ("desktop", "mobile"):
            for load in ("cold", "warm"):
                phases = pages[device][load]
                out.append(
                    f"| {device} | {load} | {_ms(phases['ttfb']['p50'])} | "
                    f"{_ms(phases['dom_ready']['p50'])} | {_ms(phases['first_data']['p50'])} |"
                )
        out.append("")
    if side := results.get("side_by_side"):
        out += ["## Side by side (same run, same machine, the desktop view)", "",
                SIDE_HEADER, "|---|---|---|---|---|---|"]  # fmt: skip
        for name in ("ours", "ceiling", "naive", "fastapi_cashews"):
            row = side[name]
            out.append(
                f"| {name} | {row['requests_per_s']:g} | {_ms(row.get('p50_ms'))} | "
                f"{_ms(row.get('p99_ms'))} | {_pct(row.get('hit_ratio'))} | "
                f"{row.get('ours_to_theirs', '—')} |"
            )
        out.append("")
    if ablation := results.get("ablation"):
        out += ["## Ablation (one optimisation off at a time)", "",
                ABLATION_HEADER,
                "|---|---|---|---|---|---|---|"]  # fmt: skip
        for row in ablation:
            out.append(
                f"| {row['off']} | {row['http']['throughput_rps']:g} | "
                f"{_ms(row['http']['latency_ms']['p99'])} | {_pct(row['hit_ratio']['served'])} | "
                f"{row['herd']['ticker_calls']} | {row['mobile_bytes']} | "
                f"{row['server_cpu_percent']:g} |"
            )
        out.append("")
    if notes := results.get("notes"):
        out += ["## Notes", "", *[f"- {note}" for note in notes], ""]
    return out


def _plots(results: dict[str, Any], out: Path) -> list[str]:
    made = []
    if scale := results.get("scale_http"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        rows = scale["closed_loop"]
        levels = [row["concurrency"] for row in rows]
        for key in ("p50", "p99"):
            ax.plot(levels, [row["http"]["latency_ms"][key] for row in rows], marker="o", label=key)
        ax.set(xscale="log", yscale="log", xlabel="concurrent clients", ylabel="latency (ms)",
               title="Cached desktop view: latency vs clients")  # fmt: skip
        ax.legend()
        made.append(_save(fig, out / "scale_http.png"))
    if ws_rows := results.get("scale_ws"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        clients = [row["clients"] for row in ws_rows]
        ax.plot(
            clients,
            [row["ws"]["latency_ms"]["p99"] for row in ws_rows],
            marker="o",
            label="p99 delivery (ms)",
        )
        per_connection = [row["rss_kb_per_connection"] for row in ws_rows]
        ax.plot(clients, per_connection, marker="s", label="RSS per connection (KB)")
        ax.set(xlabel="WebSocket clients", title="Fan-out")
        ax.legend()
        made.append(_save(fig, out / "scale_ws.png"))
    if outages := results.get("outages"):
        fig, axes = plt.subplots(len(outages), 1, figsize=(6, 2.2 * len(outages)), squeeze=False)
        for ax, row in zip(axes[:, 0], outages, strict=True):
            timeline = row["timeline"]
            ax.scatter(
                [e["t"] for e in timeline], [1 if e.get("stale") else 0 for e in timeline], s=4
            )
            ax.axvspan(row["marks"]["down"], row["marks"]["up"], color="tab:red", alpha=0.15)
            ax.set(
                yticks=[0, 1], yticklabels=["fresh", "stale"], title=f"{row['what']} down (shaded)"
            )
        axes[-1, 0].set_xlabel("seconds")
        made.append(_save(fig, out / "outages.png"))
    if side := results.get("side_by_side"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        names = ["ours", "ceiling", "naive", "fastapi_cashews"]
        ax.bar(names, [side[n]["requests_per_s"] for n in names])
        ax.set(ylabel="requests / s", title="Desktop view, same load")
        made.append(_save(fig, out / "side_by_side.png"))
    if ablation := results.get("ablation"):
        fig, ax = plt.subplots(figsize=(6, 3.5))
        ax.bar(
            [row["off"] for row in ablation], [row["http"]["throughput_rps"] for row in ablation]
        )
        ax.set(ylabel="requests / s", title="Ablation: standard workload, 32 clients")
        ax.tick_params(axis="x", rotation=30)
        made.append(_save(fig, out / "ablation.png"))
    return made


def _save(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name
