"""The WebSocket protocol of ``/ws``: JSON text frames, one message per frame (a binary
frame holding the same UTF-8 JSON is read the same way).

Client → server::

    {"type": "subscribe",   "channels": ["market", ...], "symbols": ["BTCUSDT", ...]}
    {"type": "unsubscribe", "channels": ["market", ...], "symbols": ["BTCUSDT", ...]}
    {"type": "resync",      "channels": ["market", ...]}
    {"type": "pong",        "nonce": <the heartbeat's nonce>}
    {"type": "ping"}

``symbols`` is optional: without it a subscription covers every symbol of those
channels (and ``unsubscribe`` drops the channels entirely). Symbols are accepted as
``BTCUSDT``, ``btc/usdt`` or ``BTC-USDT`` and answered as ``BTCUSDT``. ``resync``
re-sends a snapshot of channels already subscribed.

Server → client::

    {"type": "snapshot", "channel": c, "items": [{"symbol": s, "seq": n,
                                                 "generated_at": t, "data": {...}}, ...]}
    {"type": "update", "channel": c, "symbol": s | null, "seq": n, "generated_at": t,
     "published_at": p, "data": {...}}
    {"type": "alert", "channel": "alerts", "symbol": s | null, "seq": n, "generated_at": t,
     "published_at": p, "data": {...}}
    {"type": "heartbeat", "nonce": n, "server_time": t}
    {"type": "pong", "server_time": t}                       (the answer to "ping")
    {"type": "error", "code": "...", "message": "..."}

Channels: market, confluence, signals, beta, alerts, dashboard. A snapshot answers
every subscribe (one per channel, with the latest value of each newly subscribed
(channel, symbol); ``items`` may be empty) and every resync. The alerts channel is
the exception: its snapshot holds the recent alerts themselves (at most
``ALERTS_KEPT``, the newest by ``created_at_ms``, newest first; of the subscribed
symbols), one item per alert with its current status — ``seq`` 0 and
``generated_at`` its latest change for an alert known from the alert store only.
An ``alert`` message is sent for every new alert and for every status change
(acknowledged, resolved): ``data`` is the whole alert, and the newer status
replaces the older one (statuses only move forward: pending → acknowledged →
resolved, or pending → resolved). ``seq`` is per channel,
shared by every replica, and grows by 1 per published message; ``generated_at`` is
epoch milliseconds of the data; ``server_time`` is the server's clock in epoch
seconds — the same clock as ``generated_at``, so a client can tell the data's age
whatever its own clock says; ``published_at`` is when the message was published
(epoch seconds, wall clock), for measuring delivery latency. An update with
``"symbol": null`` concerns the whole
channel and reaches every subscriber of the channel. A client that sees a seq that is
not last + 1 for a channel it follows completely missed messages (or, per symbol,
received a coalesced one): it may send ``resync``. After a Redis outage the sequence
may restart; treat a lower seq as a reason to resync too.

Slow clients: updates of one (channel, symbol) waiting to be sent are replaced by the
newer one (coalesced); alerts are never dropped or coalesced. Sending order: replies
(snapshot, error, pong) > alerts > updates > heartbeats.

Heartbeat: every ``heartbeat_seconds`` the server sends a heartbeat; the client answers
``{"type": "pong", "nonce": <same nonce>}`` within ``pong_timeout`` or is closed.

Error codes: ``bad_json``, ``too_large``, ``bad_message`` (not an object, missing or
wrongly typed field), ``unknown_type``, ``unknown_channel``, ``unknown_symbol``,
``too_many_subscriptions``, ``not_subscribed``, ``rate_limited`` (more client messages
than ``message_burst`` at once or ``message_rate`` per second; every message, of any
type, counts). Each of these messages counts towards the abuse limit
(``max_bad_messages`` within ``bad_message_window`` → close 1008).

Replies are coalesced: a snapshot of a channel still waiting to be sent is replaced
by the newer one (a pong by the newer pong), so repeated requests never pile up.

Handshakes refused before the upgrade, with an HTTP status and a JSON body
``{"error": code, "message": text}``: 403 ``origin_not_allowed`` (a browser page of
another origin: allowed are the page's own origin and ``VIRTUOSO_ALLOWED_ORIGINS``;
a request without ``Origin`` is not a browser's and is allowed), 429 ``rate_limited``
with ``Retry-After`` (more than ``handshake_burst`` handshakes at once or
``handshake_rate`` per second from one client).

Close codes: 1008 policy violation (too many connections from this client, too many
invalid messages), 1013 try again later (server full; client too slow: more than
``max_queue`` updates, ``max_queued_alerts`` alerts, ``max_queued_replies`` replies
or ``max_queued_bytes`` characters waiting, or a send took longer than
``send_timeout``; the reason says which), 1011 heartbeat timeout (no pong; the same
code the ``websockets`` library uses for its keepalive timeout), 1001 server
shutting down, 1009 message above the server's frame limit (hypercorn's
``websocket_max_message_size``), 1007 a text frame that is not UTF-8 and 1002 a
malformed frame (RFC 6455 §7.4.1; sent by ``hypercorn_stream.py``'s stream).
"""

from __future__ import annotations

from collections.abc import Callable, Container
from dataclasses import dataclass
from typing import Any

