"""Which browser pages may open ``/ws``: the ``Origin`` check of the handshake.

A WebSocket is not covered by the same-origin policy: any page a trader visits could
open ``wss://our-host/ws`` from the trader's browser, with the trader's cookies
(cross-site WebSocket hijacking). Browsers always send ``Origin`` on a WebSocket
handshake, so the server refuses an origin that is neither the page's own nor one the
operator listed (``VIRTUOSO_ALLOWED_ORIGINS``).

Decisions, deliberately:

* no ``Origin`` header: allowed. It is not a browser (scripts, the tests' clients,
  other services), and a non-browser client can send any ``Origin`` it likes anyway:
  the check protects browsers' users, it does not authenticate anyone;
* the page's own origin: ``Origin``'s host and port equal the request's ``Host`` (the
  shipped nginx passes the browser's, port included; ``X-Forwarded-Host`` is not read:
  no proxy of ours sets it), and its scheme is the connection's (``https`` for TLS;
  behind a trusted proxy, ``X-Forwarded-Proto``).
  Host names compare case-insensitively and a default port (80, 443) may be written
  or left out; a different port or scheme is another origin;
* ``null`` (sandboxed frames, ``file:``/``data:`` pages), anything that is not exactly
  ``scheme://host[:port]`` (a path, user info, another scheme, several origins):
  refused.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

DEFAULT_PORTS = {"http": 80, "https": 443}

# (scheme, host, port): an origin reduced to what "same origin" compares.
Origin = tuple[str, str, int]


def parse_origin(text: str) -> Origin | None:
    """``scheme://host[:port]`` → (scheme, lower-case host, port with the scheme's
    default); None for ``null`` and for anything else that is not such an origin."""
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError:  # a bad port, an unbalanced IPv6 bracket
        return None
    if (
        parts.scheme.lower() not in DEFAULT_PORTS
        or not parts.hostname
        or parts.path
        or parts.query
        or parts.fragment
        or "@" in parts.netloc
        or "," in text
    ):
        return None
    scheme = parts.scheme.lower()
    return scheme, parts.hostname, port if port is not None else DEFAULT_PORTS[scheme]


def parse_host(host: str, scheme: str) -> tuple[str, int] | None:
    """A ``Host`` header value (``host[:port]``) → (lower-case host, port); None if
    it is not one."""
    try:
        parts = urlsplit("//" + host.strip())
        port = parts.port
    except ValueError:
        return None
    if not parts.hostname or parts.path or parts.query or "@" in parts.netloc:
        return None
    return parts.hostname, port if port is not None else DEFAULT_PORTS[scheme]


class OriginPolicy:
    """The ``Origin`` check (see the module docstring).

    ``allowed``: extra origins (``scheme://host[:port]``, as the settings give them).
    ``trust_forwarded``: the request comes through our own proxies, whose
    ``X-Forwarded-Proto`` gives the client's scheme (the entry ``proxy_hops`` from the
    right, as for ``X-Forwarded-For``)."""

    def __init__(
        self, allowed: Iterable[str] = (), *, trust_forwarded: bool = False, proxy_hops: int = 1
    ) -> None:
        parsed = [(text, parse_origin(text)) for text in allowed]
        bad = [text for text, origin in parsed if origin is None]
        if bad:
            raise ValueError(f"not origins (scheme://host[:port]): {bad}")
        self.allowed: frozenset[Origin] = frozenset(o for _, o in parsed if o is not None)
        self.trust_forwarded = trust_forwarded
        self.proxy_hops = max(1, proxy_hops)

    def refusal(self, headers: Any, connection_scheme: str) -> str | None:
        """None when the handshake may go on, else why not (for the 403's message).
        ``headers``: the handshake's (``get``/``getlist``); ``connection_scheme``: the
        ASGI scheme (``ws``/``wss``, or ``http``/``https``)."""
        values = _values(headers, "Origin")
        if not values:
            return None  # not a browser: see the module docstring
        if len(values) > 1:
            return "more than one Origin header"
        origin = parse_origin(values[0])
        if origin is None:
            return f"origin {values[0][:100]!r} is not allowed"
        if origin in self.allowed or origin == self._own_origin(headers, connection_scheme):
            return None
        return f"origin {values[0][:100]!r} is not allowed"

    def _own_origin(self, headers: Any, connection_scheme: str) -> Origin | None:
        scheme = "https" if connection_scheme in ("wss", "https") else "http"
        host = headers.get("Host")
        if self.trust_forwarded:
            proto = self._forwarded(headers, "X-Forwarded-Proto")
            if proto is not None:
                scheme = {"https": "https", "wss": "https"}.get(proto.lower(), "http")
        if not host:
            return None
        parsed = parse_host(host, scheme)
        return None if parsed is None else (scheme, *parsed)

    def _forwarded(self, headers: Any, name: str) -> str | None:
        hops = [hop.strip() for v in _values(headers, name) for hop in v.split(",")]
        hops = [hop for hop in hops if hop]
        return hops[-min(self.proxy_hops, len(hops))] if hops else None


def _values(headers: Any, name: str) -> list[str]:
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return list(getlist(name))
    value = headers.get(name)
    return [] if value is None else [value]
