"""Sends one message to one channel through Apprise: the one sender the delivery outbox
(and the channel test endpoint) calls.

``send`` checks every host the channel's plugin will connect to against the outbound
``DestinationPolicy`` (resolving names now: a destination that came to resolve to an
internal address since the channel was created is refused), then runs the plugin's
synchronous ``notify`` in a worker thread, bounded by ``timeout_seconds`` (the plugin's
own connect/read time-outs are set to it too, and its connections are cut off once it
is up: ``send_deadline``). Redirects are never followed.

The idempotency key travels in every message: as an ``Idempotency-Key`` header where
the plugin sends custom headers (json://, form://, xml://, mailto://) and as the last
line of the body for all. A failure raises ``DeliveryFailed`` whose reason names the
masked destination and what went wrong, never a secret of the URL; Apprise's own log
lines are masked the same way (``app.services.alerts.apprise_logs``).
"""

from __future__ import annotations

import asyncio
import functools
import re
import socket
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor

from app.services.alerts.apprise_logs import captured, masking
from app.services.alerts.channels import (
    CHANNEL_TYPES,
    ChannelTarget,
    describe,
    instantiate,
    mask,
    secret_parts,
)
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import DestinationPolicy, DestinationRefused
from app.services.alerts.send_deadline import cut_off_after

# (host, port) → the addresses it resolves to; OSError on failure.
Lookup = Callable[[str, int], Awaitable[list[str]]]

IDEMPOTENCY_HEADER = "Idempotency-Key"
_KEY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_HTTP_STATUS = re.compile(r"error=(\d{3})")
_RETRYABLE_STATUSES = frozenset({408, 425, 429})
# Sends run here, not in the loop's default executor: a send the caller stopped waiting
# for runs on until its socket time-out and must not hold up lookups or file writes.
MAX_SENDING = 8
_pool: ThreadPoolExecutor | None = None


def _sending_pool() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(MAX_SENDING, thread_name_prefix="apprise-send")
    return _pool


async def getaddrinfo_lookup(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to (any family), via the loop's getaddrinfo."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


async def check_hosts(
    target: ChannelTarget,
    policy: DestinationPolicy,
    timeout_seconds: float,
    lookup: Lookup = getaddrinfo_lookup,
) -> None:
    """Checks each of ``target.hosts`` against ``policy``: numeric hosts as written,
    names by the addresses they resolve to now. Raises DestinationRefused (a name that
    cannot be resolved in ``timeout_seconds`` included, with ``internal=False``)."""

    async def bounded(host: str, port: int) -> list[str]:
        async with asyncio.timeout(timeout_seconds):
            return await lookup(host, port)

    for host in target.hosts:
        await policy.check_host(host, 0, bounded)


async def send(
    channel_url: str,
    title: str,
    body: str,
    *,
    idempotency_key: str,
    policy: DestinationPolicy,
    timeout_seconds: float,
    lookup: Lookup = getaddrinfo_lookup,
) -> None:
    """Sends ``title`` and ``body`` (plain text) to the channel at ``channel_url`` (an
    Apprise URL), the key carried as described above; returns once the service accepted
    it. ``timeout_seconds`` bounds the lookups and the send each. Raises DeliveryFailed;
    ValueError for an idempotency key outside ``[A-Za-z0-9._:-]{1,128}``."""
    if not _KEY.match(idempotency_key):
        raise ValueError("the idempotency key must be 1-128 of [A-Za-z0-9._:-]")
    try:
        target = await asyncio.to_thread(describe, channel_url)  # Apprise loads slowly once
    except ValueError as error:
        raise DeliveryFailed(f"the channel URL is not usable: {error}", retryable=False) from None
    try:
        await check_hosts(target, policy, timeout_seconds, lookup)
    except DestinationRefused as refusal:
        # a name that does not resolve now may later; a refused address stays refused
        retry = "cannot be resolved" in refusal.reason
        raise DeliveryFailed(
            f"{target.destination}: {refusal}", retryable=retry, refused=not retry
        ) from None
    shown = target.hosts if CHANNEL_TYPES[target.type][1] else ()
    secrets = secret_parts(channel_url, shown)
    try:
        async with asyncio.timeout(timeout_seconds):
            ok, lines = await asyncio.get_running_loop().run_in_executor(
                _sending_pool(),
                functools.partial(
                    _notify, channel_url, title, body, idempotency_key, timeout_seconds, secrets
                ),
            )
    except TimeoutError:
        reason = f"{target.destination}: no answer within {timeout_seconds:g} s"
        raise DeliveryFailed(reason, retryable=True) from None
    if not ok:
        raise DeliveryFailed(_reason(target, lines, secrets), retryable=_retryable(lines))


def _notify(
    url: str, title: str, body: str, key: str, timeout: float, secrets: list[str]
) -> tuple[bool, list[str]]:
    """In a worker thread: one ``notify`` with the secrets masked in every log line
    meanwhile (until this thread is done, even when the caller stopped waiting), its
    connections cut off after ``timeout`` (a receiver trickling bytes holds no thread)."""
    with masking(secrets), captured() as lines, cut_off_after(timeout):
        try:
            plugin = instantiate(url, socket_connect_timeout=timeout, socket_read_timeout=timeout)
            headers = getattr(plugin, "headers", None)
            if isinstance(headers, dict):
                headers[IDEMPOTENCY_HEADER] = key
            text = f"{body}\n\n{IDEMPOTENCY_HEADER}: {key}"
            return bool(plugin.notify(body=text, title=title)), lines
        except Exception as error:  # a plugin's bug must not lose the reason or leak
            lines.append(mask(f"{type(error).__name__}: {error}", secrets))
            return False, lines


def _reason(target: ChannelTarget, lines: list[str], secrets: list[str]) -> str:
    """The masked destination and Apprise's last warnings (masked, bounded)."""
    said = "; ".join(mask(line, secrets) for line in lines[-2:])[:300]
    return f"{target.destination}: {said or 'not delivered'}"


def _retryable(lines: list[str]) -> bool:
    """A 4xx answer (but 408, 425, 429) is final; anything else may pass later."""
    for line in reversed(lines):
        found = _HTTP_STATUS.search(line)
        if found is not None:
            status = int(found.group(1))
            return status >= 500 or status in _RETRYABLE_STATUSES
    return True


class AppriseSend:
    """The outbox's ``Send`` through ``send``: every destination checked against
    ``policy`` before each attempt, each attempt bounded by ``timeout_seconds``;
    ``lookup`` resolves host names for the check (tests pass their own)."""

    def __init__(
        self,
        policy: DestinationPolicy,
        timeout_seconds: float = 10.0,
        lookup: Lookup = getaddrinfo_lookup,
    ) -> None:
        self.policy = policy
        self.timeout_seconds = timeout_seconds
        self.lookup = lookup

    async def __call__(
        self, destination_url: str, title: str, body: str, idempotency_key: str
    ) -> None:
        await send(
            destination_url,
            title,
            body,
            idempotency_key=idempotency_key,
            policy=self.policy,
            timeout_seconds=self.timeout_seconds,
            lookup=self.lookup,
        )
