"""Bearer-token guards for write endpoints: constant-time comparison, 401 otherwise.

``Authorization: Bearer <token>`` (RFC 6750 §2.1): the scheme is required and
matched case-insensitively (RFC 9110 §11.1); blanks around the credentials and
between scheme and token are tolerated. A bare token, another scheme (``Basic``)
or a scheme without a token is refused.

Each guard also marks the view it wraps (``AUTH_ATTRIBUTE``; ``functools.wraps``
carries the mark through quart-schema's wrappers): the request guards
(``app.web.request_guards``) authenticate marked endpoints before any body is read,
and document their 401 and security scheme in ``/openapi.json``.
"""

from __future__ import annotations

import hmac
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from quart import Response, request

from app.state import service_state
from app.web.errors import json_error

Handler = Callable[..., Awaitable[Response]]

AUTH_ATTRIBUTE = "_virtuoso_token_requirement"

# auth-scheme (an RFC 9110 token), blanks, then one blank-free credential.
_CREDENTIALS = re.compile(r"[ \t]*([!#$%&'*+.^_`|~0-9A-Za-z-]+)[ \t]+([^ \t]+)[ \t]*")


def bearer_credentials(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header value, else None
    (missing header, no scheme, another scheme, no token, blanks inside the token)."""
    match = _CREDENTIALS.fullmatch(authorization or "")
    if match is None or match.group(1).lower() != "bearer":
        return None
    return match.group(2)


@dataclass(frozen=True)
class TokenRequirement:
    """One bearer token from the settings; ``scheme`` names it in the OpenAPI document."""

    setting: str
    variable: str
    what: str
    scheme: str

    def is_met(self) -> bool:
        """Whether the request carries the configured token (never while it is unset)."""
        token: str | None = getattr(service_state().settings, self.setting)
        given = bearer_credentials(request.headers.get("Authorization"))
        if token is None or given is None:
            return False
        return hmac.compare_digest(given.encode(), token.encode())

    def refusal(self) -> Response | None:
        """None when the request carries the configured token, else the 401 to answer.
        Always 401 while the setting is empty (the endpoints are disabled)."""
        token: str | None = getattr(service_state().settings, self.setting)
        if token is None:
            return unauthorized(f"{self.what} are disabled: {self.variable} is not set")
        if not self.is_met():
            given = bearer_credentials(request.headers.get("Authorization"))
            return unauthorized(
                f"a valid token is required for {self.what} (Authorization: Bearer …)",
                invalid_token=given is not None,
            )
        return None


def bearer_token(requirement: TokenRequirement) -> Callable[[Handler], Handler]:
    """A decorator that answers 401 unless ``requirement`` is met, and marks the view."""

    def decorate(handler: Handler) -> Handler:
        @wraps(handler)
        async def guarded(*args: Any, **kwargs: Any) -> Response:
            refused = requirement.refusal()
            if refused is not None:
                return refused
            return await handler(*args, **kwargs)

        setattr(guarded, AUTH_ATTRIBUTE, requirement)
        return guarded

    return decorate


def token_requirement(view: Callable[..., Any] | None) -> TokenRequirement | None:
    """The requirement a guard marked ``view`` with, if any."""
    return getattr(view, AUTH_ATTRIBUTE, None)


def unauthorized(message: str, invalid_token: bool = False) -> Response:
    """401 with ``WWW-Authenticate: Bearer`` (RFC 6750 §3: ``error="invalid_token"``
    when a bearer token was given but is not the right one)."""
    challenge = 'Bearer error="invalid_token"' if invalid_token else "Bearer"
    return json_error(401, "unauthorized", message, headers={"WWW-Authenticate": challenge})


ADMIN_TOKEN = TokenRequirement(
    "admin_token", "VIRTUOSO_ADMIN_TOKEN", "operator endpoints", "adminToken"
)
require_admin = bearer_token(ADMIN_TOKEN)
require_api_token = bearer_token(
    TokenRequirement("api_token", "VIRTUOSO_API_TOKEN", "alert writes", "apiToken")
)
