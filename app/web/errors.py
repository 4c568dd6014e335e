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


def json_error(
    status: int, code: str, message: str, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    body = orjson.dumps({"error": code, "message": message, **extra})
    return Response(body, status=status, content_type="application/json", headers=headers)


def register_error_handlers(app: Quart) -> None:
    @app.errorhandler(RequestSchemaValidationError)
    async def invalid_request(error: RequestSchemaValidationError) -> Response:
        problems = _validation_problems(error.validation_error)
        return json_error(400, "invalid_request", "; ".join(problems), problems=problems)

    @app.errorhandler(HTTPException)
    async def http_error(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        return json_error(error.code or 500, code, error.description or error.name or "error")

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
        f"{'.'.join(str(part) for part in item['loc']) or 'request'}: {item['msg']}"
        for item in errors()
    ]
