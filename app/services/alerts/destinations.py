"""Outbound destination policy: where the service may connect on a user's behalf.

Alert webhooks are URLs chosen by API clients, so without a policy the service would
POST to its own loopback services, the cloud metadata endpoint or the private network
(server-side request forgery). This module is pure: it classifies addresses, parses
every host spelling an HTTP client accepts, and checks a URL against the policy with a
resolver the caller supplies (``Resolve``). The sender
(``app.services.alerts.apprise_sender``) checks every host a channel connects to before
each attempt; Apprise then resolves the name again itself, so a name that re-resolves to
an internal address between the check and that connection (DNS rebinding) is not caught.

An address is allowed when ``ipaddress`` calls it global (the IANA IPv4 and IPv6
Special-Purpose Address Registries, RFC 6890 and its updates) and it is not
multicast, not in a special block older Pythons still call global (``_EXTRA_BLOCKS``),
not a deprecated IPv4-compatible IPv6 address, and any IPv4 address it embeds
(IPv4-mapped ``::ffff:0:0/96``, NAT64 ``64:ff9b::/96`` RFC 6052, 6to4 ``2002::/16``
RFC 3056) is allowed too. Operators may allow internal destinations by host name, IP
address or CIDR network (``VIRTUOSO_WEBHOOK_ALLOW``). Ports are not restricted.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network
from urllib.parse import urlsplit

import yarl

from app.hosts import ALLOW_SETTING, HOST_NAME, IPNetwork, normalize_host, parse_allow_list

IPAddress = IPv4Address | IPv6Address
# (host name, port) → the addresses it resolves to, as strings; raises OSError on failure.
Resolve = Callable[[str, int], Awaitable[list[str]]]

SCHEMES = ("http", "https")

_SHARED = IPv4Network("100.64.0.0/10")  # RFC 6598 shared address space (carrier NAT)
_PRIVATE = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)
# Not globally reachable per the IANA registries, yet global to Python 3.11's ipaddress.
_EXTRA_BLOCKS: tuple[tuple[IPNetwork, str], ...] = tuple(
    (ipaddress.ip_network(net), what)
    for net, what in (
        ("192.0.0.0/24", "an IETF protocol assignment (RFC 6890)"),
        ("192.88.99.0/24", "a deprecated 6to4 relay anycast address (RFC 7526)"),
        ("64:ff9b:1::/48", "a local-use NAT64 address (RFC 8215)"),
        ("3fff::/20", "a documentation address (RFC 9637)"),
        ("5f00::/16", "a segment routing SID (RFC 9602)"),
        ("fec0::/10", "a deprecated site-local address (RFC 3879)"),
    )
)
_MAPPED = IPv6Network("::ffff:0:0/96")
_COMPATIBLE = IPv6Network("::/96")  # deprecated IPv4-compatible, RFC 4291 §2.5.5.1
_NAT64 = IPv6Network("64:ff9b::/96")
_6TO4 = IPv6Network("2002::/16")
# One label of a numeric IPv4 spelling as inet_aton(3) reads it: decimal, 0-octal, 0x-hex.
_NUMERIC_LABEL = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)$")


class DestinationRefused(OSError):
    """A destination the policy refuses (an OSError: like a failed connection, it
    means the destination cannot be reached).

    ``host``: the host as written (no userinfo, path or query: safe to log);
    ``reason``: why, e.g. "127.0.0.1 is a loopback address"; ``internal``: whether the
    allow-list could help (not for a malformed host)."""

    def __init__(self, host: str, reason: str, *, internal: bool = True) -> None:
        self.host = host
        self.reason = reason
        hint = f"; destinations must be public ({ALLOW_SETTING} lists internal ones)"
        super().__init__(reason + (hint if internal else ""))

    def __str__(self) -> str:
        return str(self.args[0])


def classify(address: IPAddress) -> str | None:
    """Why ``address`` must not be connected to ("a loopback address", …), or None when
    it is globally reachable. Sources: IANA IPv4/IPv6 Special-Purpose Address Registries
    (RFC 6890), RFC 1918, RFC 4193, RFC 6598, RFC 4291, RFC 6052, RFC 3056."""
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        kind, v4 = embedded
        inner = classify(v4)
        if inner is not None:
            return f"{kind} of {v4}, {inner}"
        if address not in _6TO4:  # IPv4-mapped or NAT64: the IPv4 address decides
            return None
    reason = _plain_reason(address)
    if reason is None and isinstance(address, IPv6Address) and address in _COMPATIBLE:
        return "a deprecated IPv4-compatible IPv6 address (RFC 4291)"
    return reason


def _plain_reason(address: IPAddress) -> str | None:
    checks = (
        (address.is_unspecified, "an unspecified address"),
        (address.is_loopback, "a loopback address"),
        (address.is_link_local, "a link-local address"),
        (address.is_multicast, "a multicast address"),
        (address in _SHARED, "a shared address space address (RFC 6598)"),
        (any(address in net for net in _PRIVATE), "a private address"),
        (address.is_reserved, "a reserved address"),
    )
    for matched, reason in checks:
        if matched:
            return reason
    for net, what in _EXTRA_BLOCKS:
        if address in net:
            return what
    return None if address.is_global else "a special-purpose (non-global) address"


def _embedded_ipv4(address: IPAddress) -> tuple[str, IPv4Address] | None:
    """(how, the IPv4 address) for IPv4-mapped, NAT64 and 6to4 addresses, else None."""
    if not isinstance(address, IPv6Address):
        return None
    if address.ipv4_mapped is not None:
        return "an IPv4-mapped form", address.ipv4_mapped
    if address in _NAT64:
        return "a NAT64 form", IPv4Address(int(address) & 0xFFFFFFFF)
    if address.sixtofour is not None:
        return "a 6to4 form", address.sixtofour
    return None


def parse_numeric_host(host: str) -> IPAddress | None:
    """The address a numeric host spelling means, or None for a host name.

    Accepts what URL parsers and ``getaddrinfo`` accept: IPv6 with or without brackets
    (and a zone, ``fe80::1%eth0``), and IPv4 as inet_aton(3) reads it — dotted quad,
    decimal ``2130706433``, octal ``0177.0.0.1``, hex ``0x7f.1``, short ``127.1``.
    Raises ValueError for a numeric-looking host that is no address (e.g. ``1.2.3.999``:
    no client can use it, and it must not fall through to a name lookup)."""
    text = host.strip().removeprefix("[").removesuffix("]")
    if ":" in text:
        try:
            return IPv6Address(text)
        except ValueError:
            raise ValueError(f"{host} is not a valid IPv6 address") from None
    labels = text.removesuffix(".").split(".")
    if not text or not all(_NUMERIC_LABEL.match(label) for label in labels):
        return None
    value = _inet_aton(labels)
    if value is None:
        raise ValueError(f"{host} is not a valid IPv4 address")
    return IPv4Address(value)


def _inet_aton(labels: list[str]) -> int | None:
    """inet_aton(3): up to four parts, the last one filling the remaining bytes."""
    if len(labels) > 4:
        return None
    try:
        numbers = [_aton_number(label) for label in labels]
    except ValueError:  # e.g. "08": not octal
        return None
    *head, last = numbers
    if any(n > 255 for n in head) or last >= 1 << (8 * (4 - len(head))):
        return None
    value = 0
    for n in head:
        value = value << 8 | n
    return value << (8 * (4 - len(head))) | last


def _aton_number(label: str) -> int:
    if label[:2].lower() == "0x":
        return int(label[2:] or "0", 16)
    return int(label, 8 if label.startswith("0") else 10)


@dataclass(frozen=True)
class DestinationPolicy:
    """What may be connected to: global addresses, plus the operator's allow-list.

    ``allow``: lower-cased host names (exact match, no wildcards), IP addresses or CIDR
    networks (``10.0.0.0/8``, ``fd00::/8``), as in ``Settings.webhook_allow``. A name on
    the list is allowed whatever it resolves to; an address is allowed when it (or the
    IPv4 address it embeds) lies in a listed network. Raises ValueError for an entry
    that is neither a network nor a host name."""

    allow: tuple[str, ...] = ()
    names: frozenset[str] = field(init=False)
    networks: tuple[IPNetwork, ...] = field(init=False)

    def __post_init__(self) -> None:
        names, networks = parse_allow_list(self.allow)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "networks", networks)

    def name_allowed(self, host: str) -> bool:
        """Whether the host name itself is on the allow-list."""
        return normalize_host(host) in self.names

    def refusal(self, address: IPAddress) -> str | None:
        """Why ``address`` is refused, or None when it is global or allowed."""
        if self._listed(address):
            return None
        return classify(address)

    def _listed(self, address: IPAddress) -> bool:
        candidates: list[IPAddress] = [address]
        embedded = _embedded_ipv4(address)
        if embedded is not None:
            candidates.append(embedded[1])
        if isinstance(address, IPv6Address) and address.scope_id:
            candidates.append(IPv6Address(str(address).split("%")[0]))
        return any(
            a in net for a in candidates for net in self.networks if a.version == net.version
        )

    def check_literal(self, host: str) -> bool:
        """For a numeric host (any spelling): raises DestinationRefused when refused and
        returns True; for a name on the allow-list True; for any other name False (it
        must be resolved and its addresses checked). Refuses ``localhost`` and
        ``*.localhost`` (RFC 6761) without a lookup."""
        if self.name_allowed(host):
            return True
        try:
            address = parse_numeric_host(host)
        except ValueError as error:
            raise DestinationRefused(host, str(error), internal=False) from None
        if address is None:
            name = normalize_host(host)
            if name == "localhost" or name.endswith(".localhost"):
                raise DestinationRefused(host, f"{name} is a loopback name (RFC 6761)")
            return False
        reason = self.refusal(address)
        if reason is not None:
            shown = host if normalize_host(host) == str(address) else f"{host} ({address})"
            raise DestinationRefused(host, f"{shown} is {reason}")
        return True

    def check_resolved(self, host: str, addresses: Iterable[str]) -> None:
        """Raises DestinationRefused when ``host`` is not on the allow-list and any of
        its resolved ``addresses`` is refused (all must pass: the client may use any),
        or when there is none."""
        if self.name_allowed(host):
            return
        found = list(addresses)
        if not found:
            raise DestinationRefused(host, f"{host} resolves to no address")
        for text in found:
            reason = self.refusal(ipaddress.ip_address(text))
            if reason is not None:
                raise DestinationRefused(host, f"{host} resolves to {text}, {reason}")

    async def check_host(self, host: str, port: int, resolve: Resolve) -> None:
        """One host a connection would go to: its spelling when numeric (or
        ``localhost``), else every address ``resolve`` gives now. Raises
        DestinationRefused (a host that cannot be resolved too: it cannot be checked)."""
        if self.check_literal(host):
            return
        try:
            addresses = await resolve(host, port)
        except OSError as error:  # TimeoutError included
            reason = error.strerror or type(error).__name__
            message = f"{host} cannot be resolved ({reason})"
            raise DestinationRefused(host, message, internal=False) from None
        self.check_resolved(host, addresses)

    async def check_url(self, url: str, resolve: Resolve) -> None:
        """The whole check of a webhook URL: scheme, host spelling, then the addresses
        ``resolve`` gives. Raises DestinationRefused."""
        parsed = parse_webhook_url(url)
        await self.check_host(parsed.raw_host or "", parsed.port or 0, resolve)


def parse_webhook_url(url: str) -> yarl.URL:
    """The URL as an HTTP client reads it (yarl), or DestinationRefused
    when it is not absolute http(s) with a host. The message never repeats the URL."""
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        raise DestinationRefused("", "the URL cannot be parsed", internal=False) from None
    host = parsed.raw_host or ""
    if parsed.scheme not in SCHEMES or not host:
        raise DestinationRefused("", "only http:// and https:// URLs are allowed", internal=False)
    if ":" not in host and not HOST_NAME.fullmatch(host):
        raise DestinationRefused("", "the host is not a valid host name", internal=False)
    return parsed


def mask_url(url: str | None) -> str | None:
    """``scheme://host/…``: what may be shown of a webhook URL (userinfo, port, path,
    query and fragment may hold secrets such as Slack or Discord tokens)."""
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        host = parts.hostname
    except ValueError:
        host = None
    if not host:
        return "(invalid URL)"
    shown = f"[{host}]" if ":" in host else host
    return f"{parts.scheme.lower()}://{shown}/…"
