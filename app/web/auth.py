"""Bearer-token guards for write endpoints: constant-time comparison, 401 otherwise."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from functools import wraps
from typing import Any

from quart import Response, request

from app.settings import Settings
from app.web.errors import json_error
from app.web.state import service_state

Handler = Callable[..., Awaitable[Response]]


def bearer_token(setting: str, variable: str, what: str) -> Callable[[Handler], Handler]:
    """Requires ``Authorization: Bearer <settings.<setting>>``; the endpoints are
    disabled (always 401) while the setting is empty."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            settings: Settings = service_state().settings
            token = getattr(settings, setting)
            given = request.headers.get("Authorization", "").removeprefix("Bearer ").strip()
            if token is None:
                return unauthorized(f"{what} are disabled: {variable} is not set")
            if not hmac.compare_digest(given.encode(), token.encode()):
                return unauthorized(
                    f"a valid token is required for {what} (Authorization: Bearer …)"
                )
            return await handler(*args, **kwargs)

        return guarded

    return decorate


def unauthorized(message: str) -> Response:
    return json_error(401, "unauthorized", message, headers={"WWW-Authenticate": "Bearer"})


require_admin = bearer_token("admin_token", "VIRTUOSO_ADMIN_TOKEN", "operator endpoints")
require_api_token = bearer_token("api_token", "VIRTUOSO_API_TOKEN", "alert writes")
