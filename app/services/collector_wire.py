"""The wire between the serving processes and the collector, over Redis.

Both sides import this module and nothing else of each other. Three things travel:

- **Requests** (server → collector) on the pub/sub channel ``<ns>:collector:requests``:
  a cold read that needs the exchange (``candles`` of a symbol and timeframe, a
  ``refresh`` when no copy of the views is left in any tier) or a ``republish`` of the
  views after the alerts changed. Only the leading collector listens, so a request
  published to no listener fails at once ("no collector is listening").
- **Replies** (collector → the asking server) on ``<ns>:collector:replies:<replica>``:
  a JSON header line, then the body's bytes (a candles view) unchanged.
- **Status** (collector → every server) in the key ``<ns>:collector:status``, rewritten
  every second with an expiry: the refreshes' status, the symbols collected, the
  exchange's breakers and a heartbeat. A server that stops seeing it knows the
  collector is gone.

Messages are orjson; anything malformed raises :class:`WireError` (the receiver drops
it and counts it, never crashes).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import orjson
from pydantic import TypeAdapter

from app.market.errors import MarketDataError
from app.services.collector_link import CollectorStatus

REQUEST_KINDS = ("refresh", "candles", "republish")
_STATUS = TypeAdapter(CollectorStatus)
_BREAKERS = TypeAdapter(dict[str, dict[str, Any]])
_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


class WireError(ValueError):
    """A message on the collector's wire that cannot be read (not JSON, wrong shape)."""


class CollectorUnavailable(MarketDataError):
    """The collector could not answer: none is listening, it did not answer in time, or
    it answered that it could not. The data it was asked for cannot be had now.
    ``outcome``: ``unavailable`` (nothing to send to), ``timeout`` or ``refused``."""

    def __init__(self, message: str, outcome: str = "unavailable") -> None:
        super().__init__(message)
        self.outcome = outcome


@dataclass(frozen=True, slots=True)
class CollectorChannels:
    """The Redis names of one deployment's wire (every one carries ``namespace``)."""

    namespace: str

    @property
    def requests(self) -> str:
        """The channel the leading collector listens on."""
        return f"{self.namespace}:collector:requests"

    @property
    def status(self) -> str:
        """The key holding the collector's latest status report."""
        return f"{self.namespace}:collector:status"

    def replies(self, replica: str) -> str:
        """The channel a server (``replica``) hears its replies on."""
        return f"{self.namespace}:collector:replies:{replica}"


@dataclass(frozen=True, slots=True)
class Request:
    """One question to the collector. ``id``: unique per request of the asking replica;
    ``reply_to``: the asking replica's id; ``deadline_ms``: epoch ms after which the
    asker no longer waits (the collector drops it); ``args``: per kind —
    ``refresh`` ``{force: bool}``, ``candles`` ``{symbol, timeframe}``, ``republish``
    ``{fresh_within: seconds | None}``."""

    id: str
    kind: str
    reply_to: str
    deadline_ms: int
    args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Reply:
    """The collector's answer to request ``id``: ``ok`` with ``body`` (bytes; the view for
    ``candles``, ``b"true"``/``b"false"`` for ``republish``) and ``generated_at_ms``; or not
    ``ok`` with ``error`` (the reason, in words fit for a 503 body)."""

    id: str
    ok: bool
    body: bytes = b""
    generated_at_ms: int = 0
    error: str | None = None


@dataclass(slots=True)
class StatusReport:
    """What the collector tells every server each second. ``symbols``: those collected
    (None before its source started); ``breakers``: ``"<exchange>:<operation>"`` →
    breaker snapshot; ``source``: the source's name; ``collector_id``: which collector
    wrote it; ``heartbeat_ms``: when (epoch ms)."""

    status: CollectorStatus
    symbols: list[str] | None
    breakers: dict[str, dict]
    source: str
    collector_id: str
    heartbeat_ms: int


Received = Callable[[bytes], Awaitable[None] | None]  # a handler of one raw message


