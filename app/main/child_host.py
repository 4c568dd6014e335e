"""The server's side of the local channel to its collector child (no Redis): it listens
on a Unix socket in a private directory, and for each connection (a restarted child
connects anew) it takes what Redis would otherwise carry — the views into this
process's tiers, the live updates and alerts to its WebSocket clients — and answers the
child's alert-store calls from this process's store, so one process alone writes it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from app.backends.local_channel import Channel, listen
from app.cache.coherence import Coherence
from app.realtime.broadcaster import Broadcaster
from app.services.alerts.service import FAMILY as ALERT_LISTS
from app.services.alerts.store import AlertStore
from app.services.alerts.store_proxy import CALL_KIND, answer_store_call
from app.services.view_cache import ViewCache
from app.services.wire_channel import ChannelServerEnd

log = logging.getLogger(__name__)


class ChildHost:
    """Accepts the collector child's channel at ``path`` and serves it (see the module
    docstring); a connection from any process but ``child_pid()`` is closed at once."""

    def __init__(
        self,
        end: ChannelServerEnd,
        views: ViewCache,
        broadcaster: Broadcaster,
        store: AlertStore,
        coherence: Coherence,
        child_pid: Callable[[], int | None],
    ) -> None:
        self.end = end
        self.child_pid = child_pid
        self.views = views
        self.broadcaster = broadcaster
        self.store = store
        self.coherence = coherence
        self._directory = tempfile.mkdtemp(prefix="virtuoso-")  # mode 0700: ours alone
        self.path = str(Path(self._directory) / "collector.sock")
        self._server: asyncio.Server | None = None
        self.refused = 0  # connections from a process other than the child

    async def start(self) -> None:
        """Listens for the child."""
        self._server = await listen(self.path, self._accepted)

    async def close(self) -> None:
        """Stops listening, closes the channel and removes the socket's directory."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        await self.end.close()
        shutil.rmtree(self._directory, ignore_errors=True)

    async def _accepted(self, channel: Channel) -> None:
        peer, child = channel.peer_pid, self.child_pid()
        if peer is None or peer != child:
            # Another process of this user found the socket: it must not feed the views.
            self.refused += 1
            log.warning("local channel: refused a connection from pid %s (not the child)", peer)
            await channel.close()
            return
        log.info("collector child connected (pid %d)", peer)
        channel.on_notify("views", self._views)
        channel.on_notify("live", self._live)
        channel.on_notify("alert", self._alert)
        channel.on_call(CALL_KIND, self._store_call)
        self.end.attach(channel)

    async def _views(self, payload: Any) -> None:
        bodies, generated_at_ms = payload
        await self.views.publish(bodies, int(generated_at_ms))

    async def _live(self, payload: Any) -> None:
        channel, symbol, data, generated_at_ms = payload
        await self.broadcaster.publish(channel, symbol, data, int(generated_at_ms))

    async def _alert(self, payload: Any) -> None:
        alert, generated_at_ms = payload
        await self.broadcaster.publish_alert(alert, int(generated_at_ms))

    async def _store_call(self, payload: Any) -> Any:
        return await answer_store_call(self.store, payload, self._alert_lists_changed)

    async def _alert_lists_changed(self) -> None:
        await self.coherence.invalidate_alone([ALERT_LISTS])
