"""Alert rules and alerts: reads are open (the list is cached and invalidated on
every change), writes need VIRTUOSO_API_TOKEN (checked before the body is read).
Every route asks the alert service (``app.services.alerts.service``), which stores,
invalidates and announces. A store that cannot be written (Redis down, disk full)
answers 503 and changes nothing. Rules are shown with their webhook URL masked
(``scheme://host/…``); a webhook whose destination the policy refuses is a 400, a rule
beyond the cap a 409. Every status change is announced live; an impossible one (e.g.
acknowledged already, from another device) is a 409 carrying the alert's current
state. Each alert's deliveries (its rule's channels and webhook, through the outbox)
are listed with their status at ``/api/alerts/<id>/deliveries``."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_querystring, validate_request

from app.backends.errors import TierUnavailable
from app.cache.layered import NothingToServe
from app.market.models.symbols import canonical_symbol
from app.services.alerts.destinations import DestinationRefused
from app.services.alerts.rules import RuleInput
from app.services.alerts.store import TooManyRules
from app.state import service_state
from app.web import schemas
from app.web.auth import require_api_token
from app.web.errors import json_error
from app.web.responses import no_store_json, store_down, view_response

alerts = Blueprint("alerts", __name__)

STORE_ERRORS = (TierUnavailable, OSError)


class AlertQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: Literal["pending", "acknowledged", "resolved"] | None = None
    symbol: str | None = Field(default=None, max_length=24)
    level: Literal["info", "warning", "critical"] | None = None
    offset: int = Field(default=0, ge=0, le=100_000)
    limit: int = Field(default=50, ge=1, le=200)


class RuleQuery(BaseModel):
    model_config = ConfigDict(extra="forbid")
    offset: int = Field(default=0, ge=0, le=100_000)
    limit: int = Field(default=50, ge=1, le=200)


def _shown_id(text: str) -> str:
    """An id as a message may repeat it: at most 40 characters (ids are 12)."""
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _store_down(error: Exception) -> Response:
    return store_down("alert_store_unavailable", "alerts", str(error))


@alerts.get("/api/alerts/rules")
@tag(["alerts"])
@validate_querystring(RuleQuery)
@document_response(schemas.RulesPage)
@document_response(schemas.ErrorResponse, 503)
async def list_rules(query_args: RuleQuery) -> Response:
    """Alert rules, oldest first, paginated; webhook URLs masked to scheme and host."""
    try:
        rules = await service_state().alerts.list_rules()
    except STORE_ERRORS as error:
        return _store_down(error)
    page = rules[query_args.offset : query_args.offset + query_args.limit]
    return no_store_json(
        {
            "rules": [service_state().alerts.public_rule(rule) for rule in page],
            "total": len(rules),
            "offset": query_args.offset,
            "limit": query_args.limit,
        }
    )


@alerts.post("/api/alerts/rules")
@tag(["alerts"])
@require_api_token
@validate_request(RuleInput)
@document_response(schemas.RuleCreated, 201)
@document_response(schemas.ErrorResponse, 409)
@document_response(schemas.ErrorResponse, 503)
async def create_rule(data: RuleInput) -> Response:
    """Creates a rule: a known symbol (or none: every symbol), finite numbers, bounded
    text, a webhook to a public destination; at most the rule cap (409 beyond)."""
    state = service_state()
    try:
        rule = await state.alerts.create_rule(data, state.known_symbols, state.unserved_symbols)
    except ValueError as error:
        return json_error(400, "invalid_rule", str(error))
    except DestinationRefused as error:
        return json_error(400, "webhook_refused", f"webhook_url: {error}")
    except TooManyRules as error:
        return json_error(409, "too_many_rules", str(error), max_rules=error.max_rules)
    except STORE_ERRORS as error:
        return _store_down(error)
    return no_store_json({"rule": state.alerts.public_rule(rule)}, status=201)


@alerts.delete("/api/alerts/rules/<rule_id>")
@tag(["alerts"])
@require_api_token
@document_response(schemas.RuleDeleted)
@document_response(schemas.ErrorResponse, 404)
@document_response(schemas.ErrorResponse, 503)
async def delete_rule(rule_id: str) -> Response:
    try:
        deleted = await service_state().alerts.delete_rule(rule_id)
    except STORE_ERRORS as error:
        return _store_down(error)
    if not deleted:
        return json_error(404, "unknown_rule", f"no rule {_shown_id(rule_id)}")
    return no_store_json({"deleted": rule_id})


@alerts.get("/api/alerts")
@tag(["alerts"])
@validate_querystring(AlertQuery)
@document_response(schemas.AlertsPage)
@document_response(schemas.ErrorResponse, 503)
async def list_alerts(query_args: AlertQuery) -> Response:
    """Alerts, newest first, filtered by status, symbol and level; paginated; cached."""
    state = service_state()
    if query_args.symbol is not None:
        try:
            query_args.symbol = canonical_symbol(query_args.symbol)
        except ValueError as error:
            return json_error(400, "invalid_request", f"symbol: {error}")
    try:
        read = await state.alerts.alerts_page(**query_args.model_dump())
    except NothingToServe as error:
        return _store_down(error)
    return view_response(read, state.now_ms())


@alerts.get("/api/alerts/<alert_id>/deliveries")
@tag(["alerts"])
@document_response(schemas.AlertDeliveries)
@document_response(schemas.ErrorResponse, 404)
@document_response(schemas.ErrorResponse, 503)
async def alert_deliveries(alert_id: str) -> Response:
    """Where each delivery of the alert stands: pending (with its next attempt),
    delivered, or failed with the reason and the attempts made; never a destination."""
    state = service_state()
    try:
        alert = await state.alerts.get_alert(alert_id)
        found = [] if alert is None else await state.alerts.deliveries_of(alert_id)
    except STORE_ERRORS as error:
        return _store_down(error)
    if alert is None:
        return json_error(404, "unknown_alert", f"no alert {_shown_id(alert_id)}")
    return no_store_json({"alert_id": alert_id, "deliveries": found})


@alerts.post("/api/alerts/<alert_id>/ack")
@tag(["alerts"])
@require_api_token
@document_response(schemas.AlertChanged)
@document_response(schemas.ErrorResponse, 404)
@document_response(schemas.ErrorResponse, 409)
@document_response(schemas.ErrorResponse, 503)
async def acknowledge(alert_id: str) -> Response:
    return await _set_status(alert_id, "acknowledged")


@alerts.post("/api/alerts/<alert_id>/resolve")
@tag(["alerts"])
@require_api_token
@document_response(schemas.AlertChanged)
@document_response(schemas.ErrorResponse, 404)
@document_response(schemas.ErrorResponse, 409)
@document_response(schemas.ErrorResponse, 503)
async def resolve(alert_id: str) -> Response:
    return await _set_status(alert_id, "resolved")


async def _set_status(alert_id: str, status: str) -> Response:
    """Moves the alert to ``status`` and announces it (live on every replica and page).
    An impossible move (already acknowledged or resolved, maybe by someone else) is a
    409 ``invalid_transition`` whose body also carries the alert as it is now."""
    state = service_state()
    try:
        alert = await state.alerts.set_status(alert_id, status, state.now_ms())
    except ValueError as error:
        return await _impossible_move(alert_id, error)
    except STORE_ERRORS as error:
        return _store_down(error)
    if alert is None:
        return json_error(404, "unknown_alert", f"no alert {_shown_id(alert_id)}")
    return no_store_json({"alert": alert.to_dict()})


async def _impossible_move(alert_id: str, error: ValueError) -> Response:
    """409 with the alert's current state (``"alert": null`` if it cannot be read)."""
    try:
        current = await service_state().alerts.get_alert(alert_id)
    except STORE_ERRORS:
        current = None
    body = None if current is None else current.to_dict()
    return json_error(409, "invalid_transition", str(error), alert=body)
