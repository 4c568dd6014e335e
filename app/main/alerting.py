"""The alert service both roles build: rules and alerts in Redis when configured (shared
by the replicas and the collector), else in a local file; the collector's copy evaluates
the rules on each snapshot, a server's takes the routes' writes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from app.cache.runtime import CacheRuntime
from app.services.alerts.channel_service import ChannelService
from app.services.alerts.channel_store import ChannelStore, FileChannelStore, RedisChannelStore
from app.services.alerts.destinations import DestinationPolicy
from app.services.alerts.digest_store import DigestStore, FileDigestStore, RedisDigestStore
from app.services.alerts.engine import AlertEngine
from app.services.alerts.outbox import Outbox
from app.services.alerts.outbox_file import FileOutboxStore
from app.services.alerts.outbox_store import OutboxStore, RedisOutboxStore
from app.services.alerts.service import AlertService, Announce, Republish
from app.services.alerts.store import AlertStore, FileAlertStore, RedisAlertStore
from app.settings import Settings


def build_alert_service(
    settings: Settings,
    runtime: CacheRuntime,
    republish: Republish,
    announce: Sequence[Announce],
    clock: Callable[[], float],
    store: AlertStore | None = None,
) -> AlertService:
    """Rules and alerts in ``store`` if given, else in Redis when configured, else in a
    local file (the channels and the delivery outbox beside them); ``republish``
    rebuilds the dashboards when alerts change, ``announce`` is told of each alert."""
    if store is None:
        store = settings_store(settings, runtime)
    thresholds = settings.confluence
    engine = AlertEngine(thresholds.long_threshold, thresholds.short_threshold, clock=clock)
    policy = DestinationPolicy(tuple(settings.webhook_allow))  # + the operator's internal hosts
    channels = ChannelService(
        settings_channel_store(settings, runtime),
        policy,
        store.list_rules,
        digests=build_digest_store(settings, runtime).list_digests,
    )
    return AlertService(
        store,
        engine,
        republish,
        settings.refresh_seconds,
        runtime.cache,
        runtime.coherence,
        policy,
        outbox=Outbox(outbox_store(settings, runtime), channels.destination_of, clock=clock),
        announce=announce,
        clock=clock,
        channels=channels,
    )


def settings_store(settings: Settings, runtime: CacheRuntime) -> AlertStore:
    """The alert store in Redis when configured, else in ``<data_dir>/alerts.json``."""
    if runtime.redis is not None and runtime.redis_guard is not None:
        return RedisAlertStore(runtime.redis, runtime.redis_guard, runtime.keyspace)
    return FileAlertStore(Path(settings.data_dir) / "alerts.json")


def build_digest_store(settings: Settings, runtime: CacheRuntime) -> DigestStore:
    """The digests in Redis when configured, else in ``<data_dir>/digests.json`` (and
    their sent slots in ``digests-sent.json``)."""
    if runtime.redis is not None and runtime.redis_guard is not None:
        return RedisDigestStore(runtime.redis, runtime.redis_guard, runtime.keyspace)
    return FileDigestStore(Path(settings.data_dir))


def settings_channel_store(settings: Settings, runtime: CacheRuntime) -> ChannelStore:
    """The channel store in Redis when configured, else in ``<data_dir>/channels.json``."""
    if runtime.redis is not None and runtime.redis_guard is not None:
        return RedisChannelStore(runtime.redis, runtime.redis_guard, runtime.keyspace)
    return FileChannelStore(Path(settings.data_dir) / "channels.json")


def outbox_store(settings: Settings, runtime: CacheRuntime) -> OutboxStore:
    """The delivery outbox in Redis when configured, else in ``<data_dir>/outbox.json``."""
    if runtime.redis is not None and runtime.redis_guard is not None:
        return RedisOutboxStore(runtime.redis, runtime.redis_guard, runtime.keyspace)
    return FileOutboxStore(Path(settings.data_dir) / "outbox.json")
