"""Faults found by attacking channels, digests and their delivery as a hostile client,
each pinned: the file store of a process (the collector's outbox) sees the channels
another process (the API's server) wrote since it started; a channel a digest names
cannot be deleted (the digest would name a channel that no longer exists); receivers
trickling their answer a byte at a time (each byte within the socket time-out) do not
hold the sending threads past the send's time-out, so other channels' messages still
go out."""

from __future__ import annotations

import asyncio
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestServer

from app.services.alerts import apprise_sender
from app.services.alerts.channel_store import FileChannelStore
from app.services.alerts.channels import ChannelInput, describe, new_channel
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationPolicy
from tests.conftest import ManualClock
from tests.integration.test_alerts import AUTH, call, running
from tests.integration.test_channels import ALLOW, CHANNELS, create
from tests.support import receivers

LOOPBACK = DestinationPolicy(("127.0.0.1",))


async def send(port: int | None, key: str, timeout_seconds: float) -> None:
    """One message to the json:// receiver on ``port``."""
    url = f"json://127.0.0.1:{port}/hook"
    policy, timeout = LOOPBACK, timeout_seconds
    await apprise_sender.send(
        url, "title", "body", idempotency_key=key, policy=policy, timeout_seconds=timeout
    )


async def test_a_file_store_sees_channels_another_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "channels.json"
    server, collector = FileChannelStore(path), FileChannelStore(path)
    url = "json://127.0.0.1:9/T0KEN"
    channel = new_channel(ChannelInput(name="late", url=url), describe(url))
    await server.add_channel(channel)
    found = await collector.get_channel(channel.id)
    assert found is not None and found.to_stored() == channel.to_stored()
    assert [c.id for c in await collector.list_channels()] == [channel.id]
    assert await server.delete_channel(channel.id)
    assert await collector.get_channel(channel.id) is None
    assert not await collector.delete_channel(channel.id)


async def test_a_channel_a_digest_names_cannot_be_deleted(
    tmp_path: Path, clock: ManualClock
) -> None:
    async with running(clock, VIRTUOSO_DATA_DIR=str(tmp_path), **ALLOW) as app:
        _, body = await create(app, "digest hook", "json://127.0.0.1:9/")
        channel_id = body["channel"]["id"]
        digest = {"name": "hourly", "channels": [channel_id], "every": "1h"}
        status, made = await call(app, "post", "/api/alerts/digests", json=digest, headers=AUTH)
        assert status == 201, made
        digest_id = made["digest"]["id"]
        status, error = await call(app, "delete", f"{CHANNELS}/{channel_id}", headers=AUTH)
        assert status == 409 and error["error"] == "channel_in_use", error
        assert (error["rule_ids"], error["digest_ids"]) == ([], [digest_id])
        assert digest_id in error["message"]
        path = f"/api/alerts/digests/{digest_id}"
        assert (await call(app, "delete", path, headers=AUTH))[0] == 200
        status, done = await call(app, "delete", f"{CHANNELS}/{channel_id}", headers=AUTH)
        assert (status, done) == (200, {"deleted": channel_id})


async def test_trickling_receivers_do_not_hold_the_sending_threads() -> None:
    stop = asyncio.Event()

    async def trickle(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        await response.prepare(request)
        while not stop.is_set():  # one byte per 0.1 s: every read is within its time-out
            await response.write(b" ")
            await asyncio.sleep(0.1)
        return response

    app = web.Application()
    app.router.add_post("/{tail:.*}", trickle)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    try:
        async with receivers.http_receivers(1) as (good,):
            trickled = [
                send(server.port, f"slow-{n}", 0.5) for n in range(apprise_sender.MAX_SENDING + 1)
            ]
            for failed in await asyncio.gather(*trickled, return_exceptions=True):
                assert isinstance(failed, DeliveryFailed) and failed.retryable, failed
            await send(good.port, "after", 10)  # not queued behind the trickles
            assert len(good.requests) == 1
    finally:
        stop.set()
        await server.close()
