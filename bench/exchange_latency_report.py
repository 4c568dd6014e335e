"""The exchange → client latency scenario (``bench/exchange_latency.py``) in the report:
its KPI rows and its section."""

from __future__ import annotations

from typing import Any

from bench.exchange_latency import (
    REST_STEADY_PER_MIN,
    TARGET_AGE_S,
    TARGET_P99_MS,
    TARGET_RATE,
)

Row = tuple[str, str, str, bool | None]  # KPI, target, measured, met


def kpis(results: dict[str, Any]) -> list[Row]:
    """Exchange → client p99, REST calls in steady state, data age, per-symbol rate."""
    row = results.get("exchange_latency")
    if not row:
        return []
    lat, age = row["latency_ms"], row["data_age"]["served_age_s"]
    p99, reach = lat["p99"], row["reach"]
    rest, tickers = row["rest_steady_per_minute"], row["rest_steady_tickers_per_minute"]
    rate = row["published_rate"]["max_in_any_second"]
    return [
        (
            f"exchange → client p99, {row['connected']} WebSocket clients, "
            f"{row['ticks_per_second']:g} ticks/s (coalescing included)",
            f"< {TARGET_P99_MS:g} ms, reach 100%",
            f"{_ms(p99)} ms (p50 {_ms(lat['p50'])}), reach {_pct(reach)}",
            p99 is not None and p99 < TARGET_P99_MS and (reach or 0) >= 0.999,
        ),
        (
            "REST calls to the exchange's spot market in steady state (streams on; the "
            "derivatives' reads apart, below)",
            f"≈ 0/min beyond backfill (≤ {REST_STEADY_PER_MIN:g})",
            f"{rest:g}/min (tickers {tickers:g}/min)",
            rest <= REST_STEADY_PER_MIN,
        ),
        (
            "data age shown (/api/dashboard/data), steady state",
            f"< {TARGET_AGE_S:g} s",
            f"p50 {_s(age['p50'])} s, max {_s(age['max'])} s",
            age["max"] is not None and age["max"] < TARGET_AGE_S,
        ),
        (
            "market updates published per (channel, symbol)",
            f"≤ {TARGET_RATE}/s",
            f"at most {rate} in any 1 s",
            rate <= TARGET_RATE,
        ),
    ]


def section(results: dict[str, Any]) -> list[str]:
    """The scenario's section of the report (empty when it did not run)."""
    row = results.get("exchange_latency")
    if not row:
        return []
    lat, first = row["latency_ms"], row["first_client_ms"]
    collector, delivery = row["exchange_to_published_ms"], row["published_to_client_ms"]
    lag, rate, check = row["harness"]["loop_lag_ms"], row["rate"], row["check"]
    published = row["published_rate"]
    ages, cpu = row["data_age"], row["cpu_percent"]
    low, high = row["tick_hz"]
    return [
        "## Exchange → client latency (streams)",
        "",
        f"{row['service']}; the fake Bybit's stream ticks each of the 25 symbols at "
        f"{low:g}–{high:g} ticks/s (a rate per symbol, random phases: "
        f"{row['ticks_per_second']:g} ticker messages/s in all); {row['connected']} WebSocket "
        f"clients ({row['shards']} processes) subscribed to the market channel, every symbol; "
        f"{row['warmup_seconds']:g} s of ticking before a {row['seconds']:g} s window. "
        "Latency = receipt − `generated_at` (the Bybit message's `ts`, stamped by the fake "
        "as it sends).",
        "",
        LATENCY_HEADER,
        "|---|---|---|---|---|---|",
        _row("exchange → client (every client)", lat),
        _row("exchange → first client (per update)", first),
        _row("exchange → published (collector, coalescing)", collector),
        _row("published → client (fan-out, client harness)", delivery),
        _row("client harness event-loop lag (10 ms timer)", lag),
        "",
        f"- updates: {row['exchange_ticks_in_window']} ticks sent in the window, "
        f"{row['distinct_updates']} distinct updates, {row['updates_received']} received, "
        f"reach {_pct(row['reach'])}, failed connects {row['failed']}, closes "
        f"{row['close_codes'] or 'none'}, negative latencies {row['negative_latencies']}",
        f"- `generated_at` checked against the fake's log of sent ticker messages: "
        f"{check['matched']} of {check['sampled']} sampled updates carry the `ts` of a "
        f"message sent for their symbol ({check['price_matched']} with its price)",
        f"- per (channel, symbol) as published: at most {published['max_in_any_second']} in "
        f"any 1 s, smallest gap {_ms(published['min_gap_ms'])} ms, "
        f"{published['under_interval']} gaps under {1000 / TARGET_RATE:g} ms (closest: "
        + ", ".join(f"{symbol} {at} {ms:g} ms" for symbol, at, ms in published["closest"])
        + f"); updates carrying an older tick than the one before them: "
        f"{published['older_after_newer']} ("
        + ", ".join(
            f"{symbol} at {at}, {ms} ms older"
            for symbol, at, ms in published.get("older_examples", [])
        )
        + "); at a client (delivery "
        f"jitter included): mean {rate['mean_per_second']:g}/s, busiest "
        f"{rate['max_mean_per_second']:g}/s, at most {rate['max_in_any_second']} in any 1 s, "
        f"smallest gap {_ms(rate['min_gap_ms'])} ms",
        f"- REST calls for the spot market in the window: {_calls(row['rest_steady'])} "
        f"({row['rest_steady_per_minute']:g}/min); before it (start-up, backfill, "
        f"warm-up, derivatives included): {_calls(row['rest_before_window'])}",
        f"- REST calls for the derivatives in the window (funding, open interest, account "
        f"ratio: REST by design, one read a minute): {_calls(row.get('rest_derivatives', {}))} "
        f"({row.get('rest_derivatives_per_minute', 0):g}/min)",
        f"- data age of /api/dashboard/data ({ages['ok']} samples, {ages['stale']} stale): "
        f"served `age_ms` p50 {_s(ages['served_age_s']['p50'])} s, max "
        f"{_s(ages['served_age_s']['max'])} s; now − `generated_at` here p50 "
        f"{_s(ages['seen_age_s']['p50'])} s, max {_s(ages['seen_age_s']['max'])} s",
        "- slowest exchange → published (symbol, tick time UTC, ms): "
        + ", ".join(f"{symbol} {at} {ms:g}" for symbol, at, ms in row["slowest_published"]),
        f"- CPU (% of one core): server {cpu['server']:g}, collector child "
        f"{cpu['collector']:g}, fake exchange {cpu['exchange']:g}, clients {cpu['clients']:g}; "
        f"load average before/after {row['load_average']['before'][0]:g}/"
        f"{row['load_average']['after'][0]:g}",
        "",
    ]


LATENCY_HEADER = "| leg | count | p50 ms | p90 ms | p99 ms | max ms |"


def _row(name: str, stats: dict[str, Any]) -> str:
    return (
        f"| {name} | {stats['count']} | {_ms(stats['p50'])} | {_ms(stats['p90'])} "
        f"| {_ms(stats['p99'])} | {_ms(stats['max'])} |"
    )


def _calls(calls: dict[str, int]) -> str:
    return ", ".join(f"{path} {n}" for path, n in sorted(calls.items()) if n) or "none"


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:.1f}"


def _s(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{100 * value:.2f}%"
