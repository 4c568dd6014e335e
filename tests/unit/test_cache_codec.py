"""The tier encoding of a CacheEntry: round trips, compression, and corrupt input."""

from __future__ import annotations

import contextlib
import io
import random

import msgpack
import orjson
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from app.cache.codec import (
    COMPRESS_THRESHOLD,
    FLAG_ZSTD,
    FORMAT_VERSION,
    CorruptEntry,
    compress_body_tail,
    decode,
    encode,
    zstd_frame,
)
from app.cache.entry import CacheEntry

times = st.integers(0, 2**62)
bodies = st.one_of(
    st.binary(max_size=4096),
    st.integers(COMPRESS_THRESHOLD - 120, COMPRESS_THRESHOLD + 120).map(lambda n: b"{" * n),
    st.integers(COMPRESS_THRESHOLD - 120, COMPRESS_THRESHOLD + 120).flatmap(
        lambda n: st.binary(min_size=n, max_size=n)
    ),
)
entries = st.builds(
    CacheEntry,
    body=bodies,
    etag=st.text(max_size=40),
    generated_at_ms=st.integers(-(2**62), 2**62),
    ttl_ms=times,
    grace_ms=times,
    max_stale_ms=times,
    compute_ms=st.floats(allow_nan=False),
    compressed=st.none() | st.binary(max_size=2048),
)


def make_entry(body: bytes, compressed: bytes | None = None) -> CacheEntry:
    return CacheEntry(
        body=body,
        etag=CacheEntry.etag_of(body),
        generated_at_ms=1_790_000_000_000,
        ttl_ms=30_000,
        grace_ms=30_000,
        max_stale_ms=900_000,
        compute_ms=12.5,
        compressed=compressed,
    )


