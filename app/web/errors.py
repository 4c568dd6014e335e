"""JSON errors: every error response is ``{"error": code, "message": text, ...}``.

No traceback ever reaches a client: unexpected exceptions are logged and
answered with a plain 500 JSON body.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from quart import Quart, Response
from quart_schema import RequestSchemaValidationError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


# Codes for statuses whose werkzeug name is dated (RFC 9110 §15.5.14 renamed 413).
_CODES = {413: "content_too_large"}


class ApiError(HTTPException):
    """An HTTP error with its own ``error`` code, raised where returning is awkward
    (inside the request object, deep in a helper); answered as JSON like the rest."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(description=message)
        self.code = status
        self.error_code = code


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """``{"error": code, "message": message, **extra}`` with ``status``."""
    body = orjson.dumps({"error": code, "message": message, **extra})
    return Response(body, status=status, content_type="application/json", headers=headers)


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        problems = _validation_problems(error.validation_error)
        return json_error(400, "invalid_request", "; ".join(problems), problems=problems)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        status = error.code or 500
        code = getattr(error, "error_code", None) or _CODES.get(status)
        code = code or (error.name or "error").lower().replace(" ", "_")
        return json_error(status, code, error.description or error.name or "error")

    @app.errorhandler(Exception)
    async def unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return json_error(500, "internal_error", "the server failed to answer this request")


def _validation_problems(error: Any) -> list[str]:
    """``field: message`` lines from a pydantic ValidationError (or whatever quart-schema holds)."""
    errors = getattr(error, "errors", None)
    if not callable(errors):
        return [str(error)]
    return [
        f"{'.'.join(str(part) for part in item['loc']) or 'request'}: "
        f"{str(item['msg']).removeprefix('Value error, ')}"
        for item in errors()
    ]
