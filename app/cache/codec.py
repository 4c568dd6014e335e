"""The bytes of a CacheEntry in a shared tier (Memcached, Redis), and zstd helpers.

Layout: one header byte, then the payload.

* header: high nibble = format version (``FORMAT_VERSION``), low nibble = flags;
  ``FLAG_ZSTD`` says the payload is one zstd frame. Unknown versions or flags are
  refused rather than guessed at.
* payload: a msgpack map of the entry's fields by name (``body`` and ``compressed``
  as bin). A map rather than an array costs ~80 bytes per entry and makes a
  wrong-shaped value easy to recognise; layout changes bump the version (and
  ``app.cache.keys.SCHEMA_VERSION``, so old and new code use different keys).
* the payload is zstd-compressed (level 3) only when it is larger than
  ``COMPRESS_THRESHOLD`` and compression actually shrinks it: small entries are not
  worth a frame header and a decompression, incompressible ones (an entry that is
  mostly its ``compressed`` variant) not worth the decompression.

``decode`` raises ``CorruptEntry`` and nothing else for any input it cannot turn
back into a valid entry; the cache counts that and treats it as a miss.

zstandard compressor and decompressor objects are not thread-safe and ``encode``
may run in worker threads, so each thread gets its own (``threading.local``).
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack
import zstandard

from app.cache.entry import CacheEntry

FORMAT_VERSION = 1
FLAG_ZSTD = 0x01
KNOWN_FLAGS = FLAG_ZSTD
COMPRESS_THRESHOLD = 1024  # payload bytes; at or below it the payload is stored as it is
ZSTD_LEVEL = 3
MAX_PAYLOAD_BYTES = 256 * 1024 * 1024  # a frame claiming more is refused before inflating

_INT_FIELDS = ("generated_at_ms", "ttl_ms", "grace_ms", "max_stale_ms")
_FIELDS = frozenset({"body", "etag", *_INT_FIELDS, "compute_ms", "compressed"})


class CorruptEntry(Exception):
    """Bytes that do not decode to a CacheEntry (truncated, foreign, other version)."""


class _ZstdContexts(threading.local):
    def __init__(self) -> None:
        self.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL, write_content_size=True)
        self.decompressor = zstandard.ZstdDecompressor()


_contexts = _ZstdContexts()


def zstd_frame(data: bytes) -> bytes:
    """One zstd frame holding ``data`` (with its content size in the frame header)."""
    return _contexts.compressor.compress(data)


def compress_body_tail(body: bytes) -> bytes:
    """zstd frame of ``body[1:]``: the JSON object without its ``{``.

    Sent after a small frame holding ``{"age_ms":…,"stale":…,`` to clients that accept
    ``Content-Encoding: zstd``; concatenated frames decompress to the whole object.
    """
    if not body.startswith(b"{"):
        raise ValueError("body must be a JSON object (start with '{')")
    return zstd_frame(body[1:])


def encode(entry: CacheEntry) -> bytes:
    payload = msgpack.packb(
        {
            "body": bytes(entry.body),
            "etag": entry.etag,
            "generated_at_ms": entry.generated_at_ms,
            "ttl_ms": entry.ttl_ms,
            "grace_ms": entry.grace_ms,
            "max_stale_ms": entry.max_stale_ms,
            "compute_ms": float(entry.compute_ms),
            "compressed": None if entry.compressed is None else bytes(entry.compressed),
        },
        use_bin_type=True,
    )
    if len(payload) > COMPRESS_THRESHOLD:
        frame = zstd_frame(payload)
        if len(frame) < len(payload):
            return bytes([FORMAT_VERSION << 4 | FLAG_ZSTD]) + frame
    return bytes([FORMAT_VERSION << 4]) + payload


def decode(data: bytes) -> CacheEntry:
    """The entry ``encode`` made; CorruptEntry for anything else."""
    if not data:
        raise CorruptEntry("empty value")
    header = data[0]
    version, flags = header >> 4, header & 0x0F
    if version != FORMAT_VERSION:
        raise CorruptEntry(f"format version {version}, expected {FORMAT_VERSION}")
    if flags & ~KNOWN_FLAGS:
        raise CorruptEntry(f"unknown flags {flags:#x}")
    payload = bytes(data[1:])
    if flags & FLAG_ZSTD:
        payload = _inflate(payload)
    try:
        fields = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as error:  # msgpack raises several types (ValueError, ExtraData, …)
        raise CorruptEntry(f"invalid msgpack: {error}") from None
    return _entry_from(fields)


def _inflate(frame: bytes) -> bytes:
    try:
        size = zstandard.frame_content_size(frame)
    except zstandard.ZstdError as error:
        raise CorruptEntry(f"invalid zstd frame: {error}") from None
    if not 0 <= size <= MAX_PAYLOAD_BYTES:  # -1: size not recorded, which encode never does
        raise CorruptEntry(f"zstd frame content size {size} not accepted")
    try:
        inflater = _contexts.decompressor.decompressobj()
        payload = inflater.decompress(frame)
    except zstandard.ZstdError as error:
        raise CorruptEntry(f"invalid zstd frame: {error}") from None
    if not inflater.eof or inflater.unused_data or len(payload) != size:
        raise CorruptEntry("truncated zstd frame or data after it")
    return payload


def _entry_from(fields: Any) -> CacheEntry:
    if not isinstance(fields, dict) or set(fields) != _FIELDS:
        raise CorruptEntry("payload is not a map of exactly the entry's fields")
    body, etag, compute_ms, compressed = (
        fields["body"],
        fields["etag"],
        fields["compute_ms"],
        fields["compressed"],
    )
    if not isinstance(body, bytes) or not isinstance(etag, str):
        raise CorruptEntry("body must be bin and etag str")
    if compressed is not None and not isinstance(compressed, bytes):
        raise CorruptEntry("compressed must be bin or nil")
    if type(compute_ms) not in (float, int):
        raise CorruptEntry("compute_ms must be a number")
    times = [fields[name] for name in _INT_FIELDS]
    if any(type(value) is not int for value in times) or min(times[1:]) < 0:
        raise CorruptEntry("times must be integers and ttl, grace, max_stale ≥ 0")
    generated_at_ms, ttl_ms, grace_ms, max_stale_ms = times
    return CacheEntry(
        body=body,
        etag=etag,
        generated_at_ms=generated_at_ms,
        ttl_ms=ttl_ms,
        grace_ms=grace_ms,
        max_stale_ms=max_stale_ms,
        compute_ms=float(compute_ms),
        compressed=compressed,
    )
