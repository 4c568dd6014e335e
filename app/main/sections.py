"""The sections of the settings each package receives: only the composition roots see
the whole ``Settings``; a package gets the values it uses, in its own type."""

from __future__ import annotations

from app.cache.runtime import CacheConfig
from app.settings import Settings
from app.state import ServingSettings

MEGABYTE = 1024 * 1024


def cache_config(settings: Settings) -> CacheConfig:
    """What ``app.cache.runtime.build_cache`` needs: the tiers to build and the
    optimisations switched on (``l1_bytes`` is 0 when the benchmark turns L1 off)."""
    return CacheConfig(
        replica_id=settings.replica_id,
        l1_bytes=int(settings.l1_max_mb * MEGABYTE) if settings.optimized("l1") else 0,
        memcached_servers=tuple(settings.memcached_servers),
        redis_url=settings.redis_url,
        memcached_timeout_seconds=settings.memcached_timeout_seconds,
        redis_timeout_seconds=settings.redis_timeout_seconds,
        single_flight=settings.optimized("single_flight"),
        compression=settings.optimized("compression"),
        refresh_ahead=settings.optimized("refresh_ahead"),
    )


def serving_settings(settings: Settings) -> ServingSettings:
    """The routes' section."""
    return ServingSettings(
        exchange=settings.exchange,
        symbols=settings.symbols,
        refresh_seconds=settings.refresh_seconds,
        long_threshold=settings.confluence.long_threshold,
        short_threshold=settings.confluence.short_threshold,
        admin_token=settings.admin_token,
        api_token=settings.api_token,
        public_details=settings.public_details,
        trusted_proxy_hops=settings.trusted_proxy_hops,
        serialize_once=settings.optimized("serialize_once"),
        derivatives_refresh_seconds=settings.derivatives_refresh_seconds,
    )
