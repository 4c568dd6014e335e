"""Host names and networks as an operator writes them: how they are compared and how an
allow-list of them (``VIRTUOSO_WEBHOOK_ALLOW``) is read.

A leaf shared by the settings (which refuse a malformed list at load time) and the
outbound destination policy (``app.services.alerts.destinations``, which applies it).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from ipaddress import IPv4Network, IPv6Network

IPNetwork = IPv4Network | IPv6Network

ALLOW_SETTING = "VIRTUOSO_WEBHOOK_ALLOW"
# A host name as the allow-list and the webhook URLs accept it (lower case).
HOST_NAME = re.compile(r"[a-z0-9_]([a-z0-9_.-]*[a-z0-9_.])?")


def normalize_host(host: str) -> str:
    """Lower case, without brackets or one trailing dot: how the allow-list compares."""
    return host.strip().lower().removeprefix("[").removesuffix("]").removesuffix(".")


def parse_allow_list(entries: Iterable[str]) -> tuple[frozenset[str], tuple[IPNetwork, ...]]:
    """(host names, networks) of an allow-list; ValueError names a malformed entry."""
    names: set[str] = set()
    networks: list[IPNetwork] = []
    for raw in entries:
        entry = normalize_host(raw)
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
            continue
        except ValueError:
            pass
        if not HOST_NAME.fullmatch(entry):
            raise ValueError(
                f"{ALLOW_SETTING}: {raw!r} is neither a host name, an IP address nor a "
                "CIDR network (e.g. alertmanager, 10.0.0.7, 10.0.0.0/8, fd00::/8)"
            )
        names.add(entry)
    return frozenset(names), tuple(networks)
