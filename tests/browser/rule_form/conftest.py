"""The app each rule form module shares (tests/support/rule_form.py), emptied of rules
before each test."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from tests.support.browser import ServedApp, without_rules
from tests.support.rule_form import rule_form_app


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def served_module(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServedApp]:
    """One app for the module, with the API token and an alert store of its own."""
    alerts = tmp_path_factory.mktemp(f"{request.module.__name__.rpartition('.')[2]}-alerts")
    async with rule_form_app(alerts) as app:
        yield app


@pytest_asyncio.fixture(loop_scope="session")
async def served(served_module: ServedApp) -> ServedApp:
    """The module's app with no rule of another test stored."""
    return await without_rules(served_module)
