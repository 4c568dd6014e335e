"""The collector's wire over the local channel (a real Unix socket): a server's
RemoteCollector asking through ChannelServerEnd, a child's end answering (or not)."""

from __future__ import annotations

import asyncio

import pytest

from app.backends.errors import TierUnavailable
from app.backends.local_channel import Channel, connect, listen
from app.services.alerts.store_proxy import ProxyAlertStore
from app.services.collector_wire import CollectorUnavailable, decode_request
from app.services.remote_collector import RemoteCollector, RemoteTimings
from app.services.wire_channel import CHILD_GONE, ChannelCollectorEnd, ChannelServerEnd

BOUND = 30.0  # a bounded wait for what must happen at once (600 s would be the timeout)


async def test_a_request_the_exited_child_never_answered_fails_at_once(tmp_path) -> None:
    end = ChannelServerEnd()
    server = await listen(str(tmp_path / "c.sock"), end.attach)
    link = RemoteCollector(end, "server-1", timings=RemoteTimings(request_seconds=600))
    await link.start()
    child: Channel = await connect(str(tmp_path / "c.sock"))
    heard: asyncio.Queue[str] = asyncio.Queue()
    ChannelCollectorEnd(child).start(lambda raw: heard.put_nowait(decode_request(raw).kind))
    try:
        for _ in range(200):  # the server accepted the child's connection
            if end.listening:
                break
            await asyncio.sleep(0.01)
        asking = asyncio.create_task(link.candles("BTCUSDT", "1d"))
        assert await asyncio.wait_for(heard.get(), BOUND) == "candles"
        await child.close()  # the child exits without answering
        with pytest.raises(CollectorUnavailable, match=CHILD_GONE):
            await asyncio.wait_for(asking, BOUND)
        with pytest.raises(CollectorUnavailable, match="not listening"):
            await link.candles("BTCUSDT", "1d")  # and until a new child connects
    finally:
        await link.close()
        server.close()
        await server.wait_closed()


async def test_the_alert_store_across_the_channel_fails_as_a_store_outage(tmp_path) -> None:
    """The child's store calls that the server cannot answer (refused, or the channel
    gone) raise TierUnavailable, which the refresh and the evaluation handle as a store
    outage (a warning) rather than crash on (an error with a traceback)."""
    accepted: list[Channel] = []
    server = await listen(str(tmp_path / "c.sock"), accepted.append)  # no store handler
    child = await connect(str(tmp_path / "c.sock"))
    store = ProxyAlertStore(child.call)
    try:
        with pytest.raises(TierUnavailable, match="list_alerts"):
            await store.list_alerts(status="pending")
        await child.close()
        with pytest.raises(TierUnavailable, match="closed"):
            await store.list_rules()
    finally:
        for channel in accepted:
            await channel.close()
        server.close()
        await server.wait_closed()
