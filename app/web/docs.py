"""Swagger UI for ``/docs`` served from the swagger-ui-bundle package, so the
docs work with no internet (quart-schema points at a CDN by default)."""

from __future__ import annotations

from pathlib import Path

from quart import Blueprint, Quart, Response, send_from_directory
from quart_schema import hide
from swagger_ui_bundle import swagger_ui_path

ASSETS_URL = "/docs/assets"

docs_assets = Blueprint("docs_assets", __name__)


@docs_assets.get(f"{ASSETS_URL}/<path:filename>")
@hide  # the docs page's scripts and styles, not part of the API
async def asset(filename: str) -> Response:
    return await send_from_directory(Path(swagger_ui_path), filename)


def serve_docs_locally(app: Quart) -> None:
    app.config["QUART_SCHEMA_SWAGGER_JS_URL"] = f"{ASSETS_URL}/swagger-ui-bundle.js"
    app.config["QUART_SCHEMA_SWAGGER_CSS_URL"] = f"{ASSETS_URL}/swagger-ui.css"
    app.register_blueprint(docs_assets)
