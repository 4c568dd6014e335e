"""A rule's webhook as a channel destination: the http(s) URL as an Apprise ``json://``
or ``jsons://`` URL (what a channel of type ``json`` holds), delivered through the
outbox and the channels' Apprise sender (``app.services.alerts.apprise_sender``), and
its destination check when the rule is created.

Apprise's URL conventions: ``-name=value`` is a query parameter of the request,
``+Name=value`` a header, other parameters are Apprise's own options.
"""

from __future__ import annotations

import asyncio
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app.services.alerts.apprise_sender import Lookup, check_hosts, getaddrinfo_lookup
from app.services.alerts.channels import describe
from app.services.alerts.destinations import DestinationPolicy, parse_webhook_url

TO_APPRISE = {"http": "json", "https": "jsons"}
CHECK_SECONDS = 10.0  # a webhook host's lookups at rule creation, at most


def apprise_json_url(http_url: str) -> str:
    """``http(s)://…`` → ``json(s)://…`` with each query parameter ``k=v`` as Apprise's
    ``-k=v`` (so the receiver gets the same query) and no fragment (an HTTP client never
    sends it; Apprise would read it into the last query value). Raises ValueError for a
    scheme other than http or https."""
    parts = urlsplit(http_url)
    scheme = TO_APPRISE.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError("only http:// and https:// URLs can be webhooks")
    query = [(f"-{k}", v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), ""))


async def check_webhook_url(
    url: str,
    policy: DestinationPolicy,
    timeout_seconds: float = CHECK_SECONDS,
    lookup: Lookup = getaddrinfo_lookup,
) -> None:
    """The check of a rule's ``webhook_url`` at creation, as the sender checks it
    before each attempt: the host as written against ``policy`` (every numeric
    spelling, ``localhost``), then the Apprise URL's hosts, names resolved now (each
    lookup within ``timeout_seconds``). Raises DestinationRefused (refused, or not
    resolvable), ValueError (a URL Apprise cannot send to; the message never repeats
    it). Apprise is parsed in a thread: its first import takes a moment."""
    policy.check_literal(parse_webhook_url(url).raw_host or "")
    try:
        target = await asyncio.to_thread(describe, apprise_json_url(url))
    except ValueError as error:
        raise ValueError(f"webhook_url: {error}") from None
    await check_hosts(target, policy, timeout_seconds, lookup)
