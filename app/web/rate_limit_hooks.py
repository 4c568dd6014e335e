"""The rate limiter's place in the Quart app: a 429 before a limited request, the
``RateLimit-*`` headers after an allowed one.

The limiter itself (``app.resilience.rate_limit``) decides; this module only asks it
and answers. Quart runs ``before_request`` for HTTP only, so WebSockets are never
limited here: the realtime code counts their handshakes and connections itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from quart import Quart, Response, g, request
from redis.asyncio import Redis

from app.backends.guard import RedisGuard
from app.backends.keyspace import Keyspace
from app.resilience.rate_limit import Decision, RateLimiter, RateLimits
from app.web.errors import json_error

__all__ = ["RateLimitHooks", "install_rate_limits"]

log = logging.getLogger(__name__)

_G_DECISION = "rate_limit_decision"


class RateLimitHooks:
    """``before_request`` and ``after_request`` of one limiter."""

    def __init__(self, limiter: RateLimiter) -> None:
        self.limiter = limiter

    async def before_request(self) -> Response | None:
        """None lets the request through; a 429 JSON error (with Retry-After and the
        RateLimit-* headers) refuses it. OPTIONS and unlisted paths are never limited."""
        limiter = self.limiter
        family = limiter.family_for(request.path)
        if family is None or request.method == "OPTIONS":
            return None
        decision = await limiter.check(
            limiter.identify(request.headers, request.remote_addr), family
        )
        if decision is None:
            return None
        setattr(g, _G_DECISION, decision)
        if decision.allowed:
            return None
        wait = decision.retry_after_seconds
        return json_error(
            429,
            "rate_limited",
            f"too many {family.name} requests from this client; retry in {wait} s",
            headers={"Retry-After": str(wait), **decision.headers()},
            retry_after_seconds=wait,
            limit=family.description,
        )

    async def after_request(self, response: Response) -> Response:
        """Adds the RateLimit-* headers of the request's decision, if one was made."""
        decision: Decision | None = g.get(_G_DECISION)
        if decision is not None:
            response.headers.update(decision.headers())
        return response


def install_rate_limits(
    app: Quart,
    limits: RateLimits,
    redis: Redis | None = None,
    *,
    guard: RedisGuard | None = None,
    clock: Callable[[], float] | None = None,
    token_is_valid: Callable[[str], bool] | None = None,
    keyspace: Keyspace | None = None,
) -> RateLimiter:
    """Hooks rate limiting into ``app`` (before/after request) and returns the limiter
    (the composition keeps it in the service state for WebSocket handlers and metrics).

    ``redis``, ``guard``, ``clock``, ``token_is_valid`` and ``keyspace`` are the
    ``RateLimiter``'s.
    """
    limiter = RateLimiter(
        limits,
        redis,
        guard=guard,
        clock=clock,
        token_is_valid=token_is_valid,
        keyspace=keyspace,
    )
    if limits.enabled and limiter.families:
        hooks = RateLimitHooks(limiter)
        app.before_request(hooks.before_request)
        app.after_request(hooks.after_request)
    log.info(
        "rate limits %s (%s store): %s",
        "on" if limits.enabled else "off",
        limiter.store.name,
        "; ".join(f.description for f in limiter.families.values()) or "no families",
    )
    return limiter
