"""The alert rule form on the desktop page, for the page tests in tests/browser/rule_form/:
the app those tests share per module, opening the form in a locale with the API token
given, and reading what the form previews and what the server stored."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

from playwright.async_api import Browser, Page

from tests.support.browser import (
    FEW_SYMBOLS,
    PageProblems,
    ServedApp,
    open_page,
    served_app,
    text_of,
)

API_TOKEN = "rule-form-test-token"
WAIT_MS = 15_000
DESKTOP = {"width": 1440, "height": 1000}


@contextlib.asynccontextmanager
async def rule_form_app(data_dir: Path, **environ: str) -> AsyncIterator[ServedApp]:
    """The app for rule form tests: the API token, alerts in ``data_dir``, three symbols
    (the form's tests name BTCUSDT only), and any other variables given."""
    async with served_app(
        VIRTUOSO_API_TOKEN=API_TOKEN,
        VIRTUOSO_DATA_DIR=str(data_dir),
        VIRTUOSO_SYMBOLS=FEW_SYMBOLS,
        **environ,
    ) as app:
        yield app


async def rule_form(
    browser: Browser, served: ServedApp, problems: PageProblems, locale: str
) -> Page:
    """The desktop page in `locale`, the rule form open and the API token given."""
    page = await open_page(
        browser, served.base + "/", problems, viewport=DESKTOP, locale=locale, timezone_id="UTC"
    )
    await page.wait_for_selector(
        "#rule-symbol option[value='BTCUSDT']", state="attached", timeout=WAIT_MS
    )
    await page.click(".rules summary")
    await page.fill("#api-token", API_TOKEN)
    await page.click("#token-form button[type=submit]")
    return page


async def stored_rules(page: Page, served: ServedApp) -> list[dict]:
    """GET /api/alerts/rules from the page's context: the first page of stored rules."""
    response = await page.request.get(served.base + "/api/alerts/rules")
    assert response.ok
    return (await response.json())["rules"]


async def preview(page: Page) -> str:
    """The form's preview line ("Will save: …" or "Not saved: …")."""
    return await text_of(page, "#rule-preview")


async def wait_preview(page: Page, start: str) -> str:
    """Until the preview starts with `start`; its text."""
    await page.wait_for_function(
        "(start) => document.getElementById('rule-preview').textContent.startsWith(start)",
        arg=start,
        timeout=WAIT_MS,
    )
    return await preview(page)
