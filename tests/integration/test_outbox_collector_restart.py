"""A real ``virtuoso collect`` killed (SIGKILL) in the middle of an alert's delivery —
its receiver holding the request — and started again on the same Redis: the delivery is
made after the restart, and the receiver, dropping repeats by idempotency key as a real
receiver should, accepts it once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import redis as redis_sync

from app.backends.keyspace import Keyspace
from app.cache.policy import load_policy
from app.services.alerts.delivery import idempotency_key
from app.services.alerts.rules import validate_rule
from app.settings import DEFAULT_CACHE_POLICY
from tests.integration.test_collector_split import LEASE_SECONDS, SYMBOLS, wait_for
from tests.support.serve import stop

ROOT = Path(__file__).resolve().parents[2]
COLLECT = [sys.executable, "-m", "app", "collect"]
PREFIX = Keyspace(load_policy(DEFAULT_CACHE_POLICY).namespace).name("alerts")


class HoldingReceiver:
    """A threaded HTTP receiver on loopback: records each message's idempotency key
    (header, body field), holds every request until ``release`` is set, then accepts
    each key once (a repeat is answered 200 and dropped)."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.body_keys: list[str | None] = []
        self.accepted: list[str] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                key = self.headers.get("Idempotency-Key") or ""
                with receiver.lock:
                    receiver.keys.append(key)
                    # Apprise's json:// body; the key is also the message's last line
                    text = orjson.loads(body).get("message", "")
                    receiver.body_keys.append(text.rpartition("Idempotency-Key: ")[2] or None)
                receiver.release.wait(timeout=60)
                with receiver.lock:
                    if key not in receiver.accepted:
                        receiver.accepted.append(key)
                try:
                    self.send_response(200)
                    self.end_headers()
                except OSError:
                    pass  # the sender was killed while it waited

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[HoldingReceiver]:
    found = HoldingReceiver()
    try:
        yield found
    finally:
        found.close()


def test_a_collector_killed_mid_delivery_delivers_after_restart_once(
    redis, receiver: HoldingReceiver, tmp_path
) -> None:
    client = redis_sync.Redis.from_url(f"redis://{redis.address}/0")
    rule = validate_rule(
        {
            "kind": "price_above",
            "symbol": "BTCUSDT",
            "threshold": 0.0001,  # fires on the first snapshot
            "cooldown_seconds": 3600,  # and once
            "webhook_url": f"http://127.0.0.1:{receiver.port}/hook",
        },
        set(SYMBOLS.split(",")),
    )
    client.hset(f"{PREFIX}:rules", rule.id, orjson.dumps(rule.to_dict()))
    environ = os.environ | {
        "VIRTUOSO_REDIS_URL": f"redis://{redis.address}/0",
        "VIRTUOSO_REFRESH_SECONDS": "2",
        "VIRTUOSO_COLLECTOR_LEASE_SECONDS": LEASE_SECONDS,
        "VIRTUOSO_SYMBOLS": SYMBOLS,
        "VIRTUOSO_DATA_DIR": str(tmp_path),
        "VIRTUOSO_WEBHOOK_ALLOW": "127.0.0.1",
    }
    started: list[subprocess.Popen] = []

    def collector() -> subprocess.Popen:
        process = subprocess.Popen(COLLECT, env=environ, cwd=ROOT, stderr=subprocess.DEVNULL)
        started.append(process)
        return process

    try:
        first = collector()
        wait_for("the first delivery attempt, held by the receiver", lambda: receiver.keys)
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        alert_ids = [i.decode() for i in client.zrange(f"{PREFIX}:idx:all", 0, -1)]
        assert len(alert_ids) == 1
        key = idempotency_key(alert_ids[0], "webhook")
        record = orjson.loads(client.hget(f"{PREFIX}:outbox:records", key))
        assert (record["status"], record["attempts"]) == ("pending", 0)  # cut off mid-send
        receiver.release.set()  # from now on the receiver answers at once

        collector()

        def delivered() -> dict | None:
            found = orjson.loads(client.hget(f"{PREFIX}:outbox:records", key))
            return found if found["status"] == "delivered" else None

        record = wait_for("the delivery, after the restart", delivered)
        assert record["attempts"] == 1
        assert len(receiver.keys) >= 2 and set(receiver.keys) == {key}  # sent again
        assert receiver.body_keys == receiver.keys
        assert receiver.accepted == [key]  # accepted once
        assert client.zrange(f"{PREFIX}:idx:all", 0, -1) == [alert_ids[0].encode()]
    finally:
        for process in started:
            stop(process)
        client.close()
