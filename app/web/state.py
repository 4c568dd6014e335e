"""What the routes share: settings, the pipeline and the view store of this process."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quart import current_app

from app.services.pipeline import Pipeline
from app.services.view_store import ViewStore
from app.settings import Settings

EXTENSION_KEY = "virtuoso"


@dataclass(slots=True)
class ServiceState:
    settings: Settings
    pipeline: Pipeline
    store: ViewStore
    clock: Callable[[], float] = time.time
    started_at: float = field(default_factory=time.time)

    def now_ms(self) -> int:
        return int(self.clock() * 1000)

    @property
    def stale_after_ms(self) -> int:
        return int(self.settings.stale_after_seconds * 1000)

    @property
    def known_symbols(self) -> list[str]:
        collector = self.pipeline.collector
        return list(collector.symbols) if collector else list(self.settings.symbols)


def service_state() -> ServiceState:
    return current_app.extensions[EXTENSION_KEY]
