"""The browser bundle: built by scripts/build-frontend.sh, served at /static/ with the
security headers."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.sources.simulated import SimulatedMarket
from app.web.security import content_security_policy
from tests.conftest import ManualClock, make_settings
from tests.support.frontend_modules import call_module

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "build-frontend.sh"
BUNDLES = ("desktop.js", "mobile.js", "desktop.css", "mobile.css")
EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'"
)


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Runs the build into a directory of its own (a no-op install when node_modules
    matches the lock): the app's bundles, which other tests' pages load meanwhile,
    stay as they are."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        ["bash", str(SCRIPT), str(out)], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"build-frontend.sh failed:\n{result.stdout}\n{result.stderr}"
    return out


@pytest.fixture(scope="module")
def bundle_bytes(dist: Path) -> bytes:
    return (dist / "desktop.js").read_bytes()


@pytest_asyncio.fixture
async def web_app(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    app = create_app(make_settings(), source=SimulatedMarket(seed=7, clock=clock), clock=clock)
    async with app.test_app() as test_app:
        yield test_app


def test_expected_policy_text() -> None:
    assert content_security_policy() == EXPECTED_CSP


def test_build_produces_the_bundles(dist: Path) -> None:
    for name in BUNDLES:
        assert (dist / name).is_file(), name
    [chart_chunk] = dist.glob("candles-*.js")  # content-hashed name
    chart = chart_chunk.read_text()
    assert len(chart) > 50_000 and "attributionLogo" in chart  # lightweight-charts
    desktop = (dist / "desktop.js").read_text()
    mobile = (dist / "mobile.js").read_text()
    # the desktop page loads the chart chunk after its first data; the phone never does
    assert f'import("./{chart_chunk.name}")' in desktop and len(desktop) < 30_000
    assert chart_chunk.name not in mobile and len(mobile) < 30_000


def npm_run(script: str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["npm", "--prefix", str(ROOT / "frontend"), "run", "--silent", script, "--", *args],
        capture_output=True,
        text=True,
        input=stdin,
        timeout=180,
    )


@pytest.mark.parametrize("script", ["lint", "typecheck"])
def test_page_scripts_pass_eslint_and_the_type_check(dist: Path, script: str) -> None:
    """ESLint (recommended, no-undef) and tsc --noEmit (checkJs, strict) find nothing."""
    result = npm_run(script)
    assert result.returncode == 0, f"npm run {script}:\n{result.stdout}\n{result.stderr}"


def test_eslint_reports_an_undefined_name(dist: Path) -> None:
    """The check that would have caught desktop.js calling setText without importing it."""
    source = "export function show(node) {\n  setText(node, 'x');\n}\n"
    result = npm_run("lint", "--stdin", "--stdin-filename", "src/probe.js", stdin=source)
    assert result.returncode != 0
    assert "'setText' is not defined" in result.stdout and "no-undef" in result.stdout


def test_chart_candles_are_cleaned_of_anything_the_chart_cannot_draw() -> None:
    """candle-data.js: nulls, NaN, strings and short rows dropped; times increasing; a
    repeated time keeps its last row (lightweight-charts throws on the first two)."""
    rows = [
        [3000, 1, 2, 0, 1.5, 9],
        [1000, None, None, None, None, 0],
        [1000, 1, 1, 1, 1, 0],
        [2000, 1, 3, 1, 2, 1],
        [2000, 1, 4, 1, 3, 1],
        [4000, "1", 1, 1, 1, 1],
        [5000, 1, 1, 1],
        None,
        "x",
    ]
    cleaned, of_null, of_object = call_module(
        "candle-data.js", [["cleanCandles", rows], ["cleanCandles", None], ["cleanCandles", {}]]
    )
    assert [(c["time"], c["close"]) for c in cleaned] == [(1, 1), (2, 3), (3, 1.5)]
    assert of_null == of_object == []


def test_page_scripts_never_write_html() -> None:
    """Values reach the pages through textContent only: no HTML parsing of data."""
    for source in (ROOT / "frontend" / "src").glob("*.js"):
        text = source.read_text()
        for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
            assert sink not in text, f"{source.name} uses {sink}"


def test_build_says_what_to_install_without_node(tmp_path: Path) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    os.symlink("/usr/bin/dirname", bin_dir / "dirname")
    result = subprocess.run(
        ["/bin/bash", str(SCRIPT)],
        capture_output=True,
        text=True,
        env={"PATH": str(bin_dir)},
        timeout=30,
    )
    assert result.returncode != 0
    assert "node" in result.stderr and "install Node.js" in result.stderr


async def test_bundle_served_with_headers(bundle_bytes: bytes, web_app: QuartTestApp) -> None:
    client = web_app.test_client()
    response = await client.get("/static/dist/desktop.js")
    assert response.status_code == 200
    assert response.mimetype in ("text/javascript", "application/javascript")
    assert await response.get_data() == bundle_bytes
    assert response.headers["Content-Security-Policy"] == EXPECTED_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"
    etag = response.headers["ETag"]
    assert "max-age=" in response.headers.get("Cache-Control", "")
    again = await client.get("/static/dist/desktop.js", headers={"If-None-Match": etag})
    assert again.status_code == 304


async def test_missing_static_file_still_has_headers(web_app: QuartTestApp) -> None:
    response = await web_app.test_client().get("/static/dist/nope.js")
    assert response.status_code == 404
    assert response.headers["Content-Security-Policy"] == EXPECTED_CSP
    assert response.headers["X-Content-Type-Options"] == "nosniff"


async def test_json_responses_get_nosniff_and_referrer_policy(web_app: QuartTestApp) -> None:
    response = await web_app.test_client().get("/health")
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "no-referrer"


async def test_docs_allows_only_its_own_inline_script(web_app: QuartTestApp) -> None:
    response = await web_app.test_client().get("/docs")
    assert response.status_code == 200
    body = await response.get_data(as_text=True)
    inline = re.findall(r"<script>(.*?)</script>", body, re.DOTALL)
    assert inline, "the Swagger UI page no longer has an inline script"
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    csp = response.headers["Content-Security-Policy"]
    directives = dict(d.split(" ", 1) for d in csp.split("; "))
    assert directives["script-src"] == f"'self' 'sha256-{digest}'"
    assert "'unsafe-inline'" not in csp
    expected = dict(d.split(" ", 1) for d in EXPECTED_CSP.split("; "))
    assert {k: v for k, v in directives.items() if k != "script-src"} == {
        k: v for k, v in expected.items() if k != "script-src"
    }


def test_build_produces_the_service_worker(dist: Path) -> None:
    """The mobile page's service worker: one classic script under a stable name (GET
    /sw.js serves it), with no module syntax and no chunk to load."""
    worker = (dist / "sw.js").read_text()
    assert "VIRTUOSO_SHELL" in worker and "caches" in worker
    assert not re.search(r"\bimport\s*[{(\"']|\bexport\s*[{*]", worker)
    assert not list(dist.glob("sw-*.js"))


@pytest.mark.parametrize("target", ["file", "non-empty directory"])
def test_the_build_refuses_a_target_that_holds_something(tmp_path: Path, target: str) -> None:
    """Given a directory, the build writes only into a new or empty one: it never
    deletes what a mistyped path points at (a file, the sources, a package)."""
    kept = tmp_path / "kept.txt"
    kept.write_text("mine")
    path = kept if target == "file" else tmp_path
    result = subprocess.run(
        ["bash", str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "must be a new or an empty directory" in result.stderr
    assert kept.read_text() == "mine"