class ServerEnd(Protocol):
    """How a server reaches its collector: over Redis (``wire_redis``) or over the local
    channel to its own child (``wire_channel``)."""

    @property
    def listening(self) -> bool:
        """True while replies can reach this server."""
        ...

    def start(self, on_reply: Received, on_status: Received) -> None:
        """Hands every reply and every status report (raw) to the handlers."""
        ...

    async def send(self, payload: bytes) -> None:
        """Sends an encoded request. Raises CollectorUnavailable when no collector can
        receive it."""
        ...

    async def close(self) -> None:
        """Stops listening."""
        ...


class CollectorEnd(Protocol):
    """How the collector hears the servers and answers them."""

    def start(self, on_request: Received) -> None:
        """Hands every request (raw) to ``on_request``."""
        ...

    def wait_listening(self, seconds: float) -> Awaitable[bool]:
        """True once requests can arrive, False after ``seconds``."""
        ...

    async def reply(self, reply_to: str, payload: bytes) -> None:
        """Sends an encoded reply to the server named ``reply_to``. Raises
        TierUnavailable or ChannelError when it cannot."""
        ...

    async def report(self, payload: bytes) -> None:
        """Publishes an encoded status report. Raises TierUnavailable or ChannelError."""
        ...

    async def close(self) -> None:
        """Stops listening."""
        ...


def encode_request(request: Request) -> bytes:
    """The request as sent (JSON bytes)."""
    return orjson.dumps(dataclasses.asdict(request))


def decode_request(raw: bytes) -> Request:
    """The request of ``raw``; WireError when it is not one."""
    data = _object(raw)
    try:
        request = Request(
            id=str(data["id"]),
            kind=str(data["kind"]),
            reply_to=str(data["reply_to"]),
            deadline_ms=int(data["deadline_ms"]),
            args=dict(data.get("args") or {}),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"not a collector request: {error}") from None
    if request.kind not in REQUEST_KINDS:
        raise WireError(f"unknown request kind {request.kind[:32]!r}")
    if not (_ID.fullmatch(request.id) and _ID.fullmatch(request.reply_to)):
        raise WireError("request id or reply_to malformed")
    return request


def encode_reply(reply: Reply) -> bytes:
    """A JSON header line (id, ok, generated_at_ms, error), then the body unchanged."""
    head = {"id": reply.id, "ok": reply.ok, "at": reply.generated_at_ms, "error": reply.error}
    return orjson.dumps(head) + b"\n" + reply.body


def decode_reply(raw: bytes) -> Reply:
    """The reply of ``raw``; WireError when it is not one."""
    head, _, body = raw.partition(b"\n")
    data = _object(head)
    try:
        return Reply(
            id=str(data["id"]),
            ok=bool(data["ok"]),
            body=body,
            generated_at_ms=int(data["at"]),
            error=None if data.get("error") is None else str(data["error"]),
        )
    except (KeyError, TypeError, ValueError) as error:
        raise WireError(f"not a collector reply: {error}") from None


def encode_status(report: StatusReport) -> bytes:
    """The status report as stored (JSON bytes)."""
    return orjson.dumps(dataclasses.asdict(report))


def decode_status(raw: bytes) -> StatusReport:
    """The status report of ``raw``; WireError when it is not one (e.g. written by a
    collector of another version with other fields)."""
    data = _object(raw)
    try:
        known = {f.name for f in dataclasses.fields(CollectorStatus)}
        fields = {k: v for k, v in data["status"].items() if k in known}
        status = _STATUS.validate_python(fields)  # types too: a server reads every field
        symbols = data["symbols"]
        return StatusReport(
            status=status,
            symbols=None if symbols is None else [str(s) for s in symbols],
            breakers=_BREAKERS.validate_python(data["breakers"]),
            source=str(data["source"]),
            collector_id=str(data["collector_id"]),
            heartbeat_ms=int(data["heartbeat_ms"]),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as error:  # ValidationError too
        raise WireError(f"not a collector status: {' '.join(str(error).split())[:200]}") from None


def _object(raw: bytes) -> dict[str, Any]:
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise WireError(f"not JSON: {error}") from None
    if not isinstance(data, dict):
        raise WireError("not a JSON object")
    return data
