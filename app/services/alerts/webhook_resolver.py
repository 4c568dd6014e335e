"""The resolver every webhook connection goes through (aiohttp's resolver interface):
lookups checked against the destination policy, so the address checked is the address
connected to. Its own module so that aiohttp loads only where webhooks are used."""

from __future__ import annotations

import socket

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver

from app.services.alerts.destinations import DestinationPolicy, IPAddress, parse_numeric_host


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that resolves with ``inner`` (default: aiohttp's
    ThreadedResolver, i.e. getaddrinfo) and raises DestinationRefused when the host is
    not allowed by name and any address it resolves to is refused by ``policy``. The
    session's connector connects only to addresses this returned, so the check holds at
    connection time (no DNS-rebinding window). aiohttp does not call a resolver for
    numeric hosts: ``WebhookSender`` checks those itself before each request."""

    def __init__(self, policy: DestinationPolicy, inner: AbstractResolver | None = None) -> None:
        self.policy = policy
        self._inner = inner

    def inner(self) -> AbstractResolver:
        """The resolver that does the lookups (created on first use: it needs a loop)."""
        if self._inner is None:
            self._inner = ThreadedResolver()
        return self._inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        """The inner resolver's results, once they all pass the policy; a numeric host
        (``0x7f.1``…) is read here, never looked up."""
        allowed = self.policy.check_literal(host)  # raises DestinationRefused
        address = parse_numeric_host(host)
        if address is not None:
            return [_result(host, address, port)]
        results = await self.inner().resolve(host, port, family)
        if allowed:
            return results
        self.policy.check_resolved(host, [result["host"] for result in results])
        return results

    async def lookup(self, host: str, port: int) -> list[str]:
        """The addresses ``host`` resolves to (any family), unchecked; OSError on failure."""
        results = await self.inner().resolve(host, port, socket.AF_UNSPEC)
        return [result["host"] for result in results]

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def _result(host: str, address: IPAddress, port: int) -> ResolveResult:
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    return ResolveResult(
        hostname=host, host=str(address), port=port, family=family, proto=0,
        flags=socket.AI_NUMERICHOST | socket.AI_NUMERICSERV,
    )  # fmt: skip
