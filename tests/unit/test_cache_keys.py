"""The key scheme: readable keys for safe parts, valid Memcached keys for any input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cache.keys import FAMILIES, MAX_KEY_BYTES, SCHEMA_VERSION, is_valid_memcached_key, make_key
from app.services.catalogue import VIEW_FAMILIES, family_of, view_key, view_parts

families = st.sampled_from(FAMILIES)
# Any text, including unicode, spaces, control characters, surrogates and very long strings.
any_text = st.one_of(
    st.text(),
    st.text(st.characters(codec=None, categories=None), max_size=300),
    st.text(alphabet=st.sampled_from("ab:~ \t\n\x00\x7f-._é"), max_size=80),
    st.integers(0, 10_000).map(lambda n: "x" * n),
    st.from_regex(r"[A-Za-z0-9._-]{1,70}", fullmatch=True),
    st.from_regex(r"~[0-9a-f]{16}", fullmatch=True),
)
part_tuples = st.lists(any_text, max_size=6).map(tuple)
namespaces = st.sampled_from(["virtuoso", "", "staging-2", "a" * 64])


def test_readable_keys_for_safe_parts() -> None:
    assert SCHEMA_VERSION == 1
    assert make_key("confluence", "BTCUSDT", "5m", namespace="") == "v1:confluence:BTCUSDT:5m"
    assert make_key("dash:desktop") == "virtuoso:v1:dash:desktop"
    assert view_key("dashboard:desktop") == "virtuoso:v1:dash:desktop"
    assert view_key("confluence:BTCUSDT:5m") == "virtuoso:v1:confluence:BTCUSDT:5m"
    assert view_key("dashboard:mobile", namespace="staging") == "staging:v1:dash:mobile"


def test_every_view_name_has_a_family() -> None:
    assert set(VIEW_FAMILIES.values()) <= set(FAMILIES)
    assert family_of("dashboard:signals") == "signals"
    assert family_of("market:overview") == "overview"
    assert family_of("market:movers") == "movers"
    assert family_of("beta") == "beta"
    assert family_of("symbols") == "symbols"
    assert family_of("dashboard:overview") == "dash:overview"
    assert view_parts("confluence:ETHUSDT:all") == ("confluence", ("ETHUSDT", "all"))
    assert view_parts("candles:BTCUSDT:1h") == ("candles", ("BTCUSDT", "1h"))
    assert view_key("candles:BTCUSDT:1h") == "virtuoso:v1:candles:BTCUSDT:1h"


@pytest.mark.parametrize(
    "name", ["dashboard:tablet", "confluence:BTC", "confluence::5m", "candles:BTC", "market", ""]
)
def test_unknown_views_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="unknown view"):
        view_key(name)


def test_unknown_family_and_bad_namespace_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown cache family 'dash'"):
        make_key("dash", "desktop")
    with pytest.raises(ValueError, match="namespace"):
        make_key("market", namespace="has space")


def test_unsafe_parts_are_hashed() -> None:
    key = make_key("confluence", "BTC USDT", "5m")
    assert key.startswith("virtuoso:v1:confluence:~")
    assert key.endswith(":5m")
    assert len(key.split(":")[3]) == 17
    assert make_key("session", "") != make_key("session")  # an empty part still counts


def test_over_long_keys_hash_the_whole_tuple() -> None:
    parts = ["a" * 64] * 5  # each safe, together past 250 bytes
    key = make_key("session", *parts)
    assert is_valid_memcached_key(key)
    assert key.split(":")[3].startswith("~~")
    assert key != make_key("session", *parts[:4])


@pytest.mark.parametrize(
    ("key", "valid"),
    [
        ("virtuoso:v1:market", True),
        ("", False),
        ("a b", False),
        ("a\tb", False),
        ("a\x7fb", False),
        ("é", False),
        ("k" * MAX_KEY_BYTES, True),
        ("k" * (MAX_KEY_BYTES + 1), False),
    ],
)
def test_is_valid_memcached_key(key: str, valid: bool) -> None:
    assert is_valid_memcached_key(key) is valid


@settings(max_examples=300)
@given(families, part_tuples, namespaces)
def test_any_parts_give_a_valid_stable_key(family: str, parts: tuple, namespace: str) -> None:
    key = make_key(family, *parts, namespace=namespace)
    assert is_valid_memcached_key(key)
    assert len(key.encode()) <= MAX_KEY_BYTES
    assert key == make_key(family, *parts, namespace=namespace)


@settings(max_examples=500)
@given(families, part_tuples, families, part_tuples)
def test_distinct_inputs_give_distinct_keys(
    family_a: str, parts_a: tuple, family_b: str, parts_b: tuple
) -> None:
    if (family_a, parts_a) != (family_b, parts_b):
        assert make_key(family_a, *parts_a) != make_key(family_b, *parts_b)


@given(st.from_regex(r"[A-Za-z0-9._-]{1,64}", fullmatch=True), any_text)
def test_a_safe_part_never_equals_a_hashed_one(safe: str, other: str) -> None:
    if safe != other:
        assert make_key("market", safe) != make_key("market", other)


def test_lone_surrogates_and_nul_are_hashed() -> None:
    for part in ("\ud800", "\x00", "BTC\nUSDT", "ü" * 200):
        key = make_key("session", part)
        assert is_valid_memcached_key(key)
        assert key.split(":")[3].startswith("~")
    assert make_key("session", "\ud800") != make_key("session", "\udc00")
