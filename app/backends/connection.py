"""The process's one Redis client (one connection pool).

It serves every use of Redis: the cache's backup tier, locks and invalidation bus, the
sessions, the alert store, the rate limits and the live updates. ``connect_redis``
builds it; whoever builds it closes it with ``aclose()`` at shutdown.
"""

from __future__ import annotations

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

__all__ = ["DEFAULT_URL", "connect_redis"]

DEFAULT_URL = "redis://127.0.0.1:6379/0"


def connect_redis(
    url: str = DEFAULT_URL,
    timeout_seconds: float = 0.5,
    *,
    max_connections: int = 64,
    health_check_interval: int = 15,
) -> Redis:
    """The process's one Redis client (bytes in, bytes out). Connecting happens lazily.

    Socket connect and read timeouts are ``timeout_seconds``, and so is the wait for
    a free pooled connection once ``max_connections`` are in use. redis-py retries a
    command once, at once, and only on a connection error (a pooled connection that
    died while idle, e.g. after a Redis restart); anything longer is the breaker's
    job. Idle connections are PINGed before reuse after ``health_check_interval``
    seconds. Raises ValueError for a ``timeout_seconds`` that is not positive.
    """
    if timeout_seconds <= 0:
        raise ValueError(f"timeout_seconds must be positive, not {timeout_seconds}")
    pool = BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        timeout=timeout_seconds,
        socket_timeout=timeout_seconds,
        socket_connect_timeout=timeout_seconds,
        socket_keepalive=True,
        health_check_interval=health_check_interval,
        retry=Retry(NoBackoff(), 1, (RedisConnectionError,)),
    )
    return Redis.from_pool(pool)  # aclose() closes the pool too
