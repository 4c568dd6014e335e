"""Subscriptions and delivery: which connection hears which (channel, symbol), and what
a new subscriber is sent first. The hub knows connections, never Redis (the broker
hands it every message, from this replica or another).

A message is framed once (``protocol.frame``) and the same bytes go to every
subscriber: batched for each client that has nothing waiting, queued for the others
(see ``connection.py``). The batches are written once per event-loop turn (``flush``,
scheduled by the first message of the turn): the messages that arrive together (a
burst read from Redis at once) cost one write per client, not one per client and
message, and none waits for a later one. Each message written that way counts as one
latency sample, taken after the turn's last write (its worst case); each queued send
is its own.

Subscriptions are indexed per channel and symbol (``None``: the whole channel), so a
fan-out costs in proportion to its receivers. Delivery never waits for
a client. The hub keeps the latest message
per (channel, symbol) it delivered, and the newest ``protocol.ALERTS_KEPT`` alerts per
alert id, for the snapshots sent on subscribe and resync. Each snapshot item, and each
channel's whole-channel snapshot, is serialized once per version and the same string is
queued for every client that asks (``deliver`` drops what a message changes): a client
asking again and again builds nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from app.realtime import protocol
from app.realtime.connection import Connection, RealtimeStats

log = logging.getLogger(__name__)

__all__ = ["Hub", "alert_key", "alert_order", "status_rank"]

STATUS_RANK = {"pending": 0, "acknowledged": 1, "resolved": 2}


class Hub:
    """The subscription index, the kept snapshot values and the fan-out.

    ``stats.delivered`` counts the fan-outs by channel and ``stats`` hears each
    update's data age (now − its ``generated_at``, the exchange's event time for market
    updates); ``max_subscriptions`` bounds a connection's (channel, symbol) pairs plus
    whole channels; ``clock``: wall time in epoch seconds (the publish time's clock), for
    the delivery latency and the data age.
    """

    def __init__(
        self,
        stats: RealtimeStats,
        max_subscriptions: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.stats = stats
        self._clock = clock
        self.max_subscriptions = max_subscriptions
        self._dirty: set[Connection] = set()  # with a batch to write this turn
        self._flushed: list[tuple[str, float]] = []  # (channel, published_at) batched
        self._flush_handle: asyncio.Handle | None = None
        # channel → symbol (None: whole-channel subscribers) → connections
        self._index: dict[str, dict[str | None, set[Connection]]] = {
            c: {} for c in protocol.CHANNELS
        }
        self._latest: dict[str, dict[str | None, dict[str, Any]]] = {
            c: {} for c in protocol.CHANNELS
        }
        # Serialized once per version: snapshot items per (channel, symbol) and the
        # whole-channel snapshot per channel; dropped by deliver when they change.
        self._items: dict[str, dict[str | None, str]] = {c: {} for c in protocol.CHANNELS}
        self._whole: dict[str, str] = {}
        # The alerts channel: alert id → message.
        self._alerts: dict[str, dict[str, Any]] = {}

    # -- delivery -------------------------------------------------------------------------

    def _note_data_age(self, channel: str, generated_at_ms: Any) -> None:
        """The update's data age in seconds (0 for a clock ahead of ours)."""
        if isinstance(generated_at_ms, int | float) and generated_at_ms > 0:
            age = self._clock() - generated_at_ms / 1000
            self.stats.record_data_age(channel, max(0.0, age))

    def deliver(self, message: dict[str, Any], text: str, published_at: float) -> None:
        """Keeps ``message`` (an update or alert, as parsed from ``text``) for the
        snapshots and queues ``text`` for every subscriber of its channel and symbol.
        ``published_at``: epoch seconds, for the delivery latency."""
        channel, symbol = message["channel"], message["symbol"]
        if channel == protocol.ALERTS:
            self._keep_alert(message, replace_on_tie=True)
        else:
            self._latest[channel][symbol] = message
            self._items[channel].pop(symbol, None)
            self._whole.pop(channel, None)
            self._note_data_age(channel, message.get("generated_at"))
        self.stats.delivered[channel] += 1
        by_symbol = self._index[channel]
        if not by_symbol:
            return
        if symbol is None:
            targets: set[Connection] = set().union(*by_symbol.values())
        else:
            targets = by_symbol.get(None, set()) | by_symbol.get(symbol, set())
        frame = protocol.frame(text)  # once for every client
        batched = 0
        dirty = self._dirty
        if channel == protocol.ALERTS:
            for conn in targets:
                if conn.send_alert(text, frame, published_at):
                    batched += 1
                    dirty.add(conn)
        else:
            for conn in targets:
                if conn.send_update(channel, symbol, text, frame, published_at):
                    batched += 1
                    dirty.add(conn)
        if batched:
            self.stats.sent[channel] += batched
            self.stats.direct[channel] += batched
            self._flushed.append((channel, published_at))
            if self._flush_handle is None:
                self._flush_handle = asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        """Writes every batch of this loop turn (``Connection.flush``); called once per
        turn that delivered something, or at once by whoever cannot wait."""
        self._flush_handle = None
        dirty, self._dirty = self._dirty, set()
        flushed, self._flushed = self._flushed, []
        written = 0
        for conn in dirty:
            try:
                written += conn.flush()
            except Exception:  # one broken socket must not cost the others their batch
                log.exception("realtime write to %s failed", conn)
                conn.request_close(1011, "internal error", "error")  # as ws_route does
        if not written:  # every batch went to its queue: the senders count them
            return
        now = self._clock()
        for channel, published_at in flushed:
            self.stats.record_latency(channel, max(0.0, now - published_at))

    # -- alerts kept for the snapshot -------------------------------------------------------

    def seed_alerts(self, alerts: Iterable[dict[str, Any]]) -> None:
        """Keeps these alerts (``Alert.to_dict()`` shapes) for the alerts snapshot, as
        items with seq 0 and ``generated_at`` their latest change (epoch ms); an alert
        already kept from a message keeps that version unless this status is further
        along."""
        for alert in alerts:
            changed = alert.get("resolved_at_ms") or alert.get("acknowledged_at_ms")
            message = {
                "symbol": alert.get("symbol"),
                "seq": 0,
                "generated_at": changed or alert.get("created_at_ms") or 0,
                "data": alert,
            }
            self._keep_alert(message, replace_on_tie=False)

    def resend_alerts_snapshots(self) -> None:
        """Queues the alerts snapshot again for every connection subscribed to alerts."""
        for conn in set().union(*self._index[protocol.ALERTS].values()):
            if protocol.ALERTS in conn.subscriptions:
                self.send_snapshot(conn, protocol.ALERTS, conn.subscriptions[protocol.ALERTS])

    def kept_alerts(self) -> list[dict[str, Any]]:
        """The alerts the snapshot carries (their data), newest first."""
        return [self._alerts[key]["data"] for key in self._newest_alert_keys(None)]

    def _keep_alert(self, message: dict[str, Any], *, replace_on_tie: bool) -> None:
        """Keeps an alert message for the snapshot under its alert id (one without an
        id, under its seq), unless the kept version's status is further along (or as
        far, with ``replace_on_tie`` False); then drops the oldest beyond the bound."""
        key = alert_key(message)
        kept = self._alerts.get(key)
        if kept is not None:
            rank, kept_rank = status_rank(message), status_rank(kept)
            if rank < kept_rank or (rank == kept_rank and not replace_on_tie):
                return
        self._alerts[key] = message
        self._items[protocol.ALERTS].pop(key, None)
        self._whole.pop(protocol.ALERTS, None)
        if len(self._alerts) > protocol.ALERTS_KEPT:
            oldest = min(self._alerts, key=lambda k: alert_order(self._alerts[k], k))
            del self._alerts[oldest]
            self._items[protocol.ALERTS].pop(oldest, None)

    def _newest_alert_keys(self, symbols: list[str] | None) -> list[str]:
        keys = [
            key
            for key, message in self._alerts.items()
            if symbols is None or message["symbol"] in (None, *symbols)  # as fanned out
        ]
        return sorted(keys, key=lambda k: alert_order(self._alerts[k], k), reverse=True)

    # -- subscriptions ------------------------------------------------------------------------

    def subscribe(
        self, conn: Connection, channels: tuple[str, ...], symbols: tuple[str, ...] | None
    ) -> None:
        """Adds the channels (every symbol when ``symbols`` is None) and queues their
        snapshots. Raises ``protocol.ProtocolError`` ("too_many_subscriptions") and
        changes nothing when the connection would go over ``max_subscriptions``."""
        added: dict[str, set[str] | None] = {}
        count = conn.subscription_count
        for channel in channels:
            current = conn.subscriptions.get(channel, set())
            if current is None:
                continue  # already every symbol
            if symbols is None:
                added[channel] = None
                count += 1 - len(current)
            else:
                fresh = set(symbols) - current
                added[channel] = fresh
                count += len(fresh)
        if count > self.max_subscriptions:
            raise protocol.ProtocolError(
                "too_many_subscriptions",
                f"at most {self.max_subscriptions} subscriptions per connection",
            )
        for channel, wanted in added.items():
            index = self._index[channel]
            if wanted is None:
                self.unsubscribe(conn, channel, None)
                conn.subscriptions[channel] = None
                index.setdefault(None, set()).add(conn)
            else:
                conn.subscriptions.setdefault(channel, set()).update(wanted)  # type: ignore[union-attr]
                for symbol in wanted:
                    index.setdefault(symbol, set()).add(conn)
        for channel in channels:
            self.send_snapshot(conn, channel, added.get(channel, set()))

    def unsubscribe(self, conn: Connection, channel: str, symbols: tuple[str, ...] | None) -> None:
        """Drops the channel (symbols None) or those symbols of it from the subscription.
        Dropping symbols from a whole-channel subscription does nothing."""
        current = conn.subscriptions.get(channel, set())
        if current is None and symbols is not None:
            return
        keys: list[str | None] = [None] if current is None else list(current)
        if symbols is not None:
            keys = [s for s in symbols if s in current]  # type: ignore[operator]
            current.difference_update(symbols)  # type: ignore[union-attr]
        if symbols is None or not current:
            conn.subscriptions.pop(channel, None)
        index = self._index[channel]
        for key in keys:
            members = index.get(key)
            if members is not None:
                members.discard(conn)
                if not members:
                    del index[key]

    def drop(self, conn: Connection) -> None:
        """Forgets every subscription of a connection that leaves (and its batch:
        ``Connection.discard_queued``)."""
        self._dirty.discard(conn)
        for channel in list(conn.subscriptions):
            self.unsubscribe(conn, channel, None)

    def resync(self, conn: Connection, channels: tuple[str, ...]) -> None:
        """Queues the snapshots of channels the connection subscribed to. Raises
        ``protocol.ProtocolError`` ("not_subscribed") for any other channel."""
        missing = [c for c in channels if c not in conn.subscriptions]
        if missing:
            raise protocol.ProtocolError("not_subscribed", f"not subscribed to {missing}")
        for channel in channels:
            self.send_snapshot(conn, channel, conn.subscriptions[channel])

    # -- snapshots ------------------------------------------------------------------------------

    def send_snapshot(self, conn: Connection, channel: str, symbols: set[str] | None) -> None:
        """Queues the channel's snapshot (replacing one still waiting for the channel):
        every symbol (None) or those symbols (sorted), from the serialized items."""
        if symbols is None:
            text = self._whole.get(channel)
            if text is None:
                text = self._whole[channel] = self._snapshot_text(channel, None)
        else:
            text = self._snapshot_text(channel, sorted(symbols))
        conn.reply_keyed(("snapshot", channel), text)

    def _snapshot_text(self, channel: str, symbols: list[str] | None) -> str:
        """The snapshot of every kept value (symbols None) or of those symbols'; the
        alerts channel's: its kept alerts of those symbols, newest first."""
        items = self._items[channel]
        latest: dict[Any, dict[str, Any]]
        if channel == protocol.ALERTS:
            latest = self._alerts
            keys: list[Any] = self._newest_alert_keys(symbols)
        else:
            latest = self._latest[channel]
            keys = list(latest) if symbols is None else [s for s in symbols if s in latest]
        parts = []
        for key in keys:
            part = items.get(key)
            if part is None:
                part = items[key] = protocol.snapshot_item(latest[key])
            parts.append(part)
        return protocol.snapshot_from_items(channel, parts)


def alert_key(message: dict[str, Any]) -> str:
    """The alert id of an alert message (``data.id``), else ``#<seq>``."""
    data = message.get("data")
    alert_id = data.get("id") if isinstance(data, dict) else None
    return alert_id if isinstance(alert_id, str) else f"#{message['seq']}"


def status_rank(message: dict[str, Any]) -> int:
    """How far along an alert message's status is (pending 0 … resolved 2; none: 0)."""
    data = message.get("data")
    status = data.get("status") if isinstance(data, dict) else None
    return STATUS_RANK.get(status, 0) if isinstance(status, str) else 0


def alert_order(message: dict[str, Any], key: str) -> tuple[int, str]:
    """Sort key of a kept alert: (created_at_ms, else generated_at; key)."""
    data = message.get("data")
    created = data.get("created_at_ms") if isinstance(data, dict) else None
    if not isinstance(created, int):
        created = message.get("generated_at") or 0
    return created, key
