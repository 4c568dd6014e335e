"""Notification channels: a named, stored Apprise URL an alert rule can deliver to.

A channel's URL is a secret (tokens, passwords, webhook signatures live in it): it is
stored and handed to the sender (``app.services.alerts.apprise_sender``), never shown.
``Channel.public_dict`` shows the channel type and a masked destination
(``json://127.0.0.1/…``, ``tgram://…``) at most.

Only the channel types in ``CHANNEL_TYPES`` are accepted: for each, this module knows
every host its Apprise plugin connects to (``ChannelTarget.hosts``), so the outbound
``DestinationPolicy`` can check all of them — email servers included. A type whose
hosts are not known (Apprise has ~150) could connect anywhere, so it is refused.
Apprise is imported inside the functions that need it, never with this module.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

if TYPE_CHECKING:
    from apprise.plugins.base import NotifyBase

MAX_NAME = 60
MAX_URL = 2000
MAX_CHANNELS = 50  # channels stored at most


def _own_host(plugin: NotifyBase) -> list[str]:
    """Self-hosted services: the host written in the URL."""
    return [str(plugin.host)]


def _fixed(*attributes: str) -> Callable[[NotifyBase], list[str]]:
    """Services with fixed endpoints: the hosts of the plugin's endpoint URLs."""

    def hosts(plugin: NotifyBase) -> list[str]:
        urls = [str(getattr(plugin, name)) for name in attributes]
        return sorted({urlsplit(url).hostname or "" for url in urls})

    return hosts


def _ntfy(plugin: NotifyBase) -> list[str]:
    if getattr(plugin, "mode", None) == "cloud":
        return _fixed("cloud_notify_url")(plugin)
    return _own_host(plugin)


def _email(plugin: NotifyBase) -> list[str]:
    return [str(getattr(plugin, "smtp_host", "") or "")]


def _slack(plugin: NotifyBase) -> list[str]:
    """Webhooks post to hooks.slack.com (hooks.slack-gov.com for government ones),
    workflows to hooks.slack.com, a bot to slack.com (its API; also its user lookups)."""
    mode = str(getattr(plugin, "mode", ""))
    attribute = {"gov-hook": "webhook_gov_url", "bot": "api_url"}.get(mode, "webhook_url")
    return _fixed(attribute)(plugin)


def _matrix(plugin: NotifyBase) -> list[str]:
    if getattr(plugin, "mode", None) == "t2bot":
        return ["webhooks.t2bot.io"]
    return _own_host(plugin)


# scheme → (what it is, whether the URL's host is the destination, its hosts).
CHANNEL_TYPES: dict[str, tuple[str, bool, Callable[[NotifyBase], list[str]]]] = {
    "json": ("JSON POST", True, _own_host),
    "jsons": ("JSON POST (TLS)", True, _own_host),
    "form": ("form POST", True, _own_host),
    "forms": ("form POST (TLS)", True, _own_host),
    "xml": ("XML POST", True, _own_host),
    "xmls": ("XML POST (TLS)", True, _own_host),
    "ntfy": ("ntfy", True, _ntfy),
    "ntfys": ("ntfy (TLS)", True, _ntfy),
    "mailto": ("email", True, _email),
    "mailtos": ("email (TLS)", True, _email),
    "matrix": ("Matrix", True, _matrix),
    "matrixs": ("Matrix (TLS)", True, _matrix),
    "workflows": ("Microsoft Teams (Workflows)", True, _own_host),
    "workflow": ("Microsoft Teams (Workflows)", True, _own_host),
    "tgram": ("Telegram", False, _fixed("notify_url")),
    "discord": ("Discord", False, _fixed("notify_url")),
    "slack": ("Slack", False, _slack),
    "pover": ("Pushover", False, _fixed("notify_url")),
}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]{0,15})://")
_TOKEN_SPLIT = re.compile(r"[/:@?&=#,;+\s]+")


def new_channel_id() -> str:
    """12 hex characters (48 random bits)."""
    return secrets.token_hex(6)


@dataclass(frozen=True, slots=True)
class ChannelTarget:
    """What an Apprise URL means: ``type`` its scheme (lower case), ``service`` the
    service's name, ``hosts`` every host the plugin connects to (each checked by the
    destination policy), ``destination`` what may be shown (``scheme://host/…`` for
    self-hosted services, ``scheme://…`` when the host position holds a token)."""

    type: str
    service: str
    hosts: tuple[str, ...]
    destination: str


def url_scheme(url: str) -> str | None:
    """The URL's scheme, lower case, or None when it has none."""
    found = _SCHEME.match(url.strip())
    return None if found is None else found.group(1).lower()


