"""Digests (a schedule that sends the top movers and the current signals to alert
channels): ``POST/GET /api/alerts/digests``, ``DELETE /api/alerts/digests/<id>``. Reads
are open; writes need VIRTUOSO_API_TOKEN (checked before the body is read). A store
that cannot be read or written (Redis down, disk full) answers 503 and changes nothing;
a digest beyond the cap is a 409. Every channel a digest names must be stored (400
naming the first unknown one)."""

from __future__ import annotations

from quart import Blueprint, Response
from quart_schema import document_response, tag, validate_request

from app.backends.errors import TierUnavailable
from app.services.alerts.digest_store import DigestStore, TooManyDigests
from app.services.alerts.digests import Digest, DigestInput
from app.state import service_state
from app.web import digest_schemas, schemas
from app.web.auth import require_api_token
from app.web.errors import json_error
from app.web.responses import no_store_json, store_down

STORE_ERRORS = (TierUnavailable, OSError)


def _store_down(error: Exception) -> Response:
    return store_down("digest_store_unavailable", "digests", str(error))


async def _missing_channels(channel_ids: list[str]) -> list[str]:
    """Those of ``channel_ids`` no channel has (all of them where channels are not kept).
    Raises the channel store's errors."""
    channels = service_state().alerts.channels
    return list(channel_ids) if channels is None else await channels.missing(channel_ids)


def digest_blueprint(store: DigestStore) -> Blueprint:
    """The digest routes over ``store``."""
    digests = Blueprint("digests", __name__)

    @digests.get("/api/alerts/digests")
    @tag(["alerts"])
    @document_response(digest_schemas.DigestsList)
    @document_response(schemas.ErrorResponse, 503)
    async def list_digests() -> Response:
        """Every digest, oldest first, with the slot each is next due at."""
        try:
            stored = await store.list_digests()
        except STORE_ERRORS as error:
            return _store_down(error)
        now_ms = service_state().now_ms()
        shown = [digest.public(now_ms) for digest in stored]
        return no_store_json({"digests": shown, "max_digests": store.max_digests})

    @digests.post("/api/alerts/digests")
    @tag(["alerts"])
    @require_api_token
    @validate_request(DigestInput)
    @document_response(digest_schemas.DigestCreated, 201)
    @document_response(schemas.ErrorResponse, 400)
    @document_response(schemas.ErrorResponse, 409)
    @document_response(schemas.ErrorResponse, 503)
    async def create_digest(data: DigestInput) -> Response:
        """Creates a digest: a name, 1-10 channel ids, every 15m, 1h, 4h or 1d; first
        due at the first slot after now; at most the cap (409 beyond); every channel
        stored (400 otherwise)."""
        state = service_state()
        now_ms = state.now_ms()
        digest = Digest.create(data, now_ms)
        try:
            missing = await _missing_channels(data.channels)
            if missing:
                shown = missing[0] if len(missing[0]) <= 40 else missing[0][:40] + "…"
                return json_error(400, "unknown_channel", f"channels: unknown channel {shown!r}")
            await store.add_digest(digest)
        except TooManyDigests as error:
            return json_error(409, "too_many_digests", str(error), max_digests=error.max_digests)
        except STORE_ERRORS as error:
            return _store_down(error)
        return no_store_json({"digest": digest.public(now_ms)}, status=201)

    @digests.delete("/api/alerts/digests/<digest_id>")
    @tag(["alerts"])
    @require_api_token
    @document_response(digest_schemas.DigestDeleted)
    @document_response(schemas.ErrorResponse, 404)
    @document_response(schemas.ErrorResponse, 503)
    async def delete_digest(digest_id: str) -> Response:
        try:
            deleted = await store.delete_digest(digest_id)
        except STORE_ERRORS as error:
            return _store_down(error)
        if not deleted:
            shown = digest_id if len(digest_id) <= 40 else digest_id[:40] + "…"
            return json_error(404, "unknown_digest", f"no digest {shown!r}")
        return no_store_json({"deleted": digest_id})

    return digests
