"""Faults found by attacking channels, digests and their delivery as a hostile client,
each pinned: a channel a digest names cannot be deleted (the digest would name a
channel that no longer exists)."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import ManualClock
from tests.integration.test_alerts import AUTH, call, running
from tests.integration.test_channels import ALLOW, CHANNELS, create


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
