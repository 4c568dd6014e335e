"""A rule's webhook as an outbox destination: the http(s) URL as an Apprise ``json://``
or ``jsons://`` URL (what a channel of type ``json`` holds), and the outbox's default
``Send`` for such URLs until the channels' Apprise sender takes over.

The default sender POSTs Apprise's JSON message body (``{"version": "1.0", "title",
"message", "attachments": [], "type": "info"}``, the ``json://`` plugin's format) with
the delivery's idempotency key in an ``Idempotency-Key`` header and an
``idempotency_key`` field, through the ``WebhookSender``'s session: the destination
policy is checked on every connection (numeric hosts before it, names in the resolver,
so DNS rebinding is refused), redirects are never followed, and reasons never carry the
URL's secrets. Apprise's URL conventions: ``-name=value`` is a query parameter of the
request, ``+Name=value`` a header, other parameters are Apprise's own options (ignored
here).
"""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import orjson

from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.webhooks import WebhookSender

TO_APPRISE = {"http": "json", "https": "jsons"}
FROM_APPRISE = {"json": "http", "jsons": "https", "http": "http", "https": "https"}
IDEMPOTENCY_HEADER = "Idempotency-Key"


def apprise_json_url(http_url: str) -> str:
    """``http(s)://…`` → ``json(s)://…`` with each query parameter ``k=v`` as Apprise's
    ``-k=v`` (so the receiver gets the same query). Raises ValueError for a scheme other
    than http or https."""
    parts = urlsplit(http_url)
    scheme = TO_APPRISE.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError("only http:// and https:// URLs can be webhooks")
    query = [(f"-{k}", v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), parts.fragment))


def http_request_of(url: str) -> tuple[str, dict[str, str]]:
    """The http(s) URL and extra headers an Apprise ``json(s)://`` URL (or a plain
    http(s) URL) means. Raises DeliveryFailed (not retryable) for another scheme."""
    parts = urlsplit(url)
    scheme = FROM_APPRISE.get(parts.scheme.lower())
    if scheme is None:
        raise DeliveryFailed(f"{parts.scheme or 'this'}:// is no JSON webhook", retryable=False)
    if parts.scheme.lower() in ("http", "https"):
        return url, {}
    query, headers = [], {}
    # Apprise reads "+" as itself (a header's mark), not as a space
    for key, value in parse_qsl(parts.query.replace("+", "%2B"), keep_blank_values=True):
        if key.startswith("-") and len(key) > 1:
            query.append((key[1:], value))
        elif key.startswith("+") and len(key) > 1:
            headers[key[1:]] = value
    return urlunsplit((scheme, parts.netloc, parts.path, urlencode(query), "")), headers


def apprise_json_body(title: str, message: str, idempotency_key: str) -> bytes:
    """Apprise's ``json://`` message body, with the idempotency key as an extra field."""
    return orjson.dumps(
        {
            "version": "1.0",
            "title": title,
            "message": message,
            "attachments": [],
            "type": "info",
            "idempotency_key": idempotency_key,
        }
    )


class WebhookJsonSend:
    """The outbox's ``Send`` for ``json://``/``jsons://`` (and http(s)) destinations,
    through ``sender`` (one POST per call; the outbox retries). Raises DeliveryFailed."""

    def __init__(self, sender: WebhookSender) -> None:
        self.sender = sender

    async def __call__(
        self, destination_url: str, title: str, body: str, idempotency_key: str
    ) -> None:
        url, headers = http_request_of(destination_url)
        headers[IDEMPOTENCY_HEADER] = idempotency_key
        await self.sender.post_once(url, apprise_json_body(title, body, idempotency_key), headers)
