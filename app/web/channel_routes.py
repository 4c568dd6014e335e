"""Notification channels: ``/api/alerts/channels``. Every route needs
VIRTUOSO_API_TOKEN (a channel's type and destination say where alerts go). A channel's
URL is never answered: responses show its type and masked destination at most. Bad
input is a 400, a destination the policy refuses a 400 naming the host, beyond the cap
a 409, a channel rules still name a 409 listing them; a store that cannot be read or
written answers 503 and changes nothing. The test endpoint sends one message now:
200 ``{"delivered": true}`` or 502 with the reason."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_request

from app.backends.errors import TierUnavailable
from app.services.alerts.channel_service import ChannelInUse, ChannelService
from app.services.alerts.channel_store import TooManyChannels
from app.services.alerts.channels import ChannelInput
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationRefused
from app.state import service_state
from app.web import channel_schemas as docs
from app.web import schemas
from app.web.auth import require_api_token
from app.web.errors import json_error
from app.web.responses import no_store_json, store_down

channels = Blueprint("channels", __name__)

STORE_ERRORS = (TierUnavailable, OSError)


def _service() -> ChannelService:
    service = service_state().alerts.channels
    assert service is not None, "the alert service is built with its channels"
    return service


def _store_down(error: Exception) -> Response:
    return store_down("channel_store_unavailable", "channels", type(error).__name__)


def _unknown(channel_id: str) -> Response:
    shown = channel_id if len(channel_id) <= 40 else channel_id[:40] + "…"
    return json_error(404, "unknown_channel", f"no channel {shown!r}")


@channels.get("/api/alerts/channels")
@tag(["alerts"])
@require_api_token
@document_response(docs.ChannelsList)
@document_response(schemas.ErrorResponse, 503)
async def list_channels() -> Response:
    """Every channel, oldest first: id, name, type and masked destination."""
    try:
        found = await _service().list_channels()
    except STORE_ERRORS as error:
        return _store_down(error)
    return no_store_json({"channels": [c.public_dict() for c in found], "total": len(found)})


@channels.post("/api/alerts/channels")
@tag(["alerts"])
@require_api_token
@validate_request(ChannelInput)
@document_response(docs.ChannelCreated, 201)
@document_response(schemas.ErrorResponse, 409)
@document_response(schemas.ErrorResponse, 503)
async def create_channel(data: ChannelInput) -> Response:
    """Creates a channel from a name and an Apprise URL; every server it will connect
    to must be a public destination (or on VIRTUOSO_WEBHOOK_ALLOW)."""
    try:
        channel = await _service().create(data)
    except ValueError as error:
        return json_error(400, "invalid_channel", f"url: {error}")
    except DestinationRefused as error:
        return json_error(400, "destination_refused", f"url: {error}")
    except TooManyChannels as error:
        return json_error(409, "too_many_channels", str(error), max_channels=error.max_channels)
    except STORE_ERRORS as error:
        return _store_down(error)
    return no_store_json({"channel": channel.public_dict()}, status=201)


@channels.delete("/api/alerts/channels/<channel_id>")
@tag(["alerts"])
@require_api_token
@document_response(docs.ChannelDeleted)
@document_response(schemas.ErrorResponse, 404)
@document_response(docs.ChannelInUse, 409)
@document_response(schemas.ErrorResponse, 503)
async def delete_channel(channel_id: str) -> Response:
    """Deletes a channel no rule or digest names (409 with their ids otherwise)."""
    try:
        deleted = await _service().delete(channel_id)
    except ChannelInUse as error:
        return json_error(
            409,
            "channel_in_use",
            str(error),
            rule_ids=error.rule_ids,
            digest_ids=error.digest_ids,
        )
    except STORE_ERRORS as error:
        return _store_down(error)
    if not deleted:
        return _unknown(channel_id)
    return no_store_json({"deleted": channel_id})


@channels.post("/api/alerts/channels/<channel_id>/test")
@tag(["alerts"])
@require_api_token
@document_response(docs.TestDelivered)
@document_response(schemas.ErrorResponse, 404)
@document_response(docs.TestFailed, 502)
@document_response(schemas.ErrorResponse, 503)
async def test_channel(channel_id: str) -> Response:
    """Sends a test message to the channel now (its destination checked again), within
    the channel time-out: 200 delivered, or 502 with the reason."""
    try:
        channel = await _service().get(channel_id)
    except STORE_ERRORS as error:
        return _store_down(error)
    if channel is None:
        return _unknown(channel_id)
    try:
        await _service().send_test(channel)
    except DeliveryFailed as failure:
        body = {"delivered": False, "reason": failure.reason, "retryable": failure.retryable}
        return no_store_json(body, status=502)
    return no_store_json({"delivered": True})
