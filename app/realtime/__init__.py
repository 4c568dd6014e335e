"""Live updates over WebSockets: protocol, per-connection queues, cross-replica fan-out.

See ``protocol.py`` for the wire protocol, ``broadcaster.py`` for the fan-out and
``ws_route.py`` for the Quart route.
"""

from app.realtime.broadcaster import Broadcaster, Rejected
from app.realtime.connection import Connection, RealtimeStats, WsLimits
from app.realtime.protocol import CHANNELS
from app.realtime.ws_route import HYPERCORN_MAX_MESSAGE_BYTES, register_ws

__all__ = [
    "CHANNELS",
    "HYPERCORN_MAX_MESSAGE_BYTES",
    "Broadcaster",
    "Connection",
    "RealtimeStats",
    "Rejected",
    "WsLimits",
    "register_ws",
]
