"""Security headers: a Content-Security-Policy on HTML and static responses, and
``nosniff`` and ``no-referrer`` on every response."""

from __future__ import annotations

import base64
import hashlib
import re

from quart import Quart, Response, request

CSP = {
    "default-src": "'self'",
    "script-src": "'self'",
    "style-src": "'self'",
    "img-src": "'self' data:",
    # 'self' covers same-origin ws:/wss: (CSP Level 3); the pages open /ws on their own host.
    "connect-src": "'self'",
    "frame-ancestors": "'none'",
    "base-uri": "'none'",
}

# /docs is quart-schema's Swagger UI page, which starts Swagger UI with an inline
# <script>: that page alone may run its own inline scripts, allowed by their sha256
# (computed from the page served) rather than 'unsafe-inline'; the rest of its policy
# is the same as everywhere else.
SCRIPT_EXEMPT_PATHS = frozenset({"/docs"})

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(extra_script_sources: list[str] | None = None) -> str:
    directives = dict(CSP)
    if extra_script_sources:
        directives["script-src"] = " ".join([CSP["script-src"], *extra_script_sources])
    return "; ".join(f"{name} {value}" for name, value in directives.items())


def install_security_headers(app: Quart) -> None:
    app.extensions["security_headers"] = True
    static_prefix = f"{app.static_url_path or '/static'}/"

    @app.after_request
    async def security_headers(response: Response) -> Response:
        response.headers["X-Content-Type-Options"] = "nosniff"
        response.headers["Referrer-Policy"] = "no-referrer"
        is_html = response.mimetype == "text/html"
        if is_html or request.path.startswith(static_prefix):
            extra = None
            if is_html and request.path in SCRIPT_EXEMPT_PATHS:
                extra = await _inline_script_hashes(response)
            response.headers["Content-Security-Policy"] = content_security_policy(extra)
        return response


async def _inline_script_hashes(response: Response) -> list[str]:
    body = await response.get_data(as_text=True)
    return [
        f"'sha256-{base64.b64encode(hashlib.sha256(s.encode()).digest()).decode()}'"
        for s in _INLINE_SCRIPT.findall(body)
    ]