import orjson
from wsproto.frame_protocol import FrameProtocol

from app.market.models.symbols import canonical_symbol

CHANNELS: tuple[str, ...] = (
    "market",
    "confluence",
    "signals",
    "beta",
    "derivatives",
    "alerts",
    "dashboard",
)
ALERTS = "alerts"
ALERTS_KEPT = 200  # alerts in the alerts channel's snapshot, the newest by created_at_ms
CLIENT_TYPES = ("subscribe", "unsubscribe", "resync", "pong", "ping")

CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_HEARTBEAT = 1011
CLOSE_TRY_LATER = 1013


class ProtocolError(ValueError):
    """An invalid client message: ``code`` is the error message's code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    channels: tuple[str, ...] = ()
    symbols: tuple[str, ...] | None = None  # None: every symbol of the channels
    nonce: Any = None


def parse_client_message(
    raw: str | bytes | None,
    *,
    max_bytes: int,
    known_symbols: Callable[[], Container[str]] | None = None,
) -> ClientMessage:
    """Validates one client frame; raises ProtocolError with the error code."""
    if not isinstance(raw, str | bytes):
        # Quart hands an empty binary frame over as None (b"" is falsy there).
        raise ProtocolError("bad_json", "not JSON: an empty or unreadable frame")
    # surrogatepass: a str from a caller other than the server may hold lone surrogates
    # (a frame cannot); orjson then refuses it as bad_json.
    size = len(raw.encode("utf-8", "surrogatepass")) if isinstance(raw, str) else len(raw)
    if size > max_bytes:
        raise ProtocolError("too_large", f"message of {size} bytes; the limit is {max_bytes}")
    try:
        message = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError("bad_json", f"not JSON: {exc}") from None
    if not isinstance(message, dict):
        raise ProtocolError("bad_message", "a message is a JSON object")
    kind = message.get("type")
    if kind not in CLIENT_TYPES:
        raise ProtocolError("unknown_type", f"unknown type {kind!r}; known: {CLIENT_TYPES}")
    if kind == "ping":
        return ClientMessage("ping")
    if kind == "pong":
        if "nonce" not in message:
            raise ProtocolError("bad_message", "pong needs the heartbeat's nonce")
        return ClientMessage("pong", nonce=message["nonce"])
    channels = message.get("channels")
    if not isinstance(channels, list) or not channels:
        raise ProtocolError("bad_message", f"{kind} needs a non-empty list of channels")
    for channel in channels:
        if channel not in CHANNELS:
            raise ProtocolError(
                "unknown_channel", f"unknown channel {channel!r}; known: {', '.join(CHANNELS)}"
            )
    symbols = message.get("symbols")
    if kind == "resync" or symbols is None:
        return ClientMessage(kind, tuple(dict.fromkeys(channels)))
    if not isinstance(symbols, list) or not all(isinstance(s, str) for s in symbols):
        raise ProtocolError("bad_message", "symbols must be a list of strings")
    known = known_symbols() if known_symbols is not None else None
    canonical = []
    for text in symbols:
        try:
            symbol = canonical_symbol(text)
        except ValueError:
            symbol = None
        if symbol is None or (known is not None and symbol not in known):
            raise ProtocolError("unknown_symbol", f"unknown symbol {text[:40]!r}")
        canonical.append(symbol)
    return ClientMessage(kind, tuple(dict.fromkeys(channels)), tuple(dict.fromkeys(canonical)))


def dumps(message: Any) -> str:
    return orjson.dumps(message).decode()


def frame(text: str) -> bytes:
    """``text`` as a whole WebSocket text frame from the server (RFC 6455 §5: unmasked,
    no extension), the same bytes for every client: built once per message."""
    return bytes(FrameProtocol(client=False, extensions=[]).send_data(text, fin=True))


def error(code: str, message: str) -> str:
    return dumps({"type": "error", "code": code, "message": message})


def update_parts(
    channel: str, symbol: str | None, generated_at_ms: int, data: Any, published_at: float
) -> tuple[str, str]:
    """The update serialized once, split around its seq: ``head + str(seq) + tail``
    (so Redis can insert the seq it assigns without decoding the message)."""
    kind = "alert" if channel == ALERTS else "update"
    head = dumps({"type": kind, "channel": channel, "symbol": symbol})[:-1] + ',"seq":'
    fields = {"generated_at": generated_at_ms, "published_at": published_at, "data": data}
    tail = "," + dumps(fields)[1:]
    return head, tail


def snapshot_item(message: dict[str, Any]) -> str:
    """One snapshot item (JSON text) from a parsed update message."""
    return dumps(
        {
            "symbol": message["symbol"],
            "seq": message["seq"],
            "generated_at": message["generated_at"],
            "data": message["data"],
        }
    )


def snapshot_from_items(channel: str, items: list[str]) -> str:
    """A snapshot message from serialized items (``snapshot_item``), joined once."""
    return f'{{"type":"snapshot","channel":{dumps(channel)},"items":[{",".join(items)}]}}'


def snapshot(channel: str, messages: list[dict[str, Any]]) -> str:
    """A snapshot from the latest parsed update messages of the channel."""
    return snapshot_from_items(channel, [snapshot_item(m) for m in messages])
