"""The view contract: every view of the catalogue, built from a real snapshot (the
simulated market, and ccxt against the fake Bybit) and served by its route, matches
its response model — the model ``/openapi.json`` documents — field for field: a field
the model does not name, or a field it names and the view leaves out, fails here.
Every catalogue entry must have its route."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
import pytest_asyncio
from pydantic import BaseModel
from quart import Quart
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.sources.simulated import SimulatedMarket
from app.services.catalogue import CATALOGUE, DESKTOP, ViewSpec
from tests.conftest import ManualClock, exchange_settings, make_settings, started_app
from tools.fake_bybit import FakeBybit

pytestmark = pytest.mark.asyncio(loop_scope="module")

SYMBOL = "BTCUSDT"
CANDLE_TIMEFRAMES = ("1m", "1h")


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def simulated() -> AsyncIterator[QuartTestApp]:
    clock = ManualClock()
    source = SimulatedMarket(seed=7, clock=clock)
    async for test_app in started_app(make_settings(), source, clock):
        yield test_app


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bybit() -> AsyncIterator[QuartTestApp]:
    async with FakeBybit() as fake:
        settings = exchange_settings(fake.base_url, "BTCUSDT,ETHUSDT,SOLUSDT")
        async for test_app in started_app(settings, None, ManualClock()):
            yield test_app


def instance_paths(spec: ViewSpec, timeframes: list[str]) -> list[str]:
    """The request paths serving ``spec``: one, or one per timeframe of a parametrised view."""
    if not spec.parametrised:
        return [spec.route]
    path = spec.route.replace("<symbol>", SYMBOL)
    chosen = timeframes if spec.name == "confluence" else list(CANDLE_TIMEFRAMES)
    return [f"{path}?timeframe={tf}" for tf in chosen]


def contract_problems(model: type[BaseModel], body: dict) -> list[str]:
    """Where ``body`` and ``model`` disagree: validation errors, fields the model does not
    name (``extra``) and fields it names that the body leaves out (``missing``), at any
    depth of nested models."""
    try:
        instance = model.model_validate(body)
    except ValueError as error:
        return [str(error)]
    return _disagreements(instance, model.__name__)


def _disagreements(value: Any, where: str) -> list[str]:
    found: list[str] = []
    if isinstance(value, BaseModel):
        found += [f"{where}.{key}: extra" for key in value.model_extra or {}]
        missing = set(type(value).model_fields) - value.model_fields_set
        found += [f"{where}.{key}: missing" for key in sorted(missing)]
        for key in value.model_fields_set & set(type(value).model_fields):
            found += _disagreements(getattr(value, key), f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _disagreements(item, f"{where}[{i}]")
    elif isinstance(value, dict):
        for key, item in value.items():
            found += _disagreements(item, f"{where}.{key}")
    return found


def routed(app: Quart, spec: ViewSpec) -> bool:
    return any(
        rule.rule == spec.route and "GET" in (rule.methods or ())
        for rule in app.url_map.iter_rules()
    )


async def served(test_app: QuartTestApp, path: str) -> dict:
    response = await test_app.test_client().get(path)
    assert response.status_code == 200, (path, await response.get_data())
    return orjson.loads(await response.get_data())


async def check_every_view(test_app: QuartTestApp) -> None:
    timeframes = (await served(test_app, "/api/symbols"))["timeframes"]  # configured + all
    for spec in CATALOGUE:
        for path in instance_paths(spec, timeframes):
            body = await served(test_app, path)
            assert contract_problems(spec.model, body) == [], path


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
async def test_every_catalogue_entry_has_its_route(simulated: QuartTestApp, spec: ViewSpec) -> None:
    assert routed(simulated.app, spec), f"no GET route {spec.route} for view {spec.name}"


async def test_the_route_check_fails_without_a_route(simulated: QuartTestApp) -> None:
    unrouted = ViewSpec("nowhere", "beta", "/api/nowhere", True, DESKTOP.model)
    assert not routed(simulated.app, unrouted)


async def test_openapi_documents_each_view_with_its_model(simulated: QuartTestApp) -> None:
    spec = orjson.loads(await (await simulated.test_client().get("/openapi.json")).get_data())
    for view in CATALOGUE:
        path = view.route.replace("<symbol>", "{symbol}")
        schema = spec["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]
        documented = schema["schema"]
        assert documented["title"] == view.model.__name__, view.name
        assert set(documented["properties"]) == set(view.model.model_fields), view.name


async def test_every_view_of_the_simulated_market_matches_its_model(
    simulated: QuartTestApp,
) -> None:
    await check_every_view(simulated)


async def test_every_view_of_the_exchange_client_matches_its_model(bybit: QuartTestApp) -> None:
    await check_every_view(bybit)


async def test_a_field_gained_or_lost_breaks_the_contract(simulated: QuartTestApp) -> None:
    desktop = await served(simulated, DESKTOP.route)
    assert contract_problems(DESKTOP.model, desktop | {"surprise": 1}) == [
        "DesktopDashboard.surprise: extra"
    ]
    row = desktop["symbols"][0]
    lost = desktop | {"symbols": [{k: v for k, v in row.items() if k != "tick_size"}]}
    assert contract_problems(DESKTOP.model, lost) == [
        "DesktopDashboard.symbols[0].tick_size: missing"
    ]