def json_body(size: int) -> bytes:
    row = b'{"symbol":"BTCUSDT","price":97000.5,"signal":"long"},'
    return b'{"rows":[' + row * (size // len(row)) + b"{}]}"


@settings(max_examples=300)
@given(entries)
def test_round_trip(entry: CacheEntry) -> None:
    assert decode(encode(entry)) == entry


def test_large_compressible_entries_are_compressed() -> None:
    entry = make_entry(json_body(50_000))
    data = encode(entry)
    assert data[0] == FORMAT_VERSION << 4 | FLAG_ZSTD
    assert len(data) < len(entry.body) // 5
    assert decode(data) == entry


def test_small_entries_are_not_compressed() -> None:
    entry = make_entry(b'{"a":' + b"1" * 500 + b"}")  # compressible but under the threshold
    data = encode(entry)
    assert data[0] == FORMAT_VERSION << 4
    assert len(data) <= COMPRESS_THRESHOLD + 1


def test_incompressible_entries_are_stored_as_they_are() -> None:
    entry = make_entry(random.Random(1).randbytes(20_000))
    assert encode(entry)[0] == FORMAT_VERSION << 4
    assert decode(encode(entry)) == entry


def test_entry_with_compressed_variant_round_trips() -> None:
    body = json_body(20_000)
    entry = make_entry(body, compressed=compress_body_tail(body))
    decoded = decode(encode(entry))
    assert decoded == entry
    assert zstandard.ZstdDecompressor().decompress(decoded.compressed) == body[1:]


def assert_corrupt(data: bytes) -> None:
    with pytest.raises(CorruptEntry):
        decode(data)


@settings(max_examples=500)
@given(st.binary(max_size=512))
def test_random_bytes_are_corrupt_or_an_entry(data: bytes) -> None:
    with contextlib.suppress(CorruptEntry):
        assert isinstance(decode(data), CacheEntry)


@settings(max_examples=300)
@given(st.binary(max_size=512))
def test_random_bytes_behind_a_valid_header_are_corrupt(data: bytes) -> None:
    for header in (FORMAT_VERSION << 4, FORMAT_VERSION << 4 | FLAG_ZSTD):
        with contextlib.suppress(CorruptEntry):
            decode(bytes([header]) + data)


@pytest.mark.parametrize("size", [100, 5_000])
def test_every_truncation_is_corrupt(size: int) -> None:
    data = encode(make_entry(json_body(size), compressed=b"\x28\xb5\x2f\xfd"))
    for cut in range(len(data)):
        assert_corrupt(data[:cut])


@pytest.mark.parametrize("size", [100, 5_000])
def test_trailing_bytes_are_corrupt(size: int) -> None:
    assert_corrupt(encode(make_entry(json_body(size))) + b"\x00")


def test_wrong_header_is_corrupt() -> None:
    small, large = encode(make_entry(b"{}")), encode(make_entry(json_body(5_000)))
    assert_corrupt(b"")
    assert_corrupt(bytes([(FORMAT_VERSION + 1) << 4]) + small[1:])  # a future version
    assert_corrupt(bytes([0]) + small[1:])
    assert_corrupt(bytes([small[0] | 0x08]) + small[1:])  # an unknown flag
    assert_corrupt(bytes([small[0] | FLAG_ZSTD]) + small[1:])  # flipped: claims zstd
    assert_corrupt(bytes([large[0] & ~FLAG_ZSTD]) + large[1:])  # flipped: hides zstd
    assert_corrupt(bytes([FORMAT_VERSION << 4 | FLAG_ZSTD]) + b"\x28\xb5\x2f\xfdgarbage")


FIELDS = {
    "body": b"{}",
    "etag": 'W/"x"',
    "generated_at_ms": 1,
    "ttl_ms": 2,
    "grace_ms": 3,
    "max_stale_ms": 4,
    "compute_ms": 0.5,
    "compressed": None,
}


def packed(value: object, compress: bool = False) -> bytes:
    payload = msgpack.packb(value, use_bin_type=True)
    if compress:
        return bytes([FORMAT_VERSION << 4 | FLAG_ZSTD]) + zstd_frame(payload)
    return bytes([FORMAT_VERSION << 4]) + payload


@pytest.mark.parametrize(
    "value",
    [
        None,
        [],
        list(FIELDS.values()),
        "entry",
        {k: v for k, v in FIELDS.items() if k != "etag"},  # a field missing
        FIELDS | {"extra": 1},  # a field too many
        FIELDS | {"body": "{}"},  # str, not bin
        FIELDS | {"etag": b"x"},
        FIELDS | {"ttl_ms": 2.5},
        FIELDS | {"ttl_ms": True},
        FIELDS | {"grace_ms": -1},
        FIELDS | {"generated_at_ms": None},
        FIELDS | {"compute_ms": "fast"},
        FIELDS | {"compressed": "zstd"},
        {1: 2},
    ],
)
@pytest.mark.parametrize("compress", [False, True])
def test_valid_msgpack_of_the_wrong_shape_is_corrupt(value: object, compress: bool) -> None:
    assert_corrupt(packed(value, compress))


def test_the_right_shape_decodes() -> None:
    assert decode(packed(FIELDS)) == CacheEntry(**FIELDS)
    assert decode(packed(FIELDS, compress=True)) == CacheEntry(**FIELDS)


def test_frame_without_content_size_is_corrupt() -> None:
    payload = msgpack.packb(FIELDS, use_bin_type=True)
    frame = zstandard.ZstdCompressor(write_content_size=False).compress(payload)
    assert_corrupt(bytes([FORMAT_VERSION << 4 | FLAG_ZSTD]) + frame)


def read_across_frames(data: bytes) -> bytes:
    reader = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data), read_across_frames=True)
    return reader.read()


def test_prefix_frame_and_body_tail_concatenate() -> None:
    data = zstd_frame(b'{"age_ms":1,') + compress_body_tail(b'{"a":1}')
    assert read_across_frames(data) == b'{"age_ms":1,"a":1}'


@given(st.dictionaries(st.text(max_size=8), st.integers(-(2**63), 2**63 - 1), min_size=1))
def test_any_body_tail_concatenates(obj: dict) -> None:
    body = orjson.dumps(obj)
    data = zstd_frame(b'{"age_ms":5,"stale":false,') + compress_body_tail(body)
    assert orjson.loads(read_across_frames(data)) == {"age_ms": 5, "stale": False} | obj


def test_body_tail_needs_a_json_object() -> None:
    with pytest.raises(ValueError, match="JSON object"):
        compress_body_tail(b"[1]")
