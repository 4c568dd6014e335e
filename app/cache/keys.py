"""The one key scheme for every cache tier: ``{namespace}:v{SCHEMA_VERSION}:{family}:{part}…``.

``virtuoso:v1:dash:desktop``, ``virtuoso:v1:confluence:BTCUSDT:5m``. The namespace
lets several deployments share one Memcached; the schema version changes whenever
the stored bytes change meaning (``app.cache.codec``), so old and new code never
read each other's entries; the family is a node of the dependency graph in
``config/cache.yaml`` (``app.cache.policy``).

Memcached accepts keys of at most 250 bytes without whitespace or control
characters. Keys here are printable ASCII only, whatever the input:

* a part matching ``[A-Za-z0-9._-]{1,64}`` is used as it is;
* any other part (empty, long, unicode, spaces, colons, user-derived text) becomes
  ``~`` + 16 hex digits of its blake2b hash. ``~`` is not in the safe alphabet, so
  a hashed part can never equal a verbatim one, and no part contains ``:``, so the
  parts of a key split back unambiguously (distinct tuples, distinct keys, up to a
  64-bit hash collision between two hashed parts);
* if the key would still exceed 250 bytes (many long parts), every part is
  replaced by one ``~~`` + 32 hex digest of the whole tuple.

Families are fixed: a family name containing ``:`` (``dash:desktop``) is not a
segment prefix of another family, so the family is recovered from a key as well.
"""

from __future__ import annotations

import hashlib
import re

from app.backends.keyspace import DEFAULT_NAMESPACE, Keyspace

SCHEMA_VERSION = 1
MAX_KEY_BYTES = 250

FAMILIES: tuple[str, ...] = (
    "market",
    "confluence",
    "signals",
    "beta",
    "overview",
    "movers",
    "derivatives",
    "symbols",
    "candles",
    "dash:desktop",
    "dash:mobile",
    "dash:overview",
    "alerts",
    "session",
)

_SAFE_PART = re.compile(r"[A-Za-z0-9._-]{1,64}")
_PART_HASH_BYTES = 8  # 16 hex digits
_TUPLE_HASH_BYTES = 16  # 32 hex digits


def make_key(family: str, *parts: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The key of ``family`` with ``parts``; valid for Memcached whatever the parts hold.

    ``namespace=""`` leaves the prefix out (``v1:market``). Raises ValueError for an
    unknown family or a namespace outside ``[A-Za-z0-9._-]{1,64}``.
    """
    if family not in FAMILIES:
        raise ValueError(f"unknown cache family {family!r}; valid: {', '.join(FAMILIES)}")
    head = Keyspace(namespace).name(f"v{SCHEMA_VERSION}", family)
    texts = [str(part) for part in parts]
    key = ":".join([head, *(_encode_part(part) for part in texts)])
    if len(key) > MAX_KEY_BYTES:  # pure ASCII: characters are bytes
        key = f"{head}:~~{_digest(_tuple_bytes(texts), _TUPLE_HASH_BYTES)}"
    return key


def is_valid_memcached_key(key: str) -> bool:
    """1–250 bytes of printable ASCII without space (no control characters, no DEL)."""
    return 0 < len(key) <= MAX_KEY_BYTES and all(33 <= ord(char) <= 126 for char in key)


def _encode_part(part: str) -> str:
    if _SAFE_PART.fullmatch(part):
        return part
    return "~" + _digest(part.encode("utf-8", "surrogatepass"), _PART_HASH_BYTES)


def _tuple_bytes(parts: list[str]) -> bytes:
    """An unambiguous encoding of the tuple: each part length-prefixed."""
    out = bytearray()
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        out += b"%d:" % len(data) + data
    return bytes(out)


def _digest(data: bytes, size: int) -> str:
    return hashlib.blake2b(data, digest_size=size, person=b"virtuoso-key").hexdigest()
