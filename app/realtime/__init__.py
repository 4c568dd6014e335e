"""Live updates over WebSockets: protocol, per-connection queues, cross-replica fan-out.

See ``protocol.py`` for the wire protocol, ``hub.py`` for subscriptions and delivery,
``broker.py`` for sequence numbers and Redis pub/sub, ``admission.py`` for the
connection caps, ``broadcaster.py`` for the wiring of the three and ``ws_route.py`` for
the Quart route. Nothing here imports the services: they call ``Broadcaster.publish``.
"""

from app.realtime.admission import Rejected
from app.realtime.broadcaster import Broadcaster
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
