"""The dashboard JSON API: every route reads a stored view; none calls the exchange."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_querystring

from app.market.models import canonical_symbol
from app.services.views import view_name_confluence
from app.settings import Settings
from app.web import schemas
from app.web.errors import json_error
from app.web.responses import serve_view
from app.web.state import service_state

# route → (stored view name, documented response model)
VIEW_ROUTES: dict[str, tuple[str, type[BaseModel]]] = {
    "/api/dashboard/data": ("dashboard:desktop", schemas.DesktopDashboard),
    "/api/dashboard/mobile": ("dashboard:mobile", schemas.MobileDashboard),
    "/api/dashboard/overview": ("dashboard:overview", schemas.DashboardOverview),
    "/api/dashboard/signals": ("dashboard:signals", schemas.SignalsResponse),
    "/api/market/overview": ("market:overview", schemas.MarketOverviewResponse),
    "/api/market/movers": ("market:movers", schemas.MoversResponse),
    "/api/bitcoin-beta": ("beta", schemas.BetaResponse),
    "/api/symbols": ("symbols", schemas.SymbolsResponse),
}


def api_blueprint(settings: Settings) -> Blueprint:
    api = Blueprint("api", __name__)
    for path, (view_name, model) in VIEW_ROUTES.items():
        endpoint = _view_endpoint(view_name, model)
        api.add_url_rule(
            path, endpoint=view_name.replace(":", "_"), view_func=endpoint, methods=["GET"]
        )
    _add_confluence_route(api, settings)
    return api


def _documented(model: type[BaseModel]) -> Callable[[Callable], Callable]:
    def decorate(func: Callable) -> Callable:
        func = document_response(model)(func)
        func = document_response(schemas.ErrorResponse, 503)(func)
        return tag(["dashboard data"])(func)

    return decorate


def _view_endpoint(view_name: str, model: type[BaseModel]) -> Callable:
    @_documented(model)
    async def endpoint() -> Response:
        return serve_view(view_name)

    endpoint.__doc__ = f"The `{view_name}` view of the latest market snapshot."
    return endpoint


def _add_confluence_route(api: Blueprint, settings: Settings) -> None:
    query_model = schemas.confluence_query_model([*settings.confluence.timeframes, "all"])

    @api.get("/api/confluence/<symbol>")
    @validate_querystring(query_model)
    @document_response(schemas.ErrorResponse, 404)
    @_documented(schemas.ConfluenceResponse)
    async def confluence(symbol: str, query_args: BaseModel) -> Response:
        """Confluence score of one symbol on one timeframe (``all``: across timeframes)."""
        state = service_state()
        try:
            canonical = canonical_symbol(symbol)
        except ValueError:
            canonical = ""
        if canonical not in state.known_symbols:
            return json_error(
                404,
                "unknown_symbol",
                f"unknown symbol {symbol!r}",
                valid=state.known_symbols,
            )
        return serve_view(view_name_confluence(canonical, query_args.timeframe))
