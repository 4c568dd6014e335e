"""The dashboards' HTML pages: ``/`` (desktop; a phone is offered the mobile page)
and ``/mobile``. Pages are small shells: data comes from the JSON API and ``/ws``.
They carry no secret: only public settings the scripts need (refresh interval,
thresholds) as ``data-`` attributes.

The mobile page is also an installable web app: ``/manifest.webmanifest`` and the
service worker ``/sw.js`` (scope ``/mobile``), which keeps the page's shell and its
last data for offline use (see frontend/src/sw.js)."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from quart import Blueprint, Response, render_template, request
from quart_schema import hide

from app.state import service_state
from app.web.assets import AssetVersions
from app.web.security import content_security_policy

# MDN's advice for "is this a phone": "Mobi" anywhere in the user agent (iPhone,
# Android phones, Firefox/Opera mobile); tablets are not phones.
_PHONE = re.compile(r"Mobi|iPhone|iPod|Windows Phone", re.IGNORECASE)

# Data older than this many refresh intervals (of its own cadence: the snapshots, the
# derivatives reads) is flagged STALE on the pages.
STALE_AFTER_REFRESHES = 3

# The installable mobile app: its page, the data its service worker keeps for offline
# reads, and its web app manifest.
OFFLINE_PAGE = "/mobile"
OFFLINE_DATA = ("/api/dashboard/mobile",)
MANIFEST = Path(__file__).parent / "static" / "manifest.webmanifest"

pages = Blueprint("pages", __name__)
assets = AssetVersions()


def is_phone(user_agent: str) -> bool:
    return bool(_PHONE.search(user_agent))


@pages.get("/")
@hide  # pages are HTML, not part of the JSON API
async def home() -> Response:
    """The desktop dashboard, or the mobile one for a phone (``?view=desktop`` keeps
    the desktop page on a phone)."""
    wants_desktop = request.args.get("view") == "desktop"
    if not wants_desktop and is_phone(request.headers.get("User-Agent", "")):
        return await _page("mobile.html", device="mobile", page="/", vary=True)
    return await _page("desktop.html", device="desktop", page="/", vary=True)


@pages.get("/mobile")
@hide
async def mobile() -> Response:
    """The mobile dashboard."""
    return await _page("mobile.html", device="mobile", page="/mobile", vary=False)


@pages.get("/manifest.webmanifest")
@hide
async def web_app_manifest() -> Response:
    """The mobile page's web app manifest (name, start URL, scope, icons)."""
    response = Response(MANIFEST.read_bytes(), content_type="application/manifest+json")
    response.headers["Cache-Control"] = "no-cache"
    return response


@pages.get("/sw.js")
@hide
async def service_worker() -> Response:
    """The mobile page's service worker (built from frontend/src/sw.js), prefixed with
    the shell it keeps and that shell's version. The version is a hash of the worker,
    the rendered page and the bundles' content-hashed URLs, so a deploy that changes
    any of them changes this script: browsers (which re-check it on every visit, as it
    is ``no-cache``) install the new worker, which replaces the old caches."""
    worker_name = "sw.js"
    assets.version(worker_name)  # MissingAsset when not built
    worker = (assets.directory / worker_name).read_text(encoding="utf-8")
    html = await _render("mobile.html", device="mobile", page=OFFLINE_PAGE)
    chunks = [f"/static/dist/{name}" for name in assets.static_imports("mobile.js")]
    shell = [
        OFFLINE_PAGE,
        assets.url("mobile.js"),
        assets.url("mobile.css"),
        *chunks,
        "/static/favicon.svg",
    ]
    digest = hashlib.sha256()
    for part in (worker, html, *shell):
        digest.update(part.encode())
        digest.update(b"\0")
    config = {"version": digest.hexdigest()[:16], "shell": shell, "data": list(OFFLINE_DATA)}
    body = f"self.VIRTUOSO_SHELL = {json.dumps(config)};\n{worker}"
    response = Response(body, content_type="text/javascript; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    response.headers["Content-Security-Policy"] = content_security_policy()
    return response


async def _render(template: str, device: str, page: str) -> str:
    settings = service_state().settings
    return await render_template(
        template,
        asset=assets.url,
        device=device,
        page=page,
        refresh_seconds=settings.refresh_seconds,
        stale_after_seconds=STALE_AFTER_REFRESHES * settings.refresh_seconds,
        derivatives_stale_after_seconds=(
            STALE_AFTER_REFRESHES * settings.derivatives_refresh_seconds
        ),
        long_threshold=settings.long_threshold,
        short_threshold=settings.short_threshold,
    )


async def _page(template: str, device: str, page: str, vary: bool) -> Response:
    html = await _render(template, device, page)
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    if vary:
        response.headers["Vary"] = "User-Agent"
    return response
