"""A real Prometheus scrapes the running service as the compose stack runs it — a
collector (ccxt on the fake Bybit) as job ``virtuoso-collector`` and a serving process
(``VIRTUOSO_COLLECTOR=external``, tracing on) as job ``virtuoso``, on real Memcached and
Redis — every second while load runs; then every PromQL expression of every Grafana
panel (with the boards' default variables) and every recording and alert rule is
evaluated through Prometheus's HTTP API and must return data, and the exemplar query
returns trace ids."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import websockets
import yaml
from opentelemetry.sdk.trace import TracerProvider
from redis.asyncio import Redis

from app.main.collector_process import run_collector
from app.main.server_app import create_server_app
from app.observability import tracing
from app.settings import Settings
from dashboards.build import panel_queries, substitute
from tests.conftest import RATE_LIMITS_OFF, exchange_settings
from tests.support.prometheus_server import RULE_FILES, PrometheusApi, prometheus
from tests.support.servers import free_port
from tests.support.ws_server import serve_app
from tools.fake_bybit import FakeBybit

API_TOKEN = "prometheus-test-token"
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
# The load runs until every expression returns data (two scrapes give a rate(); a
# disconnect needs the live client's reconnection), at most this long.
LOAD_MAX_SECONDS = 90
RECONNECT_AFTER_SECONDS = 2  # the live client's first connection, then its second


def rules() -> list[dict]:
    found = []
    for path in RULE_FILES:
        for group in yaml.safe_load(Path(path).read_text())["groups"]:
            found += group["rules"]
    return found


# --- turning alert conditions into expressions that always return data -----------------

_SET_OPERATOR = re.compile(r"(and|or|unless)\b(\s+(on|ignoring)\s*\([^)]*\))?\s*")
_COMPARISONS = ("==", "!=", ">=", "<=", ">", "<")


def _top_level(expr: str) -> list[int]:
    """Indexes of expr at bracket depth 0 and outside strings."""
    depth, quote, positions = 0, "", []
    for index, char in enumerate(expr):
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "([{":
            depth += 1
        elif char in ")]}":
            depth -= 1
        elif depth == 0:
            positions.append(index)
    return positions


def data_expressions(expr: str) -> list[str]:
    """An alert's condition as expressions that return a sample whether or not the
    alert fires: ``a > b`` becomes ``a > bool b``, ``x and y`` both sides,
    ``absent(e)`` the expression it watches."""
    expr = expr.strip()
    absent = re.fullmatch(r"absent\((.*)\)", expr, re.DOTALL)
    if absent:
        return data_expressions(absent.group(1))
    for index in _top_level(expr):
        before = expr[index - 1] if index else " "
        match = _SET_OPERATOR.match(expr, index)
        if match and before in " )\n":
            return data_expressions(expr[:index]) + data_expressions(expr[match.end() :])
    for index in _top_level(expr):
        for operator in _COMPARISONS:
            if expr.startswith(operator, index):
                end = index + len(operator)
                return [f"{expr[:end]} bool {expr[end:].strip()}"]
    return [expr]


def test_data_expressions() -> None:
    assert data_expressions("up == 0") == ["up == bool 0"]
    assert data_expressions('absent(up{job="v"} == 1)') == ['up{job="v"} == bool 1']
    assert data_expressions("a > 0.1\nand on (job) b >= 10 / 300") == [
        "a > bool 0.1",
        "b >= bool 10 / 300",
    ]
    assert data_expressions('x{le=~"0.1|1"} > (6 * 0.001)') == ['x{le=~"0.1|1"} > bool (6 * 0.001)']


# --- the stack -----------------------------------------------------------------------------


async def run_load(base: str, fake: FakeBybit, stop: asyncio.Event) -> None:
    """Dashboard, API and page traffic, RUM beacons, a rule that fires, moving prices."""
    headers = {"Authorization": f"Bearer {API_TOKEN}"}
    beacon = {"ttfb_ms": 12.5, "dom_ready_ms": 80.0, "first_data_ms": 140.0}
    async with aiohttp.ClientSession() as http:
        rule = {"kind": "price_above", "symbol": "BTCUSDT", "threshold": 1, "level": "critical"}
        async with http.post(f"{base}/api/alerts/rules", json=rule, headers=headers) as response:
            assert response.status == 201
        tick = 0
        while not stop.is_set():
            tick += 1
            for ticker in fake.tickers.values():  # the market moves
                ticker["lastPrice"] = (
                    f"{float(ticker['lastPrice']) * (1.001 if tick % 2 else 0.999):.6f}"
                )
            for path in (
                "/api/dashboard/data",
                "/api/dashboard/mobile",
                "/api/confluence/ETHUSDT",
                f"/api/market/candles/{'BTCUSDT' if tick % 2 else 'SOLUSDT'}?timeframe=1h",
                "/api/bitcoin-beta",
                "/no/such/page",
            ):
                async with http.get(base + path) as response:
                    await response.read()
            for device, page in (("desktop", "/"), ("mobile", "/mobile")):
                body = beacon | {"device": device, "page": page}
                async with http.post(f"{base}/api/rum", json=body) as response:
                    assert response.status == 204
            await asyncio.sleep(0.25)


async def ws_client(url: str, stop: asyncio.Event) -> None:
    """A live client that reconnects once (a disconnect to count), after
    ``RECONNECT_AFTER_SECONDS``."""
    for hold in (RECONNECT_AFTER_SECONDS, None):
        async with websockets.connect(url) as socket:
            await socket.send(
                orjson.dumps({"type": "subscribe", "channels": ["market", "dashboard", "alerts"]})
            )
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(hold):
                    while not stop.is_set():
                        message = orjson.loads(await socket.recv())
                        if message["type"] == "heartbeat":
                            await socket.send(
                                orjson.dumps({"type": "pong", "nonce": message["nonce"]})
                            )


@contextlib.asynccontextmanager
async def collecting(settings: Settings) -> AsyncIterator[None]:
    """``virtuoso collect``'s loop (``run_collector``) in this process until the block
    ends; its metrics on ``settings.monitoring_bind``."""
    stop = asyncio.Event()
    task = asyncio.create_task(run_collector(settings, stop))
    try:
        yield
    finally:
        stop.set()
        async with asyncio.timeout(30):
            await task


async def test_every_board_and_rule_expression_returns_data(
    memcached, redis, tmp_path: Path
) -> None:
    limit = Redis.from_url(f"redis://{redis.address}/0")
    await limit.config_set("maxmemory", str(64 * 1024 * 1024))  # a limit to compare with
    await limit.aclose()
    provider = TracerProvider()  # sampled spans, nothing exported: trace ids for exemplars
    collector_target = f"127.0.0.1:{free_port()}"
    async with FakeBybit(symbols=SYMBOLS.split(",")) as fake:
        shared = {
            "VIRTUOSO_EXCHANGE_TIMEOUT_SECONDS": "10",
            "VIRTUOSO_REFRESH_SECONDS": "1",
            "VIRTUOSO_MEMCACHED_URL": memcached.address,
            "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
            "VIRTUOSO_API_TOKEN": API_TOKEN,
            "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
        }
        collector_settings = exchange_settings(  # streams on: their metrics are exported
            fake.base_url,
            SYMBOLS,
            **shared,
            VIRTUOSO_MONITORING_BIND=collector_target,
            VIRTUOSO_STREAMS="on",
        )
        settings = exchange_settings(
            fake.base_url, SYMBOLS, **shared, VIRTUOSO_COLLECTOR="external"
        )
        app = create_server_app(settings, tracer_provider=provider)
        server_port = free_port()
        target = f"127.0.0.1:{server_port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": RULE_FILES,
            "scrape_configs": [
                {"job_name": "virtuoso", "static_configs": [{"targets": [target]}]},
                {
                    "job_name": "virtuoso-collector",
                    "static_configs": [{"targets": [collector_target]}],
                },
            ],
        }
        try:
            # Prometheus first: its first scrape waits for its target discovery (about
            # 5 s), meanwhile the collector and the server start
            with prometheus(config, tmp_path) as prometheus_base:
                async with (
                    collecting(collector_settings),
                    serve_app(app, port=server_port) as ws_base,
                    aiohttp.ClientSession() as session,
                ):
                    base = ws_base.replace("ws://", "http://")
                    api = PrometheusApi(prometheus_base, session)
                    await load_while_scraped(base, ws_base + "/ws", fake, api)
                    await assert_every_expression_returns_data(api)
        finally:
            tracing.use(None)
            provider.shutdown()


async def load_while_scraped(base: str, ws_url: str, fake: FakeBybit, api: PrometheusApi) -> None:
    await api.wait_ready()

    async def scraped() -> bool:
        up = await api.targets_up()
        return up.get("virtuoso") == "up" and up.get("virtuoso-collector") == "up"

    for _ in range(100):
        if await scraped():
            break
        await asyncio.sleep(0.2)
    else:
        raise AssertionError(f"Prometheus never scraped the app: {await api.targets_up()}")
    stop = asyncio.Event()
    workers = [
        asyncio.create_task(run_load(base, fake, stop)),
        asyncio.create_task(ws_client(ws_url, stop)),
    ]
    await still_empty(api, expressions(), LOAD_MAX_SECONDS)  # the assertions say which
    stop.set()
    async with asyncio.timeout(15):
        await asyncio.gather(*workers)


def expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every board panel (default variables), recording rule (its
    expression and its series) and alert condition (as data expressions)."""
    found = [(f"board {uid} / {title}", substitute(expr)) for uid, title, expr in panel_queries()]
    for rule in rules():
        if "record" in rule:
            found += [(f"recording {rule['record']}", rule["expr"])]
            found += [(f"recorded {rule['record']}", rule["record"])]
        else:
            found += [(f"alert {rule['alert']}", expr) for expr in data_expressions(rule["expr"])]
    return found


async def still_empty(
    api: PrometheusApi, pending: list[tuple[str, str]], seconds: float
) -> list[tuple[str, str]]:
    """Those of ``pending`` (where, PromQL) that returned no data, each asked again every
    second until it does, for at most ``seconds``; a bad expression raises. On a busy
    machine a scrape of a 1 s interval can time out: the target's series, and the rules
    recorded from them, are stale (no data) until the next scrape."""
    pending = [(where, expr) for where, expr in pending if not await api.query(expr)]
    for _ in range(int(seconds)):
        if not pending:
            break
        await asyncio.sleep(1)
        pending = [(where, expr) for where, expr in pending if not await api.query(expr)]
    return pending


async def assert_every_expression_returns_data(api: PrometheusApi) -> None:
    assert len(expressions()) > 60
    empty = await still_empty(api, expressions(), 30)
    assert not empty, "no data for:\n" + "\n".join(f"{where}: {expr}" for where, expr in empty)
    exemplars = await api.exemplars("virtuoso_http_request_duration_seconds_bucket")
    trace_ids = {e["labels"]["trace_id"] for series in exemplars for e in series["exemplars"]}
    assert trace_ids and all(re.fullmatch(r"[0-9a-f]{32}", t) for t in trace_ids)
