"""What every HTTP request meets before its view runs, in this order:

1. **No redirects.** A path the router would redirect (``//`` merged, a trailing
   slash added) is 404: werkzeug builds such a ``Location`` from the request's
   ``Host``, which a client chooses. Any path holding ``//`` is 404 too.
2. **Authentication first** (after the rate limiter, so guessing tokens is
   throttled). An endpoint guarded by ``require_admin`` / ``require_api_token``
   answers 401 before its body is looked at (no 400, 413 or 415 tells an
   unauthenticated client anything, and nothing is parsed for it).
3. **JSON bodies** (endpoints whose request body quart-schema validates):
   ``Content-Type`` must be ``application/json`` or ``application/*+json`` (any
   parameters; a ``charset`` must be UTF-8, RFC 8259 §8.1), else 415 — a missing
   ``Content-Type`` included. A body over ``MAX_BODY_BYTES`` is 413 before it is
   read (declared length) or as soon as it exceeds it (chunked).
4. **Strict parsing** (``StrictJsonRequest``): the body is parsed from its bytes
   with orjson (RFC 8259: UTF-8 only, no BOM, no NaN/Infinity, no lone surrogates,
   no trailing data, numbers that fit a double) and at most ``MAX_JSON_DEPTH`` levels
   deep. Anything refused is a 400 ``invalid_json``, never a 500 nor a logged
   traceback. Duplicate keys: the last one wins.

The OpenAPI document says so: ``GuardedOpenAPIProvider`` adds these answers (and
401, the bearer security schemes, 429 where rate limits apply, bodiless answers) to
the operations they apply to.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from quart import Quart, Request, Response, current_app, request
from quart_schema import DataSource
from quart_schema.openapi import OpenAPIProvider
from quart_schema.validation import (
    QUART_SCHEMA_QUERYSTRING_ATTRIBUTE,
    QUART_SCHEMA_REQUEST_ATTRIBUTE,
)
from werkzeug.routing import RequestRedirect, Rule

from app.state import EXTENSION
from app.web import schemas
from app.web.auth import token_requirement
from app.web.errors import ApiError, json_error

# The largest legitimate body (an alert rule) is about 2 KB.
MAX_BODY_BYTES = 64 * 1024
MAX_JSON_DEPTH = 32  # bodies of this API are 3 levels deep at most

BODILESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
NO_CONTENT_ATTRIBUTE = "_virtuoso_no_content"


class StrictJsonRequest(Request):
    """Quart's request with ``get_json`` parsing the raw bytes strictly (see the
    module docstring); a refused body raises ``ApiError`` 400 ``invalid_json``."""

    async def get_json(self, force: bool = False, silent: bool = False, cache: bool = True) -> Any:
        """The parsed body; None when it is not declared JSON (unless ``force``), or
        when it is refused and ``silent``. Raises 400 (413 past the size limit)."""
        if not (force or self.is_json):
            return None
        # parse_form_data given (its default) so Quart's bytes overload applies.
        data = await self.get_data(cache=cache, as_text=False, parse_form_data=False)
        try:
            return parse_json(data)
        except ApiError:
            if silent:
                return None
            raise

    def on_json_loading_failed(self, error: Exception | None) -> Any:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}")


def parse_json(data: bytes) -> Any:
    """Parses a JSON text (RFC 8259) strictly; raises ``ApiError`` 400 ``invalid_json``."""
    try:
        value = orjson.loads(data)
    except orjson.JSONDecodeError as error:
        raise ApiError(400, "invalid_json", f"the body is not valid JSON: {error}") from None
    if nested_deeper_than(value, MAX_JSON_DEPTH):
        raise ApiError(
            400, "invalid_json", f"the body is nested deeper than {MAX_JSON_DEPTH} levels"
        )
    return value


def nested_deeper_than(value: Any, limit: int) -> bool:
    """True when arrays/objects nest more than ``limit`` levels (iterative: no recursion)."""
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def json_media_type_problem(content_type: str | None) -> str | None:
    """Why a ``Content-Type`` is not an acceptable JSON one, or None when it is."""
    if not content_type:
        return "a JSON body needs Content-Type: application/json"
    mimetype, _, parameters = content_type.partition(";")
    mimetype = mimetype.strip().lower()
    kind, _, subtype = mimetype.partition("/")
    suffixed = subtype.endswith("+json") and len(subtype) > len("+json")
    if kind != "application" or not (subtype == "json" or suffixed):
        return f"Content-Type {mimetype or '(empty)'} is not accepted; send application/json"
    for parameter in parameters.split(";"):
        name, _, value = parameter.partition("=")
        charset = value.strip().strip('"').lower()
        if name.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            return f"JSON is UTF-8 (RFC 8259 §8.1); charset {charset!r} is not accepted"
    return None


def takes_json_body(view: Callable[..., Any] | None) -> bool:
    """Whether quart-schema validates a JSON body for ``view``."""
    declared = getattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE, None)
    return declared is not None and declared[1] == DataSource.JSON


async def guard_request() -> Response | None:
    """The ``before_request`` hook: the checks 1–3 of the module docstring, in order."""
    if isinstance(request.routing_exception, RequestRedirect) or "//" in request.scope["path"]:
        # werkzeug would redirect "/a//b" (merged) and silently serve "//a" (its
        # request.path drops leading slashes, so the raw scope path is checked): neither.
        return json_error(404, "not_found", "no such path (paths are never redirected)")
    if request.method == "OPTIONS":
        return None
    view = current_app.view_functions.get(request.endpoint or "")
    requirement = token_requirement(view)
    if requirement is not None:
        refused = requirement.refusal()
        if refused is not None:
            return refused
    if request.method in BODILESS_METHODS or not takes_json_body(view):
        return None
    problem = json_media_type_problem(request.headers.get("Content-Type"))
    if problem is not None:
        return json_error(415, "unsupported_media_type", problem)
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        return body_too_large()
    return None


def body_too_large() -> Response:
    return json_error(
        413, "content_too_large", f"request bodies are limited to {MAX_BODY_BYTES} bytes"
    )


def no_content(view: Callable[..., Any]) -> Callable[..., Any]:
    """Documents that ``view`` answers 204 with no body (quart-schema can only
    document JSON bodies)."""
    setattr(view, NO_CONTENT_ATTRIBUTE, True)
    return view


class GuardedOpenAPIProvider(OpenAPIProvider):
    """quart-schema's OpenAPI document plus what the guards (and the rate limiter)
    answer on each operation, and the bearer security schemes."""

    def build_paths(self, rule: Rule) -> tuple[dict, dict]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        extra: dict[int, str] = {}
        requirement = token_requirement(view)
        if requirement is not None:
            extra[401] = f"missing or wrong token ({requirement.variable})"
        if getattr(view, QUART_SCHEMA_QUERYSTRING_ATTRIBUTE, None) is not None:
            extra[400] = "the query string is not valid"
        if takes_json_body(view):
            extra |= {
                400: "the body is not valid JSON, or not a valid request",
                413: f"the body is over {MAX_BODY_BYTES} bytes",
                415: "the body is not declared application/json",
            }
        if self._rate_limited(rule.rule):
            extra[429] = "too many requests from this client; see Retry-After"
        error_object, error_components = self.build_response_object(schemas.ErrorResponse, None)
        components.update(error_components)
        for operation in (op for ops in paths.values() for op in ops.values()):
            responses = operation["responses"]
            if getattr(view, NO_CONTENT_ATTRIBUTE, False):
                responses.setdefault(204, {"description": "done; no body"})
            for status, description in extra.items():
                responses.setdefault(status, error_object | {"description": description})
            if requirement is not None:
                operation["security"] = [{requirement.scheme: []}]
        return paths, components

    def schema(self) -> dict:
        document = super().schema()
        bearer = {"type": "http", "scheme": "bearer"}
        document["components"]["securitySchemes"] = {
            "adminToken": bearer | {"description": "VIRTUOSO_ADMIN_TOKEN"},
            "apiToken": bearer | {"description": "VIRTUOSO_API_TOKEN"},
        }
        return document

    def _rate_limited(self, path: str) -> bool:
        state = self._app.extensions.get(EXTENSION)
        limiter = getattr(state, "rate_limiter", None)
        return limiter is not None and limiter.family_for(path) is not None


def install_request_guards(app: Quart) -> None:
    """Installs the guards, the strict request class, the body size limit and the
    OpenAPI additions. Call after the blueprints are registered and QuartSchema set up."""
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.request_class = StrictJsonRequest
    app.before_request(guard_request)  # after the rate limiter: token guessing is throttled
    extension = app.extensions["QUART_SCHEMA"]
    extension.openapi_provider = GuardedOpenAPIProvider(app, extension)
