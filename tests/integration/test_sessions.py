"""Server-side sessions: both stores, signed cookies, watchlist validation."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest
from hypothesis import given
from hypothesis import strategies as st
from werkzeug.datastructures import Headers

from app.backends.errors import TierUnavailable
from app.backends.keyspace import Keyspace
from app.main.embedded import create_app
from app.resilience.redis_breaker import redis_guard
from app.services.sessions import (
    MAX_SESSION_BYTES,
    MAX_WATCHLIST,
    SESSION_TTL_SECONDS,
    MemorySessionStore,
    RedisSessionStore,
    SessionCookies,
    SessionStore,
    readable_watchlist,
    validate_watchlist,
)
from tests.conftest import ManualClock, make_settings

# Redis's bound: no test here is about Redis timing out (a slow answer on a busy
# machine must not fail them; a killed Redis is refused at once).
PATIENT = 5.0
KNOWN = {"BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT"}
DATA = {"watchlist": ["BTCUSDT", "ETHUSDT"], "preferences": {"theme": "dark", "timeframe": "1h"}}


@pytest.fixture
def client(redis_client):
    return redis_client


@pytest.fixture
def redis_store(client) -> RedisSessionStore:
    return RedisSessionStore(
        client, keyspace=Keyspace("sessions-test"), guard=redis_guard(timeout_seconds=PATIENT)
    )


# -- stores -----------------------------------------------------------------------------


@pytest.fixture(params=["memory", "redis"])
def store(request: pytest.FixtureRequest) -> SessionStore:
    if request.param == "memory":
        return MemorySessionStore(max_entries=100)
    return request.getfixturevalue("redis_store")


async def test_round_trip(store: SessionStore) -> None:
    session_id = SessionCookies.new_id()
    assert await store.load(session_id) == {}
    await store.save(session_id, DATA)
    assert await store.load(session_id) == DATA

    loaded = await store.load(session_id)
    loaded["watchlist"].append("SOLUSDT")  # a copy: the stored session is unchanged
    assert await store.load(session_id) == DATA

    await store.save(session_id, {"watchlist": []})
    assert await store.load(session_id) == {"watchlist": []}
    await store.delete(session_id)
    assert await store.load(session_id) == {}


async def test_bad_data_is_rejected(store: SessionStore) -> None:
    session_id = SessionCookies.new_id()
    with pytest.raises(ValueError, match="JSON object"):
        await store.save(session_id, ["not", "a", "dict"])  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not JSON"):
        await store.save(session_id, {"when": object()})
    with pytest.raises(ValueError, match="bytes"):
        await store.save(session_id, {"notes": "x" * MAX_SESSION_BYTES})
    assert await store.load(session_id) == {}


async def test_redis_keeps_json_under_the_session_key_with_a_sliding_ttl(
    redis_store: RedisSessionStore, client
) -> None:
    session_id = SessionCookies.new_id()
    await redis_store.save(session_id, DATA)
    key = "sessions-test:session:" + session_id
    assert await client.get(key) == b'{"watchlist":["BTCUSDT","ETHUSDT"],' + (
        b'"preferences":{"theme":"dark","timeframe":"1h"}}'
    )
    assert SESSION_TTL_SECONDS - 5 <= await client.ttl(key) <= SESSION_TTL_SECONDS

    await client.expire(key, 100)
    assert await redis_store.load(session_id) == DATA  # reading restarts the TTL
    assert await client.ttl(key) > SESSION_TTL_SECONDS - 5


async def test_redis_ignores_a_corrupt_session(redis_store: RedisSessionStore, client) -> None:
    session_id = SessionCookies.new_id()
    await client.set(redis_store.key(session_id), b"\xff not json")
    assert await redis_store.load(session_id) == {}


async def test_redis_down_raises_tier_unavailable(redis, redis_store: RedisSessionStore) -> None:
    session_id = SessionCookies.new_id()
    await redis_store.save(session_id, DATA)
    redis.kill()
    with pytest.raises(TierUnavailable):
        await redis_store.save(session_id, {"watchlist": []})
    with pytest.raises(TierUnavailable):
        await redis_store.load(session_id)
    assert redis_store.counters["errors"] == 2


async def test_memory_store_evicts_the_least_recently_used() -> None:
    store = MemorySessionStore(max_entries=3)
    for session_id in ("a", "b", "c"):
        await store.save(session_id, {"id": session_id})
    assert await store.load("a") == {"id": "a"}  # a is now the most recently used
    await store.save("d", {"id": "d"})

    assert len(store) == 3
    assert "b" not in store
    assert await store.load("b") == {}
    assert [await store.load(s) for s in ("a", "c", "d")] == [{"id": "a"}, {"id": "c"}, {"id": "d"}]
    assert store.evictions == 1


async def test_memory_store_sessions_expire_and_reads_slide_the_ttl() -> None:
    clock = ManualClock()
    store = MemorySessionStore(ttl_seconds=100, clock=clock)
    await store.save("a", {"n": 1})
    await store.save("b", {"n": 2})
    clock.advance(60)
    assert await store.load("a") == {"n": 1}  # slides a to 160
    clock.advance(60)
    assert await store.load("b") == {}
    assert await store.load("a") == {"n": 1}
    clock.advance(101)
    assert await store.load("a") == {}
    assert len(store) == 0


def test_memory_store_needs_room() -> None:
    with pytest.raises(ValueError):
        MemorySessionStore(max_entries=0)


# -- cookies ----------------------------------------------------------------------------


def test_cookie_round_trip() -> None:
    cookies = SessionCookies("secret")
    session_id = cookies.new_id()
    assert session_id != cookies.new_id()
    cookie = cookies.sign(session_id)
    assert cookie.startswith(session_id + ".")
    assert cookies.unsign(cookie) == session_id
    assert cookies.unsign(cookie.encode()) == session_id


def flip(text: str, index: int) -> str:
    index %= len(text)
    assert text[index] != "."
    return text[:index] + ("A" if text[index] != "A" else "B") + text[index + 1 :]


@pytest.mark.parametrize(
    "tamper",
    [
        lambda c: flip(c, -10),  # signature (not its last char: that one holds padding bits)
        lambda c: flip(c, -49),  # timestamp (its second char)
        lambda c: ("A" if c[0] != "A" else "B") + c[1:],  # session id
        lambda c: c.split(".")[0],  # no signature
        lambda c: c + ".extra",
        lambda c: "",
        lambda c: "garbage",
        lambda c: "ümlaut.x.y",
    ],
)
def test_tampered_cookie_is_none(tamper) -> None:
    cookies = SessionCookies("secret")
    cookie = cookies.sign(cookies.new_id())
    assert cookies.unsign(tamper(cookie)) is None


def test_cookie_of_another_key_or_salt_is_none() -> None:
    cookie = SessionCookies("secret").sign(SessionCookies.new_id())
    assert SessionCookies("other secret").unsign(cookie) is None
    assert SessionCookies("secret", salt="other").unsign(cookie) is None
    assert SessionCookies("secret").unsign(None) is None


def test_expired_cookie_is_none() -> None:
    clock = ManualClock()
    cookies = SessionCookies("secret", max_age_seconds=3600, clock=clock)
    cookie = cookies.sign(cookies.new_id())
    clock.advance(3600)
    assert cookies.unsign(cookie) is not None
    clock.advance(2)
    assert cookies.unsign(cookie) is None


def test_key_rotation_accepts_old_cookies() -> None:
    session_id = SessionCookies.new_id()
    old_cookie = SessionCookies("old").sign(session_id)
    rotated = SessionCookies(["old", "new"])
    assert rotated.unsign(old_cookie) == session_id
    assert SessionCookies("new").unsign(rotated.sign(session_id)) == session_id


def test_only_session_ids_are_signed_and_a_key_is_required() -> None:
    cookies = SessionCookies("secret")
    with pytest.raises(ValueError):
        cookies.sign("short")
    with pytest.raises(ValueError):
        cookies.sign("not/an/id" * 5)
    for key in ("", b"", []):
        with pytest.raises(ValueError):
            SessionCookies(key)


# -- watchlist --------------------------------------------------------------------------


def test_watchlist_is_canonical_deduplicated_and_ordered() -> None:
    symbols = ["eth/usdt", "BTC-USDT", "ETHUSDT", "btcusdt", "sol_usdt"]
    assert validate_watchlist(symbols, KNOWN) == ["ETHUSDT", "BTCUSDT", "SOLUSDT"]
    assert validate_watchlist([], KNOWN) == []


def test_unknown_symbols_are_named_with_the_valid_ones() -> None:
    with pytest.raises(ValueError) as error:
        validate_watchlist(["BTCUSDT", "DOGEUSDT", "!!", "btc/usdt"], KNOWN)
    message = str(error.value)
    assert "unknown symbols: DOGEUSDT, !!" in message
    assert "valid symbols: BTCUSDT, ETHUSDT, SOLUSDT, XRPUSDT" in message


def test_a_single_unknown_symbol_and_non_strings() -> None:
    with pytest.raises(ValueError, match=r"unknown symbol: 42; valid"):
        validate_watchlist(["BTCUSDT", 42], KNOWN)  # type: ignore[list-item]
    with pytest.raises(ValueError, match="list"):
        validate_watchlist("BTCUSDT", KNOWN)  # type: ignore[arg-type]


def test_watchlist_size_is_bounded() -> None:
    known = {f"C{i:03d}USDT" for i in range(MAX_WATCHLIST + 1)}
    symbols = sorted(known)
    assert validate_watchlist(symbols[:MAX_WATCHLIST], known) == symbols[:MAX_WATCHLIST]
    assert len(validate_watchlist(symbols[:MAX_WATCHLIST] * 2, known)) == MAX_WATCHLIST
    with pytest.raises(ValueError, match=f"at most {MAX_WATCHLIST}"):
        validate_watchlist(symbols, known)


@pytest.mark.parametrize(
    ("stored", "read"),
    [
        (["BTCUSDT", "SOLUSDT"], ["BTCUSDT", "SOLUSDT"]),  # a delisted pair is kept
        (["btc/usdt", "BTCUSDT", "eth-usdt"], ["BTCUSDT", "ETHUSDT"]),
        (["BTCUSDT", 42, None, {"s": 1}, ["ETHUSDT"], "", "<script>", "x" * 500], ["BTCUSDT"]),
        ("BTCUSDT", []),
        (None, []),
        ({"watchlist": ["BTCUSDT"]}, []),
    ],
)
def test_a_stored_watchlist_reads_back_as_symbols(stored: object, read: list[str]) -> None:
    assert readable_watchlist(stored) == read


async def test_malformed_stored_entries_never_reach_the_page(store: SessionStore) -> None:
    await store.save("s" * 43, {"watchlist": ["GONEUSDT", 7, "eth/usdt"], "theme": "dark"})
    assert await store.load("s" * 43) == {"watchlist": ["GONEUSDT", "ETHUSDT"], "theme": "dark"}
    many = [f"C{i:03d}USDT" for i in range(MAX_WATCHLIST + 5)]
    await store.save("t" * 43, {"watchlist": many})
    assert (await store.load("t" * 43))["watchlist"] == many[:MAX_WATCHLIST]


NOTATIONS = st.sampled_from(["{b}{q}", "{b}/{q}", "{b}-{q}", "{b}_{q}", " {b}{q} "])


@given(
    st.lists(
        st.tuples(st.sampled_from(sorted(KNOWN)), NOTATIONS, st.booleans()),
        max_size=30,
    )
)
def test_watchlist_property(entries: list[tuple[str, str, bool]]) -> None:
    symbols = []
    for symbol, notation, lower in entries:
        text = notation.format(b=symbol[:-4], q=symbol[-4:])
        symbols.append(text.lower() if lower else text)
    result = validate_watchlist(symbols, KNOWN)
    expected = list(dict.fromkeys(symbol for symbol, _, _ in entries))
    assert result == expected


# -- the cookie's Secure flag -----------------------------------------------------------


def secure_cookie(hops: str | None, scheme: str = "http", forwarded: Sequence[str] = ()) -> bool:
    """Whether GET /api/session/watchlist, as described, sets a ``Secure`` cookie."""
    environ = {"VIRTUOSO_TRUSTED_PROXY_HOPS": hops} if hops is not None else {}
    app = create_app(make_settings(**environ))
    headers = Headers([("X-Forwarded-Proto", value) for value in forwarded])

    async def fetch() -> str:
        response = await app.test_client().get(
            "/api/session/watchlist", headers=headers, scheme=scheme
        )
        assert response.status_code == 200
        return response.headers["Set-Cookie"]

    cookie = asyncio.run(fetch())
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie
    return "; Secure" in cookie


def test_cookie_is_secure_on_https_through_the_trusted_proxy() -> None:
    assert secure_cookie("1", forwarded=["https"])
    assert secure_cookie("1", forwarded=["HTTPS"])
    # the nearest proxy's value is the last one: what a client added before it is not
    assert secure_cookie("1", forwarded=["http, https"])
    assert secure_cookie("1", forwarded=["http", "https"])
    assert not secure_cookie("1", forwarded=["https, http"])
    assert not secure_cookie("1", forwarded=["http"])
    assert not secure_cookie("1")  # no header from the proxy: the request's own scheme


def test_a_forwarded_proto_without_trusted_proxies_does_not_count() -> None:
    assert not secure_cookie(None, forwarded=["https"])
    assert not secure_cookie("0", forwarded=["https"])
    assert secure_cookie(None, scheme="https")
    assert secure_cookie("0", scheme="https", forwarded=["http"])
