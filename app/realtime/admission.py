"""Who may open a WebSocket: the one path every connection cap goes through.

Before the upgrade a handshake takes a token from its client's bucket
(``admit_handshake``; the buckets of at most ``max_handshake_clients`` clients are
remembered). After it, ``acquire`` checks the replica's cap (``max_connections``: close
1013) and then the client's (close 1008), and ``release`` frees the client's slot.
The per-client count is the rate limiter's when there is one (so its stats and metrics
see it, and its file's ``enabled: false`` lifts the cap), else this replica's own.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from app.realtime import protocol
from app.realtime.connection import RealtimeStats, WsLimits, token_bucket
from app.resilience.rate_limit import (
    ConnectionLimiter,
    Decision,
    MemoryBuckets,
    RateLimiter,
    RateLimits,
    client_identity,
)

__all__ = ["Admission", "Rejected", "with_rate_limits"]


class Rejected(Exception):
    """A connection over a limit: close it with ``code`` and ``reason``; ``cause`` is the
    disconnect reason counted in the stats."""

    def __init__(self, code: int, reason: str, cause: str) -> None:
        super().__init__(reason)
        self.code, self.reason, self.cause = code, reason, cause


class Admission:
    """Handshake buckets, the replica's cap and the per-client cap (module docstring).

    ``open_connections`` passed to ``acquire`` is the replica's count; refusals are
    counted in ``stats.disconnects`` under their cause.
    """

    def __init__(
        self, limits: WsLimits, stats: RealtimeStats, rate_limiter: RateLimiter | None = None
    ) -> None:
        self.limits = limits
        self.stats = stats
        self.rate_limiter = rate_limiter
        self.per_client = per_client_counter(limits, rate_limiter)
        self._handshakes = MemoryBuckets(time.monotonic, max(100, limits.max_handshake_clients))
        self._handshake_family = (
            token_bucket("ws_handshake", limits.handshake_rate, limits.handshake_burst)
            if limits.handshake_burst > 0
            else None
        )

    def identify(self, headers: Any, remote_addr: str | None) -> str:
        """The client id: the rate limiter's (trusted proxies and all), else the bearer
        token's or the IP's."""
        if self.rate_limiter is not None:
            return self.rate_limiter.identify(headers, remote_addr)
        return client_identity(headers.get("Authorization"), remote_addr)

    async def admit_handshake(self, client_id: str) -> Decision | None:
        """Counts one handshake of ``client_id``: None when allowed (or unlimited), else
        the refusal (its ``retry_after_seconds`` for the Retry-After header)."""
        if self._handshake_family is None:
            return None
        decision = await self._handshakes.hit(client_id, self._handshake_family)
        if decision.allowed:
            return None
        self.stats.disconnects["rejected_handshake_rate"] += 1
        return decision

    def acquire(self, client_id: str, open_connections: int) -> None:
        """Takes a slot for one more connection of ``client_id``. Raises Rejected (1013)
        when the replica holds ``max_connections`` already, Rejected (1008) when the
        client holds its maximum."""
        if open_connections >= self.limits.max_connections:
            self.stats.disconnects["rejected_server_full"] += 1
            raise Rejected(protocol.CLOSE_TRY_LATER, "server full", "rejected_server_full")
        if self.per_client is not None and not self.per_client.acquire(client_id):
            self.stats.disconnects["rejected_per_client"] += 1
            raise Rejected(
                protocol.CLOSE_POLICY,
                "too many connections from this client",
                "rejected_per_client",
            )

    def release(self, client_id: str) -> None:
        """Frees one slot of ``client_id``."""
        if self.per_client is not None:
            self.per_client.release(client_id)


def per_client_counter(
    limits: WsLimits, rate_limiter: RateLimiter | None
) -> ConnectionLimiter | None:
    """The rate limiter's connection counter (None, no cap, when its limits are off),
    else one of ``limits.max_connections_per_client``."""
    if rate_limiter is None:
        return ConnectionLimiter(limits.max_connections_per_client)
    return rate_limiter.connections if rate_limiter.limits.enabled else None


def with_rate_limits(limits: WsLimits, rate_limits: RateLimits) -> WsLimits:
    """``limits`` with the per-client values of the rate-limit file's ``websocket``."""
    ws = rate_limits.websocket
    return dataclasses.replace(
        limits,
        max_connections_per_client=ws.max_connections_per_client,
        handshake_rate=ws.handshake_rate,
        handshake_burst=ws.handshake_burst if rate_limits.enabled else 0,
        message_rate=ws.message_rate,
        message_burst=ws.message_burst,
    )
