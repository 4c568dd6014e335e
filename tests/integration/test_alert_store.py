"""The alert stores: one contract run against both (a real Redis and a JSON file)."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable

import pytest

from app.backends.connection import connect_redis
from app.backends.errors import TierUnavailable
from app.backends.keyspace import Keyspace
from app.resilience.redis_breaker import redis_guard
from app.services.alerts import store as alert_store
from app.services.alerts.rules import Alert, validate_rule
from app.services.alerts.store import AlertStore, FileAlertStore, RedisAlertStore, TooManyRules

# Redis's bound: no test here is about Redis timing out (a slow answer on a busy
# machine must not fail them; a killed Redis is refused at once).
PATIENT = 5.0
KNOWN = {"BTCUSDT", "ETHUSDT", "SOLUSDT"}
_ids = itertools.count()

KEYSPACE = Keyspace("alerts-test")


def make_alert(
    at_ms: int, symbol: str = "BTCUSDT", level: str = "warning", rule_id: str = "r1"
) -> Alert:
    n = next(_ids)
    return Alert(
        id=f"al{n:06d}",
        rule_id=rule_id,
        kind="price_above",
        symbol=symbol,
        level=level,
        title=f"{symbol} price above",
        message=f"{symbol} above 1: 2",
        values={"price": 2.0, "threshold": 1.0},
        created_at_ms=at_ms,
    )


def make_rule(symbol: str | None = "BTCUSDT", at_ms: int = 1):
    data = {"kind": "price_above", "symbol": symbol, "threshold": 100.0}
    return validate_rule(data, KNOWN, created_at_ms=at_ms)


StoreFactory = Callable[..., AlertStore]


@pytest.fixture(params=["file", "redis"])
def open_store(request: pytest.FixtureRequest, tmp_path) -> StoreFactory:
    """``open_store(max_alerts=...)``: a store of the parametrized kind."""
    if request.param == "file":
        return lambda max_alerts=10_000: FileAlertStore(tmp_path / "alerts.json", max_alerts)
    client = request.getfixturevalue("redis_client")
    guard = redis_guard(timeout_seconds=PATIENT)
    return lambda max_alerts=10_000: RedisAlertStore(client, guard, KEYSPACE, max_alerts=max_alerts)


async def test_rules_add_list_get_delete(open_store: StoreFactory) -> None:
    store = open_store()
    assert await store.list_rules() == []
    first, second = make_rule("BTCUSDT", at_ms=1), make_rule(None, at_ms=2)
    await store.add_rule(second)
    await store.add_rule(first)
    assert await store.list_rules() == [first, second]  # oldest first
    assert await store.get_rule(second.id) == second
    assert await store.get_rule("nope") is None
    assert await store.delete_rule(first.id) is True
    assert await store.delete_rule(first.id) is False
    assert await store.list_rules() == [second]


async def test_alerts_are_listed_newest_first_with_pagination(open_store: StoreFactory) -> None:
    store = open_store()
    alerts = [make_alert(1000 + i) for i in range(7)]
    await store.add_alerts(alerts[:3])
    await store.add_alerts(alerts[3:])
    await store.add_alerts([])
    newest_first = alerts[::-1]
    assert await store.list_alerts() == (newest_first, 7)
    assert await store.list_alerts(offset=2, limit=3) == (newest_first[2:5], 7)
    assert await store.list_alerts(offset=6, limit=3) == (newest_first[6:], 7)
    assert await store.list_alerts(offset=10) == ([], 7)
    assert await store.get_alert(alerts[4].id) == alerts[4]
    assert await store.get_alert("missing") is None
    # Same millisecond: ordered by id, the same way in both stores.
    twins = [make_alert(5000), make_alert(5000)]
    await store.add_alerts(twins)
    assert (await store.list_alerts(limit=2))[0] == twins[::-1]


async def test_filters_combine(open_store: StoreFactory) -> None:
    store = open_store()
    btc_warn = [make_alert(10 + i) for i in range(3)]
    eth_crit = [make_alert(20 + i, "ETHUSDT", "critical") for i in range(3)]
    btc_crit = make_alert(30, "BTCUSDT", "critical")
    await store.add_alerts([*btc_warn, *eth_crit, btc_crit])
    await store.set_status(eth_crit[0].id, "acknowledged", 99)

    items, total = await store.list_alerts(symbol="btc/usdt")
    assert total == 4 and [a.id for a in items] == [btc_crit.id, *(a.id for a in btc_warn[::-1])]
    items, total = await store.list_alerts(level="critical", limit=2)
    assert total == 4 and [a.id for a in items] == [btc_crit.id, eth_crit[2].id]
    items, total = await store.list_alerts(level="critical", symbol="ETHUSDT", status="pending")
    assert total == 2 and [a.id for a in items] == [eth_crit[2].id, eth_crit[1].id]
    items, total = await store.list_alerts(status="acknowledged")
    assert total == 1 and items[0].id == eth_crit[0].id
    items, total = await store.list_alerts(status="pending", level="critical", offset=1, limit=1)
    assert total == 3 and [a.id for a in items] == [eth_crit[2].id]
    assert await store.list_alerts(symbol="SOLUSDT") == ([], 0)
    for bad, message in [
        ({"status": "open"}, "unknown status 'open'; valid: pending"),
        ({"level": "panic"}, "unknown level 'panic'; valid: info"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"symbol": "$"}, "not a symbol"),
    ]:
        with pytest.raises(ValueError, match=message):
            await store.list_alerts(**bad)


async def test_status_transitions(open_store: StoreFactory) -> None:
    store = open_store()
    a, b = make_alert(1), make_alert(2)
    await store.add_alerts([a, b])
    acked = await store.set_status(a.id, "acknowledged", 10)
    assert acked is not None and (acked.status, acked.acknowledged_at_ms) == ("acknowledged", 10)
    resolved = await store.set_status(a.id, "resolved", 20)
    assert resolved is not None and resolved.resolved_at_ms == 20
    assert await store.get_alert(a.id) == resolved
    assert (await store.set_status(b.id, "resolved", 30)).status == "resolved"
    with pytest.raises(ValueError, match="cannot go from resolved to acknowledged"):
        await store.set_status(a.id, "acknowledged", 40)
    with pytest.raises(ValueError, match="cannot go from resolved to pending"):
        await store.set_status(b.id, "pending", 40)
    with pytest.raises(ValueError, match="unknown status"):
        await store.set_status(b.id, "gone", 40)
    assert await store.set_status("missing", "resolved", 50) is None
    assert await store.get_alert(a.id) == resolved  # unchanged by the refused moves
    b_resolved = await store.get_alert(b.id)
    assert await store.list_alerts(status="resolved") == ([b_resolved, resolved], 2)
    assert await store.list_alerts(status="pending") == ([], 0)


async def test_size_is_bounded_oldest_first(open_store: StoreFactory) -> None:
    store = open_store(max_alerts=5)
    alerts = [make_alert(100 + i, "ETHUSDT" if i % 2 else "BTCUSDT") for i in range(8)]
    await store.add_alerts(alerts[:4])
    await store.set_status(alerts[0].id, "acknowledged", 1)
    await store.add_alerts(alerts[4:])
    items, total = await store.list_alerts(limit=50)
    assert total == 5 and items == alerts[3:][::-1]
    for old in alerts[:3]:
        assert await store.get_alert(old.id) is None
    # The filters forget the trimmed alerts too.
    assert (await store.list_alerts(status="acknowledged"))[1] == 0
    assert (await store.list_alerts(symbol="BTCUSDT"))[1] == 2
    assert (await store.list_alerts(level="warning"))[1] == 5


async def test_engine_state_round_trip(open_store: StoreFactory) -> None:
    store = open_store()
    assert await store.load_engine_state() == {}
    state = {"version": 1, "entries": {"r|BTCUSDT": {"armed": False, "last_fired_ms": 5}}}
    await store.save_engine_state(state)
    assert await store.load_engine_state() == state


async def fill(store: AlertStore) -> tuple[list, list[Alert]]:
    rules = [make_rule("BTCUSDT", 1), make_rule(None, 2)]
    for rule in rules:
        await store.add_rule(rule)
    alerts = [make_alert(10 + i) for i in range(4)]
    await store.add_alerts(alerts)
    await store.set_status(alerts[0].id, "acknowledged", 50)
    await store.save_engine_state({"version": 1, "entries": {}})
    return rules, alerts


async def snapshot(store: AlertStore) -> tuple:
    return (
        await store.list_rules(),
        await store.list_alerts(),
        await store.list_alerts(status="acknowledged"),
        await store.load_engine_state(),
    )


# -- file store ----------------------------------------------------------------------------


async def test_file_store_survives_a_restart(tmp_path) -> None:
    path = tmp_path / "alerts.json"
    store = FileAlertStore(path)
    await fill(store)
    before = await snapshot(store)
    assert json.loads(path.read_bytes())["version"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["alerts.json"]  # no temp file left
    assert await snapshot(FileAlertStore(path)) == before


async def test_file_store_sets_a_corrupt_file_aside(tmp_path, caplog) -> None:
    path = tmp_path / "alerts.json"
    path.write_text('{"rules": [{"kind": "nope"}], "alerts": []}')
    with caplog.at_level(logging.WARNING, logger="app.services.alerts.store"):
        store = FileAlertStore(path)
    assert "unreadable" in caplog.text
    assert await store.list_rules() == [] and not path.exists()
    [aside] = tmp_path.iterdir()
    assert aside.name.startswith("alerts.json.corrupt-") and "nope" in aside.read_text()
    await store.add_rule(make_rule())
    assert len(await FileAlertStore(path).list_rules()) == 1


async def test_file_store_trims_on_load(tmp_path) -> None:
    path = tmp_path / "alerts.json"
    await FileAlertStore(path).add_alerts([make_alert(i) for i in range(6)])
    assert (await FileAlertStore(path, max_alerts=2).list_alerts())[1] == 2


# -- redis store -----------------------------------------------------------------------------


async def test_redis_key_layout(redis_client) -> None:
    store = RedisAlertStore(redis_client, redis_guard(timeout_seconds=PATIENT), Keyspace("t"))
    _rules, alerts = await fill(store)
    keys = {k.decode() for k in await redis_client.keys("t:alerts:*")}
    assert keys == {
        "t:alerts:rules",
        "t:alerts:engine",
        "t:alerts:idx:all",
        "t:alerts:idx:status:pending",
        "t:alerts:idx:status:acknowledged",
        "t:alerts:idx:level:warning",
        "t:alerts:idx:symbol:BTCUSDT",
        *(f"t:alerts:alert:{a.id}" for a in alerts),
    }
    assert await redis_client.hlen("t:alerts:rules") == 2
    assert await redis_client.zscore("t:alerts:idx:all", alerts[1].id) == alerts[1].created_at_ms


async def until_available(store: AlertStore, seconds: float = 10.0) -> None:
    """Retries a read until Redis answers again (the breaker probes every 0.5 s)."""
    for _ in range(int(seconds / 0.1)):
        try:
            await store.list_rules()
            return
        except TierUnavailable:
            await asyncio.sleep(0.1)
    raise AssertionError(f"redis not back within {seconds} s")


async def test_redis_store_survives_a_restart_and_an_outage(persistent_redis) -> None:
    client = connect_redis(f"redis://{persistent_redis.address}/0", PATIENT)
    try:
        store = RedisAlertStore(
            client, redis_guard(timeout_seconds=PATIENT), KEYSPACE, max_alerts=100
        )
        rules, alerts = await fill(store)
        before = await snapshot(store)

        persistent_redis.kill()
        with pytest.raises(TierUnavailable):
            await store.add_alerts([make_alert(999)])
        with pytest.raises(TierUnavailable):
            await store.add_rule(make_rule())
        with pytest.raises(TierUnavailable):
            await store.set_status(alerts[1].id, "resolved", 60)
        with pytest.raises(TierUnavailable):
            await store.delete_rule(rules[0].id)
        with pytest.raises(TierUnavailable):  # the breaker is open by now: fails fast
            await store.list_alerts()

        await asyncio.to_thread(persistent_redis.restart)
        await until_available(store)
        assert await snapshot(store) == before  # everything acknowledged is still there
        await store.add_alerts([new := make_alert(1000)])
        assert (await store.list_alerts(limit=1))[0] == [new]
    finally:
        await client.aclose()


async def test_file_store_creates_its_directory_and_a_failed_write_changes_nothing(
    tmp_path,
) -> None:
    from app.services.alerts.rules import validate_rule
    from app.services.alerts.store import FileAlertStore

    store = FileAlertStore(tmp_path / "new" / "dir" / "alerts.json")
    rule = validate_rule({"kind": "price_above", "symbol": "BTCUSDT", "threshold": 1}, {"BTCUSDT"})
    await store.add_rule(rule)
    assert (tmp_path / "new" / "dir" / "alerts.json").exists()
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    broken = FileAlertStore(blocker / "alerts.json")  # its directory cannot exist
    with pytest.raises(OSError):
        await broken.add_rule(rule)
    assert await broken.list_rules() == []


async def test_the_rule_cap_stores_nothing_beyond_it(open_store: StoreFactory) -> None:
    store = open_store()
    rules = [make_rule(at_ms=i) for i in range(3)]
    for rule in rules:
        await store.add_rule(rule, max_rules=3)
    with pytest.raises(TooManyRules, match="at most 3 alert rules") as caught:
        await store.add_rule(make_rule(at_ms=9), max_rules=3)
    assert caught.value.max_rules == 3
    assert await store.list_rules() == rules
    await store.add_rule(rules[0], max_rules=3)  # storing a rule again is no new rule
    assert await store.delete_rule(rules[0].id)
    newer = make_rule(at_ms=10)
    await store.add_rule(newer, max_rules=3)  # room again after a delete
    assert await store.list_rules() == [*rules[1:], newer]


async def test_concurrent_adds_cannot_pass_the_cap(open_store: StoreFactory) -> None:
    store = open_store()
    adds = [store.add_rule(make_rule(at_ms=i), max_rules=5) for i in range(20)]
    results = await asyncio.gather(*adds, return_exceptions=True)
    assert sum(r is None for r in results) == 5
    assert all(isinstance(r, TooManyRules) for r in results if r is not None)
    assert len(await store.list_rules()) == 5


def count_file_writes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The sizes of every file the file store writes from now on (the writes still happen)."""
    writes: list[int] = []
    real = alert_store.write_atomically

    def counted(path, data: bytes) -> None:
        writes.append(len(data))
        real(path, data)

    monkeypatch.setattr(alert_store, "write_atomically", counted)
    return writes


async def test_file_store_writes_the_engine_state_only_when_it_changed(
    tmp_path, monkeypatch
) -> None:
    writes = count_file_writes(monkeypatch)
    store = FileAlertStore(tmp_path / "alerts.json")
    state = {"version": 1, "entries": {"r|BTCUSDT": {"armed": False, "last_fired_ms": 5}}}
    await store.save_engine_state(state)
    for _ in range(5):
        await store.save_engine_state(json.loads(json.dumps(state)))  # equal, not identical
    assert len(writes) == 1
    state["entries"]["r|BTCUSDT"]["armed"] = True
    await store.save_engine_state(state)
    assert len(writes) == 2
    assert await FileAlertStore(tmp_path / "alerts.json").load_engine_state() == state
