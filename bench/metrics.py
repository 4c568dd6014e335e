"""Reading figures back from the servers: our service's /metrics, Memcached's and
Redis's own counters, and the fake exchange's request counts."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import aiohttp
from prometheus_client.parser import text_string_to_metric_families


@dataclass
class Samples:
    """One scrape of /metrics: (sample name, labels) → value."""

    values: dict[tuple[str, frozenset[tuple[str, str]]], float]

    def sum(self, name: str, **labels: str) -> float:
        wanted = set(labels.items())
        return sum(v for (n, lbl), v in self.values.items() if n == name and wanted <= lbl)

    def by(self, name: str, label: str, **labels: str) -> dict[str, float]:
        wanted = set(labels.items())
        grouped: dict[str, float] = {}
        for (n, lbl), value in self.values.items():
            if n == name and wanted <= lbl:
                key = dict(lbl).get(label, "")
                grouped[key] = grouped.get(key, 0.0) + value
        return grouped


async def scrape(session: aiohttp.ClientSession, base: str) -> Samples:
    async with session.get(f"{base}/metrics") as response:
        text = await response.text()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return Samples(values)


def hit_ratios(before: Samples, after: Samples) -> dict[str, float | None]:
    """Per tier, hit / lookups; and "served": (hit + stale) / requests, the KPI."""
    ratios: dict[str, float | None] = {}
    for tier in ("l1", "memcached", "redis"):
        counts = {
            result: after.sum("virtuoso_cache_operations_total", tier=tier, result=result)
            - before.sum("virtuoso_cache_operations_total", tier=tier, result=result)
            for result in ("hit", "miss", "stale", "error")
        }
        total = sum(counts.values())
        ratios[tier] = round(counts["hit"] / total, 4) if total else None
    served = {
        outcome: after.sum("virtuoso_cache_requests_total", outcome=outcome)
        - before.sum("virtuoso_cache_requests_total", outcome=outcome)
        for outcome in ("hit", "stale", "miss", "error")
    }
    total = sum(served.values())
    ratios["served"] = round((served["hit"] + served["stale"]) / total, 5) if total else None
    return ratios


async def exchange_counts(session: aiohttp.ClientSession, control: str) -> dict[str, int]:
    async with session.get(f"{control}/counts") as response:
        return await response.json()


def calls_between(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    paths = set(before) | set(after)
    return {p: after.get(p, 0) - before.get(p, 0) for p in sorted(paths) if p.startswith("/v5/")}


async def memcached_stats(address: str) -> dict[str, int]:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"stats\r\n")
    await writer.drain()
    stats: dict[str, int] = {}
    while (line := (await reader.readline()).decode().strip()) != "END":
        _, name, value = line.split(" ", 2)
        if value.isdigit():
            stats[name] = int(value)
    writer.close()
    return stats


async def memcached_flush(address: str) -> None:
    host, port = address.split(":")
    reader, writer = await asyncio.open_connection(host, int(port))
    writer.write(b"flush_all\r\n")
    await writer.drain()
    await reader.readline()
    writer.close()
