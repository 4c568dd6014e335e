"""The dashboards' HTML: which page a client gets, asset URLs that change with the
build, the security policy, and nothing secret or inline in the page."""

from __future__ import annotations

import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.market.sources.simulated import SimulatedMarket
from app.web.assets import AssetVersions, MissingAsset
from app.web.pages import is_phone
from tests.conftest import ManualClock, make_settings, started_app
from tests.support.browser import IPHONE

ANDROID_PHONE = (
    "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0 Mobile Safari/537.36"
)
IPAD = "Mozilla/5.0 (iPad; CPU OS 17_5 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko)"
DESKTOP = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0"
SECRETS = {
    "VIRTUOSO_ADMIN_TOKEN": "admin-secret-4d1f0c",
    "VIRTUOSO_API_TOKEN": "api-secret-93be27",
    "VIRTUOSO_SECRET_KEY": "cookie-secret-8a6e55",
}


@pytest_asyncio.fixture
async def app_with_secrets(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(**SECRETS)
    async for test_app in started_app(settings, SimulatedMarket(seed=7, clock=clock), clock):
        yield test_app


async def page_of(test_app: QuartTestApp, path: str, user_agent: str = DESKTOP) -> tuple:
    response = await test_app.test_client().get(path, headers={"User-Agent": user_agent})
    return response, await response.get_data(as_text=True)


def device_of(html: str) -> str:
    match = re.search(r'<body class="(\w+)"', html)
    assert match, "no body class"
    return match.group(1)


@pytest.mark.parametrize(
    ("user_agent", "phone"),
    [(IPHONE, True), (ANDROID_PHONE, True), (IPAD, False), (DESKTOP, False), ("", False)],
)
def test_phone_detection(user_agent: str, phone: bool) -> None:
    assert is_phone(user_agent) is phone


async def test_desktop_page(simulated_app: QuartTestApp) -> None:
    response, html = await page_of(simulated_app, "/")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert device_of(html) == "desktop"
    assert response.headers["Vary"] == "User-Agent"
    assert response.headers["Cache-Control"] == "no-cache"
    assert "'unsafe-inline'" not in response.headers["Content-Security-Policy"]
    for element in ("symbols-table", "chart", "alerts-list", "rule-form", "watchlist"):
        assert f'id="{element}"' in html


async def test_a_phone_on_home_gets_the_mobile_page(simulated_app: QuartTestApp) -> None:
    _, html = await page_of(simulated_app, "/", IPHONE)
    assert device_of(html) == "mobile"
    assert 'data-page="/"' in html  # its beacon reports the path it was served on
    _, html = await page_of(simulated_app, "/?view=desktop", IPHONE)
    assert device_of(html) == "desktop"


async def test_mobile_page(simulated_app: QuartTestApp) -> None:
    response, html = await page_of(simulated_app, "/mobile")
    assert response.status_code == 200
    assert device_of(html) == "mobile"
    assert 'data-page="/mobile"' in html
    assert "desktop.js" not in html  # no chart library on the phone


async def test_asset_urls_resolve_and_carry_the_content_hash(simulated_app: QuartTestApp) -> None:
    client = simulated_app.test_client()
    for path in ("/", "/mobile"):
        _, html = await page_of(simulated_app, path)
        urls = re.findall(r'(?:src|href)="(/static/[^"]+)"', html)
        assert len(urls) >= 3  # icon, stylesheet, script
        for url in urls:
            response = await client.get(url)
            assert response.status_code == 200, url
            if "/dist/" in url:
                assert re.search(r"\?v=[0-9a-f]{12}$", url), url


async def test_page_carries_no_inline_code(simulated_app: QuartTestApp) -> None:
    for path in ("/", "/mobile"):
        _, html = await page_of(simulated_app, path)
        assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
        assert "<style" not in html
        assert " style=" not in html
        assert re.search(r"\son[a-z]+=", html) is None  # no inline event handlers


async def test_no_secret_in_pages_or_bundles(app_with_secrets: QuartTestApp) -> None:
    client = app_with_secrets.test_client()
    for path in ("/", "/mobile"):
        _, html = await page_of(app_with_secrets, path)
        bodies = [html]
        for url in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            bodies.append(await (await client.get(url)).get_data(as_text=True))
        for body in bodies:
            for secret in SECRETS.values():
                assert secret not in body


def test_asset_version_follows_the_content(tmp_path: Path) -> None:
    versions = AssetVersions(tmp_path)
    bundle = tmp_path / "desktop.js"
    bundle.write_text("one")
    first = versions.url("desktop.js")
    assert first.startswith("/static/dist/desktop.js?v=")
    assert versions.url("desktop.js") == first
    bundle.write_text("two")
    os.utime(bundle, ns=(1, 1))  # a new modification time, as a rebuild gives
    assert versions.url("desktop.js") != first


def test_missing_bundle_says_how_to_build(tmp_path: Path) -> None:
    with pytest.raises(MissingAsset, match="make frontend"):
        AssetVersions(tmp_path).url("desktop.js")


async def test_no_secret_in_the_service_worker_or_manifest(app_with_secrets: QuartTestApp) -> None:
    client = app_with_secrets.test_client()
    for path in ("/sw.js", "/manifest.webmanifest"):
        response = await client.get(path)
        assert response.status_code == 200, path
        body = await response.get_data(as_text=True)
        for secret in SECRETS.values():
            assert secret not in body
