"""The delivery outbox against a real Redis and the file store, sending to a real HTTP
receiver on loopback: retries with growing back-off (on the injected clock), delivered
once the receiver is back, failures with reasons, a worker cancelled mid-send finished by
its successor (the receiver accepts each key once), nothing lost across a restart, the
breaker postponing without burning attempts, the metrics' labels."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
import pytest_asyncio
from prometheus_client import generate_latest

from app.main.collector_telemetry import delivery_observer
from app.observability.metrics import Metrics
from app.resilience.breaker import BreakerConfig
from app.resilience.redis_breaker import redis_guard
from app.services.alerts.apprise_sender import AppriseSend
from app.services.alerts.delivery import idempotency_key
from app.services.alerts.destinations import DestinationPolicy
from app.services.alerts.outbox import Outbox
from app.services.alerts.outbox_file import FileOutboxStore
from app.services.alerts.outbox_store import OutboxStore, RedisOutboxStore
from app.services.alerts.outbox_worker import OutboxWorker, RetryPolicy
from app.services.alerts.webhook_channel import apprise_json_url
from tests.conftest import ManualClock, eventually
from tests.integration.test_alert_store import KEYSPACE, PATIENT, make_alert
from tests.support.webhook_receiver import Receiver

StoreFactory = Callable[..., OutboxStore]
ALLOW = ("127.0.0.1",)  # VIRTUOSO_WEBHOOK_ALLOW's value for the loopback receiver
STEADY = BreakerConfig(consecutive_failures=100, minimum_calls=100)  # never opens


@pytest.fixture(params=["file", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path) -> StoreFactory:
    """``open_store(max_pending=...)``: a new store instance of the parametrized kind, on
    the same file or Redis each call (a restarted process)."""
    if request.param == "file":
        return lambda **kw: FileOutboxStore(tmp_path / "outbox.json", **kw)
    client = request.getfixturevalue("redis_client")
    guard = redis_guard(timeout_seconds=PATIENT)
    return lambda **kw: RedisOutboxStore(client, guard, KEYSPACE, **kw)


@pytest_asyncio.fixture
async def receiver() -> AsyncIterator[Receiver]:
    found = Receiver()
    await found.start()
    try:
        yield found
    finally:
        await found.stop()


class Deliveries:
    """An outbox and its worker on one store, sending through Apprise (``AppriseSend``,
    as the collector does)."""

    def __init__(
        self,
        store: OutboxStore,
        clock: ManualClock,
        channels: dict[str, tuple[str, str]] | None = None,
        allow: tuple[str, ...] = ALLOW,
        breaker: BreakerConfig = STEADY,
        policy: RetryPolicy | None = None,
    ) -> None:
        self.outcomes: list[tuple[str, str]] = []
        self.metrics = Metrics()
        observe = delivery_observer(self.metrics)

        def listen(channel_type: str, outcome: str, seconds: float | None) -> None:
            self.outcomes.append((channel_type, outcome))
            observe(channel_type, outcome, seconds)

        async def lookup(channel_id: str) -> tuple[str, str] | None:
            return (channels or {}).get(channel_id)

        self.sender = AppriseSend(DestinationPolicy(allow), timeout_seconds=5.0)
        self.outbox = Outbox(store, lookup, clock=clock, listener=listen)
        self.worker = OutboxWorker(
            self.outbox,
            self.sender,
            clock=clock,
            fraction=lambda: 0.5,  # the jitter's middle: delays are 0.75 of the ceiling
            breaker_config=breaker,
            policy=policy,
        )

    async def status(self, alert_id: str, channel_id: str = "webhook") -> dict:
        found = await self.outbox.deliveries_of(alert_id)
        return next(d for d in found if d["channel_id"] == channel_id)

    async def close(self) -> None:
        """Nothing to close (Apprise opens a connection per message); kept so each
        test ends its parts the same way."""


def test_a_webhook_url_becomes_an_apprise_json_url() -> None:
    url = "https://u:p@hooks.example.com:8443/T0KEN/x?sig=abc&n=1"
    apprise = apprise_json_url(url)
    assert apprise == "jsons://u:p@hooks.example.com:8443/T0KEN/x?-sig=abc&-n=1"
    assert apprise_json_url("http://h/") == "json://h/"


async def test_receiver_down_then_503_is_retried_with_growing_back_off_then_delivered(
    open_store: StoreFactory, clock: ManualClock
) -> None:
    receiver = Receiver()  # not listening yet: connections are refused
    parts = Deliveries(open_store(), clock)
    alert = make_alert(int(clock() * 1000))
    try:
        stored = await parts.outbox.enqueue(alert, (), receiver.url())
        assert [d.status for d in stored] == ["pending"]
        assert await parts.outbox.enqueue(alert, (), receiver.url()) == []  # no duplicate
        waits = []
        for attempt in (1, 2, 3, 4):
            if attempt == 3:
                receiver.status = 503
                await receiver.start()
            before = clock()
            assert await parts.worker.run_once() == 1
            state = await parts.status(alert.id)
            assert state["status"] == "pending" and state["attempts"] == attempt
            waits.append(state["next_attempt_at_ms"] / 1000 - before)
            assert await parts.worker.run_once() == 0  # not due before its time
            clock.advance(waits[-1])
        # 2 s doubling, times the jitter's 0.75: 1.5, 3, 6, 12 s
        assert waits == pytest.approx([1.5, 3.0, 6.0, 12.0], abs=0.002)
        assert state["reason"].startswith("json://127.0.0.1/…: ") and "error=503" in state["reason"]
        receiver.status = 200
        assert await parts.worker.run_once() == 1
        state = await parts.status(alert.id)
        assert state["status"] == "delivered" and state["attempts"] == 5
        assert state["reason"] is None and state["delivered_at_ms"] == int(clock() * 1000)
        key = idempotency_key(alert.id, "webhook")
        assert [m[1] for m in receiver.messages] == [key, key, key]  # the 503s, then 200
        assert receiver.firsts == [key]
        assert receiver.messages[-1][2]["title"] == alert.title
        assert receiver.messages[-1][2]["message"] == f"{alert.message}\n\nIdempotency-Key: {key}"
        assert parts.outcomes == [("webhook", "retried")] * 4 + [("webhook", "delivered")]
    finally:
        await receiver.stop()
        await parts.close()


async def test_refused_and_rejected_deliveries_fail_with_reason_and_attempts(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    store = open_store()
    strict = Deliveries(store, clock, allow=())  # 127.0.0.1 is not allowed
    refused = make_alert(int(clock() * 1000))
    await strict.outbox.enqueue(refused, (), receiver.url("/T0KEN?sig=s3cret"))
    assert await strict.worker.run_once() == 1
    state = await strict.status(refused.id)
    assert state["status"] == "failed" and state["attempts"] == 1
    assert "127.0.0.1 is a loopback address" in state["reason"]
    assert "T0KEN" not in str(state) and "s3cret" not in str(state)
    assert receiver.messages == []  # no connection was made
    assert strict.outcomes == [("webhook", "refused")]
    await strict.close()

    parts = Deliveries(store, clock)
    receiver.status = 400
    rejected = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(rejected, (), receiver.url())
    assert await parts.worker.run_once() == 1
    state = await parts.status(rejected.id)
    assert (state["status"], state["attempts"]) == ("failed", 1) and "error=400" in state["reason"]
    clock.advance(3600)
    assert await parts.worker.run_once() == 0  # never again
    assert parts.outcomes == [("webhook", "failed")]
    await parts.close()


async def test_after_the_last_attempt_the_delivery_fails(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.status = 503
    parts = Deliveries(open_store(), clock, policy=RetryPolicy(max_attempts=2))
    alert = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(alert, (), receiver.url())
    for _ in range(2):
        assert await parts.worker.run_once() == 1
        clock.advance(600)
    state = await parts.status(alert.id)
    assert (state["status"], state["attempts"]) == ("failed", 2) and "error=503" in state["reason"]
    assert parts.outcomes == [("webhook", "retried"), ("webhook", "failed")]
    await parts.close()


async def test_a_worker_cancelled_mid_send_is_finished_by_its_successor_once(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    """Two destinations (the rule's webhook, a channel): the first worker is cancelled
    while the receiver holds its requests; a new outbox on the same store delivers both
    after the restart, and the receiver accepts each key exactly once."""
    channels = {"ops": (apprise_json_url(receiver.url("/ops")), "json")}
    first = Deliveries(open_store(), clock, channels)
    alert = make_alert(int(clock() * 1000))
    await first.outbox.enqueue(alert, ["ops"], receiver.url())
    receiver.hold = asyncio.Event()
    sending = asyncio.create_task(first.worker.run_once())
    await eventually(lambda: receiver.held == 2)
    sending.cancel()
    with pytest.raises(asyncio.CancelledError):
        await sending
    await first.close()
    assert {d["status"] for d in await first.outbox.deliveries_of(alert.id)} == {"pending"}

    second = Deliveries(open_store(), clock, channels)
    clock.advance(second.worker.policy.visibility_seconds)  # the first claim expires
    receiver.hold.set()  # the held requests finish too (their answers go nowhere)
    receiver.hold = None
    assert await second.worker.run_once() == 2
    for channel in ("webhook", "ops"):
        state = await second.status(alert.id, channel)
        assert state["status"] == "delivered" and state["attempts"] == 1
    await eventually(lambda: len(receiver.messages) == 4)
    keys = {idempotency_key(alert.id, "webhook"), idempotency_key(alert.id, "ops")}
    assert all(key in keys for _, key, _ in receiver.messages)  # every message carried one
    assert all(
        body["message"].endswith(f"Idempotency-Key: {key}") for _, key, body in receiver.messages
    )
    assert sorted(receiver.firsts) == sorted(keys)  # each accepted exactly once
    assert {path for path, _, _ in receiver.messages} == {"/hook", "/ops"}
    assert sorted(second.outcomes) == [("json", "delivered"), ("webhook", "delivered")]
    await second.close()


async def test_nothing_is_lost_across_a_restart_of_the_file_outbox(
    tmp_path, clock: ManualClock
) -> None:
    receiver = Receiver()
    path = tmp_path / "outbox.json"
    first = Deliveries(FileOutboxStore(path), clock)
    alerts = [make_alert(int(clock() * 1000)) for _ in range(3)]
    for alert in alerts:
        await first.outbox.enqueue(alert, (), receiver.url())
    assert await first.worker.run_once() == 3  # all refused: nothing listens
    await first.close()
    assert path.stat().st_mode & 0o777 == 0o600  # it holds the webhooks' URLs

    second = Deliveries(FileOutboxStore(path), clock)
    for alert in alerts:
        state = await second.status(alert.id)
        assert state["status"] == "pending" and state["attempts"] == 1
    await receiver.start()
    try:
        clock.advance(2)
        assert await second.worker.run_once() == 3
        for alert in alerts:
            assert (await second.status(alert.id))["status"] == "delivered"
        assert sorted(receiver.firsts) == sorted(idempotency_key(a.id, "webhook") for a in alerts)
    finally:
        await receiver.stop()
        await second.close()


async def test_an_open_breaker_postpones_without_counting_an_attempt(
    open_store: StoreFactory, clock: ManualClock
) -> None:
    receiver = Receiver()
    trips = BreakerConfig(consecutive_failures=1, open_seconds=30.0, max_open_seconds=600.0)
    parts = Deliveries(open_store(), clock, breaker=trips)
    alert = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(alert, (), receiver.url())
    try:
        assert await parts.worker.run_once() == 1  # refused: the breaker opens for 30 s
        clock.advance(1.5)
        assert await parts.worker.run_once() == 1
        state = await parts.status(alert.id)
        assert state["status"] == "pending" and state["attempts"] == 1  # not burnt
        assert state["reason"] == f"circuit open for 127.0.0.1:{receiver.port}"
        assert state["next_attempt_at_ms"] == int((clock() + 28.5) * 1000)
        await receiver.start()
        clock.advance(28.5)
        assert await parts.worker.run_once() == 1  # the probe goes through
        state = await parts.status(alert.id)
        assert state["status"] == "delivered" and state["attempts"] == 2
        assert parts.outcomes == [
            ("webhook", "retried"),
            ("webhook", "postponed"),
            ("webhook", "delivered"),
        ]
        assert len(receiver.messages) == 1
    finally:
        await receiver.stop()
        await parts.close()


async def test_metrics_count_outcomes_by_channel_type_and_the_latency(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    channels = {"ops": (apprise_json_url(receiver.url("/T0KEN")), "json")}
    parts = Deliveries(open_store(), clock, channels)
    alert = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(alert, ["ops", "gone"], receiver.url("/T0KEN"))
    assert (await parts.status(alert.id, "gone"))["reason"] == "no such channel"
    receiver.status = 503
    assert await parts.worker.run_once() == 2
    receiver.status = 200
    clock.advance(10)
    assert await parts.worker.run_once() == 2
    text = generate_latest(parts.metrics.registry).decode()
    family = "virtuoso_alert_deliveries_total"
    for channel_type in ("webhook", "json"):
        assert f'{family}{{channel_type="{channel_type}",outcome="retried"}} 1.0' in text
        assert f'{family}{{channel_type="{channel_type}",outcome="delivered"}} 1.0' in text
        seconds = f'virtuoso_alert_delivery_seconds_bucket{{channel_type="{channel_type}"'
        assert f'{seconds},le="10.0"}} 1.0' in text  # 10 s on the clock, enqueue → delivered
        assert f'{seconds},le="5.0"}} 0.0' in text
    assert "127.0.0.1" not in text and "T0KEN" not in text
    await parts.close()


async def test_a_full_outbox_stores_the_refused_delivery_as_failed(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    parts = Deliveries(open_store(max_pending=1), clock)
    first, second = make_alert(int(clock() * 1000)), make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(first, (), receiver.url())
    stored = await parts.outbox.enqueue(second, (), receiver.url())
    assert [d.status for d in stored] == ["failed"]
    state = await parts.status(second.id)
    assert state["status"] == "failed" and "the outbox is full" in state["reason"]
    assert parts.outbox.full == 1 and parts.outcomes == [("webhook", "outbox_full")]
    assert await parts.worker.run_once() == 1  # the first one goes
    assert (await parts.status(first.id))["status"] == "delivered"
    await parts.close()


async def test_finished_deliveries_are_trimmed_oldest_first(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    parts = Deliveries(open_store(max_finished=2), clock)
    alerts = [make_alert(int(clock() * 1000)) for _ in range(3)]
    for alert in alerts:
        await parts.outbox.enqueue(alert, (), receiver.url())
        assert await parts.worker.run_once() == 1
        clock.advance(1)
    assert await parts.outbox.deliveries_of(alerts[0].id) == []
    for alert in alerts[1:]:
        assert (await parts.status(alert.id))["status"] == "delivered"
    await parts.close()


async def test_a_new_leader_releases_the_claims_of_the_one_before(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    store = open_store()
    parts = Deliveries(store, clock)
    alert = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(alert, (), receiver.url())
    now = int(clock() * 1000)
    assert len(await store.claim(now, now + 60_000, 10)) == 1  # a leader's, cut off
    assert await store.claim(now, now + 60_000, 10) == []
    assert await store.release_claims(now) == 1
    assert await store.release_claims(now) == 0
    parts.worker.start(release_claims=True)
    try:
        await eventually(lambda: receiver.firsts == [idempotency_key(alert.id, "webhook")])
    finally:
        await parts.worker.stop()
        await parts.close()


async def test_a_send_that_hangs_is_cut_off_before_its_claim_expires(
    open_store: StoreFactory, clock: ManualClock, receiver: Receiver
) -> None:
    receiver.hold = asyncio.Event()  # answers nothing until the test ends
    parts = Deliveries(open_store(), clock, policy=RetryPolicy(visibility_seconds=0.4))
    alert = make_alert(int(clock() * 1000))
    await parts.outbox.enqueue(alert, (), receiver.url())
    assert await parts.worker.run_once() == 1
    state = await parts.status(alert.id)
    assert (state["status"], state["attempts"]) == ("pending", 1)
    assert state["reason"] == "no answer within 0.2 s"
    assert parts.outcomes == [("webhook", "retried")]
    await parts.close()
