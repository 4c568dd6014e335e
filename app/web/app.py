"""The Quart application factory."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from quart import Quart
from quart_schema import Info, QuartSchema

from app.market.source import MarketSource
from app.market.sources import make_source
from app.services.pipeline import Pipeline
from app.services.view_store import LatestViews
from app.settings import Settings
from app.web.api import api_blueprint
from app.web.docs import serve_docs_locally
from app.web.errors import register_error_handlers
from app.web.health import health
from app.web.state import EXTENSION_KEY, ServiceState

log = logging.getLogger(__name__)


def create_app(
    settings: Settings, source: MarketSource | None = None, clock: Callable[[], float] = time.time
) -> Quart:
    """``source`` defaults to what the settings name; tests pass their own."""
    app = Quart(__name__)
    app.config["QUART_SCHEMA_CONVERSION_PREFERENCE"] = "pydantic"
    QuartSchema(
        app,
        info=Info(title="Virtuoso dashboards API", version="0.1.0"),
        redoc_ui_path=None,  # these two UIs load their scripts from a CDN
        scalar_ui_path=None,
    )
    serve_docs_locally(app)
    store = LatestViews()
    pipeline = Pipeline(settings, source or make_source(settings), store, clock=clock)
    app.extensions[EXTENSION_KEY] = ServiceState(settings, pipeline, store, clock, clock())
    app.register_blueprint(api_blueprint(settings))
    app.register_blueprint(health)
    register_error_handlers(app)

    @app.before_serving
    async def start_pipeline() -> None:
        _announce(settings)
        await pipeline.start()

    @app.after_serving
    async def stop_pipeline() -> None:
        await pipeline.stop()

    return app


def _announce(settings: Settings) -> None:
    if settings.exchange == "simulated":
        log.warning(
            "market data is SIMULATED (seed %d): set VIRTUOSO_EXCHANGE for a real "
            "exchange; cache: in-process only",
            settings.seed,
        )
    else:
        log.info(
            "market data from %s%s; cache: in-process only",
            settings.exchange,
            f" at {settings.exchange_url}" if settings.exchange_url else "",
        )
