"""A real Prometheus (Debian's ``prometheus``; ``make test`` installs it) on a free
loopback port, with a config a test writes, and its HTTP API."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp

from tests.support.servers import LocalServer, free_port
from tools.local_stack import prometheus_command

ROOT = Path(__file__).resolve().parents[2]
RULE_FILES = sorted(str(path) for path in (ROOT / "prometheus" / "rules").glob("*.yml"))


@contextlib.contextmanager
def prometheus(config: dict[str, Any], directory: Path) -> Iterator[str]:
    """Starts Prometheus with ``config`` (exemplar storage on); yields its base URL."""
    port = free_port()
    server = LocalServer("prometheus", prometheus_command(config, directory, port), port).start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()


class PrometheusApi:
    def __init__(self, base: str, session: aiohttp.ClientSession) -> None:
        self.base = base
        self.session = session

    async def wait_ready(self, seconds: float = 30) -> None:
        """Until /-/ready answers 200 (Prometheus replays its WAL first)."""
        async with asyncio.timeout(seconds):
            while True:
                with contextlib.suppress(aiohttp.ClientError):
                    async with self.session.get(f"{self.base}/-/ready") as response:
                        if response.status == 200:
                            return
                await asyncio.sleep(0.1)

    async def get(self, path: str, **params: str) -> dict[str, Any]:
        async with self.session.get(f"{self.base}{path}", params=params) as response:
            body = await response.json()
        if body.get("status") != "success":
            raise AssertionError(f"{path} {params}: {body.get('errorType')}: {body.get('error')}")
        return body["data"]

    async def query(self, expr: str) -> list[dict[str, Any]]:
        data = await self.get("/api/v1/query", query=expr)
        return data["result"] if data["resultType"] in ("vector", "matrix") else [data["result"]]

    async def targets_up(self) -> dict[str, str]:
        data = await self.get("/api/v1/targets")
        return {t["labels"]["job"]: t["health"] for t in data["activeTargets"]}

    async def exemplars(self, expr: str, seconds: float = 600) -> list[dict[str, Any]]:
        now = time.time()
        return await self.get(
            "/api/v1/query_exemplars", query=expr, start=str(now - seconds), end=str(now)
        )
