"""The dashboards' HTML pages: ``/`` (desktop; a phone is offered the mobile page)
and ``/mobile``. Pages are small shells: data comes from the JSON API and ``/ws``.
They carry no secret: only public settings the scripts need (refresh interval,
thresholds) as ``data-`` attributes."""

from __future__ import annotations

import re

from quart import Blueprint, Response, render_template, request
from quart_schema import hide

from app.web.assets import AssetVersions
from app.web.state import service_state

# MDN's advice for "is this a phone": "Mobi" anywhere in the user agent (iPhone,
# Android phones, Firefox/Opera mobile); tablets are not phones.
_PHONE = re.compile(r"Mobi|iPhone|iPod|Windows Phone", re.IGNORECASE)

# Data older than this many refresh intervals is flagged STALE on the pages.
STALE_AFTER_REFRESHES = 3

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


async def _page(template: str, device: str, page: str, vary: bool) -> Response:
    settings = service_state().settings
    html = await render_template(
        template,
        asset=assets.url,
        device=device,
        page=page,
        refresh_seconds=settings.refresh_seconds,
        stale_after_seconds=STALE_AFTER_REFRESHES * settings.refresh_seconds,
        long_threshold=settings.confluence.long_threshold,
        short_threshold=settings.confluence.short_threshold,
    )
    response = Response(html, content_type="text/html; charset=utf-8")
    response.headers["Cache-Control"] = "no-cache"
    if vary:
        response.headers["Vary"] = "User-Agent"
    return response
