"""The dashboard JSON API: every route serves a stored view of the catalogue
(``app.services.catalogue``); none calls the exchange."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from pydantic import BaseModel
from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_querystring

from app.market.models.symbols import canonical_symbol
from app.services.catalogue import CANDLES, CONFLUENCE, FIXED_VIEWS
from app.state import service_state
from app.web import schemas
from app.web.errors import json_error
from app.web.responses import serve_view


def api_blueprint(timeframes: Sequence[str]) -> Blueprint:
    """One GET route per fixed view of the catalogue, plus the per-symbol views;
    ``timeframes``: the confluence timeframes a query may name (besides ``all``)."""
    api = Blueprint("api", __name__)
    for view in FIXED_VIEWS:
        endpoint = _view_endpoint(view.name, view.model)
        api.add_url_rule(
            view.route, endpoint=view.name.replace(":", "_"), view_func=endpoint, methods=["GET"]
        )
    _add_symbol_routes(api, timeframes)
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
        return await serve_view(view_name)

    endpoint.__doc__ = f"The `{view_name}` view of the latest market snapshot."
    return endpoint


def _add_symbol_routes(api: Blueprint, timeframes: Sequence[str]) -> None:
    query_model = schemas.confluence_query_model([*timeframes, "all"])

    @api.get(CONFLUENCE.route)
    @validate_querystring(query_model)
    @document_response(schemas.ErrorResponse, 404)
    @_documented(CONFLUENCE.model)
    async def confluence(symbol: str, query_args: schemas.ConfluenceQueryArgs) -> Response:
        """Confluence score of one symbol on one timeframe (``all``: across timeframes)."""
        canonical = known_symbol(symbol)
        if canonical is None:
            return unknown_symbol(symbol)
        issue = listing_issue(canonical)
        if issue is not None:  # no confluence for a pair no one can trade
            return not_listed(issue)
        return await serve_view(CONFLUENCE.named(canonical, query_args.timeframe))

    @api.get(CANDLES.route)
    @validate_querystring(schemas.CandlesQuery)
    @document_response(schemas.ErrorResponse, 404)
    @_documented(CANDLES.model)
    async def candles(symbol: str, query_args: schemas.CandlesQuery) -> Response:
        """OHLCV candles of one symbol (charts), computed on demand and cached."""
        canonical = known_symbol(symbol)
        if canonical is None:
            return unknown_symbol(symbol)
        view = CANDLES.named(canonical, query_args.timeframe)
        service_state().warmer.note_read(view)
        return await serve_view(view)


def known_symbol(text: str) -> str | None:
    """The canonical symbol if it is one this service serves."""
    try:
        canonical = canonical_symbol(text)
    except ValueError:
        return None
    return canonical if canonical in service_state().known_symbols else None


def listing_issue(symbol: str) -> dict | None:
    """The symbol's listing issue (``delisted`` or ``unserved``) as the latest refresh
    saw it, or None while the exchange lists and serves it."""
    return service_state().collector.listing_issue(symbol)


def not_listed(issue: dict) -> Response:
    """404 ``not_listed``: the exchange no longer lists or serves the symbol."""
    label = "no longer listed" if issue["status"] == "delisted" else "no longer served"
    message = f"{issue['symbol']} is {label}: {issue['reason']}"
    return json_error(404, "not_listed", message, listing=issue)


SHOWN_SYMBOL_CHARS = 40  # of an unknown symbol echoed back (symbols are ≤ 20)


def unknown_symbol(text: str) -> Response:
    """404 naming the symbol asked for (cut to ``SHOWN_SYMBOL_CHARS``) and the valid ones."""
    shown = text if len(text) <= SHOWN_SYMBOL_CHARS else text[:SHOWN_SYMBOL_CHARS] + "…"
    valid = service_state().known_symbols
    return json_error(404, "unknown_symbol", f"unknown symbol {shown!r}", valid=valid)