def secret_parts(url: str, shown: tuple[str, ...] = ()) -> list[str]:
    """The substrings of ``url`` that may be secret, longest first: the whole URL, and
    every piece of it after the scheme (userinfo, host position, path segments, query
    values; raw and percent-decoded) but the ``shown`` hosts and the query's keys."""
    rest = url.split("://", 1)[-1]
    keys = {pair.split("=", 1)[0].lstrip("+-:") for pair in rest.partition("?")[2].split("&")}
    pieces = {url, rest}
    for token in _TOKEN_SPLIT.split(rest):
        for piece in (token, unquote(token)):
            small_number = piece.isdigit() and len(piece) <= 5  # a port, a status code
            if len(piece) >= 3 and not small_number and piece not in shown + tuple(keys):
                pieces.add(piece)
    return sorted((p for p in pieces if p), key=len, reverse=True)


def mask(text: str, secrets_: list[str]) -> str:
    """``text`` with each of ``secrets_`` (longest first) replaced by "…"."""
    for secret in secrets_:
        text = text.replace(secret, "…")
    return text


def instantiate(url: str, **changes: Any) -> NotifyBase:
    """The Apprise plugin of ``url`` with redirects off, or ValueError (the message never
    repeats the URL). ``changes``: plugin attributes to set (e.g. timeouts)."""
    from apprise import Apprise, AppriseAsset

    from app.services.alerts.apprise_logs import masking

    scheme = url_scheme(url)
    if scheme is None:
        raise ValueError("the URL cannot be parsed (expected <type>://…)")
    if scheme not in CHANNEL_TYPES:
        raise ValueError(
            f"unknown channel type {scheme[:16]!r}; supported: {', '.join(sorted(CHANNEL_TYPES))}"
        )
    with masking(secret_parts(url)):
        plugin = Apprise.instantiate(url, asset=AppriseAsset(http_redirects=False))
    if plugin is None:
        raise ValueError(f"the {scheme}:// URL is not valid for Apprise (a part is missing or bad)")
    if getattr(plugin, "use_wkd", False):
        raise ValueError("wkd= is not supported (it fetches keys from an unchecked host)")
    plugin.redirects = False  # a receiver's redirect must not reach an unchecked host
    if hasattr(plugin, "discovery"):  # Matrix: no .well-known hop to an unchecked server
        plugin.discovery = False
    for name, value in changes.items():
        setattr(plugin, name, value)
    return plugin


def describe(url: str) -> ChannelTarget:
    """Parses ``url`` with Apprise: its type, hosts and masked destination. Raises
    ValueError (unknown type, unparsable, no host) without repeating the URL."""
    plugin = instantiate(url)
    scheme = url_scheme(url) or ""
    what, shows_host, hosts_of = CHANNEL_TYPES[scheme]
    hosts = tuple(h.lower().strip("[]") for h in hosts_of(plugin) if h.strip("[]"))
    if not hosts:
        raise ValueError(f"the {scheme}:// URL names no server to connect to")
    first = hosts[0]
    shown = (f"[{first}]" if ":" in first else first) if shows_host else ""
    destination = f"{scheme}://{shown}/…" if shown else f"{scheme}://…"
    return ChannelTarget(scheme, what, hosts, destination)


class ChannelInput(BaseModel):
    """A channel as a client submits it: a name and an Apprise URL (a secret)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, max_length=MAX_NAME, description="shown in lists")
    url: str = Field(
        min_length=1,
        max_length=MAX_URL,
        description="an Apprise URL (json://, form://, ntfy://, mailto://, tgram://, "
        "discord://, slack://, workflows://, pover://, matrix://…); stored, never shown",
    )

    @field_validator("name")
    @classmethod
    def _printable(cls, value: str) -> str:
        value = value.strip()
        if not value or not value.isprintable():
            raise ValueError("must be printable text")
        return value

    @field_validator("url")
    @classmethod
    def _stripped(cls, value: str) -> str:
        return value.strip()


class Channel(BaseModel):
    """A stored channel. ``url`` is a ``SecretStr``: it shows as ``**********`` in any
    repr; ``to_stored`` reveals it for the store only."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    id: str
    name: str
    url: SecretStr
    type: str
    destination: str
    created_at_ms: int

    def to_stored(self) -> dict[str, Any]:
        """Every field, the URL in clear: for the store, never for a response."""
        return {**self.model_dump(mode="json"), "url": self.url.get_secret_value()}

    @classmethod
    def from_stored(cls, data: Any) -> Channel:
        return cls.model_validate(data)

    def public_dict(self) -> dict[str, Any]:
        """What any response may show: id, name, type, masked destination, created_at_ms."""
        return {
            "id": self.id,
            "name": self.name,
            "type": self.type,
            "destination": self.destination,
            "created_at_ms": self.created_at_ms,
        }


def new_channel(data: ChannelInput, target: ChannelTarget, at_ms: int | None = None) -> Channel:
    """A ``Channel`` with a fresh id for ``data`` described as ``target``."""
    stamp = int(time.time() * 1000) if at_ms is None else at_ms
    return Channel(
        id=new_channel_id(),
        name=data.name,
        url=SecretStr(data.url),
        type=target.type,
        destination=target.destination,
        created_at_ms=stamp,
    )
