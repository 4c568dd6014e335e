"""Delivers alerts to webhook URLs: POST the alert JSON, in the background.

One aiohttp session (``start``/``close``), a total timeout per attempt, at most
``max_retries`` jittered retries on 5xx answers, connection errors and timeouts (never
on 2xx-4xx answers), and one circuit breaker per URL host so a dead receiver is not
hammered. ``send`` never raises: it returns a ``DeliveryResult``. A host that starts
failing is logged once (a warning), and once more (info) when it delivers again.

Destinations pass the ``DestinationPolicy`` (app.services.alerts.destinations) twice: when a
rule is created (``check_destination``) and on every connection — numeric hosts before
the request, host names in the session's resolver (``GuardedResolver``), so the address
checked is the address connected to and a name that re-resolves elsewhere (DNS
rebinding) is refused. Redirects are never followed. A refused delivery makes no
connection, is counted (``refused``) and logged once per host. Nothing shown — results,
log lines, breaker names — carries a URL's userinfo, path or query (``mask_url``).
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from app.resilience.breaker import BreakerConfig, BreakerOpen, CircuitBreaker
from app.services.alerts.delivery_errors import DeliveryFailed
from app.services.alerts.destinations import (
    DestinationPolicy,
    DestinationRefused,
    mask_url,
    parse_webhook_url,
)

if TYPE_CHECKING:  # aiohttp loads where a webhook is first checked or sent
    import aiohttp
    from aiohttp.abc import AbstractResolver

    from app.services.alerts.webhook_resolver import GuardedResolver

log = logging.getLogger(__name__)

MAX_TRACKED_HOSTS = 1024  # hosts remembered as failing (log once each); bounded
MAX_ANSWER_BYTES = 64 * 1024  # of a receiver's answer body read (never kept)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """One delivery: ``url`` masked (``scheme://host/…``), ``status`` the last HTTP
    status if any answer came, ``attempts`` the requests actually made, ``refused``
    whether the destination policy refused it (no connection made)."""

    url: str
    ok: bool
    status: int | None = None
    attempts: int = 0
    error: str | None = None
    refused: bool = False


class _ServerError(Exception):
    """A 5xx answer: retried, and a failure for the host's breaker."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


class _Refused(Exception):
    """The resolver refused the destination: not retried, not a breaker failure."""

    breaker_failure = False

    def __init__(self, refusal: DestinationRefused) -> None:
        super().__init__(str(refusal))
        self.refusal = refusal


def webhook_breaker_config() -> BreakerConfig:
    """Three consecutive failures open a host's breaker for 30 s (backing off to 10 min)."""
    return BreakerConfig(consecutive_failures=3, open_seconds=30.0, max_open_seconds=600.0)


class WebhookSender:
    """POSTs alerts to webhook URLs under the destination policy.

    ``allow``: the operator's allow-list (``Settings.webhook_allow``: host names, IP
    addresses, CIDR networks; ValueError if malformed); ``resolver``: the aiohttp
    resolver doing the lookups (default getaddrinfo; tests pass their own). Times in
    seconds. aiohttp is imported on first use (``start``, ``check_destination``), not
    with this module: a serving process that never meets a webhook does not load it."""

    def __init__(
        self,
        timeout_seconds: float = 5.0,
        max_retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
        *,
        backoff_seconds: float = 0.5,
        max_concurrency: int = 16,
        breaker_config: BreakerConfig | None = None,
        allow: Iterable[str] = (),
        resolver: AbstractResolver | None = None,
    ) -> None:
        if timeout_seconds <= 0 or max_retries < 0 or backoff_seconds < 0:
            raise ValueError("timeout_seconds > 0, max_retries >= 0, backoff_seconds >= 0")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self.policy = DestinationPolicy(tuple(allow))
        self._inner_resolver = resolver
        self._resolver: GuardedResolver | None = None
        self.refused = 0  # deliveries the policy refused (no connection made)
        self._clock = clock
        self._breaker_config = breaker_config or webhook_breaker_config()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._failing: set[str] = set()
        self._tasks: set[asyncio.Task[DeliveryResult]] = set()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        # The transport's exceptions, known once aiohttp is loaded (``start``).
        self._transport_errors: tuple[type[BaseException], ...] = (TimeoutError, OSError)
        self._connect_error: type[BaseException] = OSError
        self._closed = False

    @property
    def resolver(self) -> GuardedResolver:
        """The policy-checking resolver every lookup and connection goes through."""
        if self._resolver is None:
            from app.services.alerts.webhook_resolver import GuardedResolver

            self._resolver = GuardedResolver(self.policy, self._inner_resolver)
        return self._resolver

    async def start(self) -> None:
        """Opens the session: every connection resolves through ``self.resolver``, with
        no DNS cache (each connection is checked) and no proxy from the environment."""
        if self._session is None and not self._closed:
            import aiohttp

            self._transport_errors = (aiohttp.ClientError, TimeoutError, OSError)
            self._connect_error = aiohttp.ClientConnectorError
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            connector = aiohttp.TCPConnector(resolver=self.resolver, use_dns_cache=False)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=connector, trust_env=False
            )

    async def close(self) -> None:
        """Cancels the pending background sends and closes the session."""
        self._closed = True
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._resolver is not None:
            await self._resolver.close()

    @property
    def pending(self) -> int:
        """Background sends not finished yet."""
        return len(self._tasks)

    async def check_destination(self, url: str) -> None:
        """The policy check of a rule's URL at creation: scheme, host spelling, and the
        addresses its host resolves to now (within ``timeout_seconds``). Raises
        DestinationRefused."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                await self.policy.check_url(url, self.resolver.lookup)
        except TimeoutError:
            host = parse_webhook_url(url).raw_host or ""
            message = f"{host} cannot be resolved (no answer in {self.timeout_seconds:g} s)"
            raise DestinationRefused(host, message, internal=False) from None

    def breaker(self, url: str) -> CircuitBreaker:
        """The breaker of ``url``'s host and port (never its userinfo)."""
        host = _host_key(url)
        if host not in self._breakers:
            self._breakers[host] = CircuitBreaker(
                f"webhook {host}", config=self._breaker_config, clock=self._clock
            )
        return self._breakers[host]

    def send_in_background(
        self, url: str, payload: Mapping[str, Any]
    ) -> asyncio.Task[DeliveryResult] | None:
        """Starts ``send`` as a tracked task and returns at once (None once closed)."""
        if self._closed:
            return None
        task = asyncio.get_running_loop().create_task(self.send(url, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def send(self, url: str, payload: Mapping[str, Any]) -> DeliveryResult:
        """POSTs ``payload`` as JSON; never raises (except cancellation)."""
        shown = mask_url(url) or ""
        try:
            body = orjson.dumps(payload)
        except TypeError as exc:
            return DeliveryResult(shown, ok=False, error=f"payload is not JSON: {exc}")
        try:
            parsed = parse_webhook_url(url)
            self.policy.check_literal(parsed.raw_host or "")
        except DestinationRefused as refusal:
            return self._refused(url, refusal)
        await self.start()
        if self._session is None:
            return DeliveryResult(shown, ok=False, error="sender is closed")
        async with self._slots:
            return await self._attempts(url, body)

    async def _attempts(self, url: str, body: bytes) -> DeliveryResult:
        host, shown, breaker = _host_key(url), mask_url(url) or "", self.breaker(url)
        attempts, status, error = 0, None, None
        for attempt in range(self.max_retries + 1):
            if attempt:
                base = self.backoff_seconds * 2 ** (attempt - 1)
                await asyncio.sleep(base * random.uniform(0.5, 1.5))
            try:
                attempts += 1
                status = await breaker.call(lambda: self._post(url, body))
            except BreakerOpen as exc:
                attempts -= 1
                error = f"circuit open for {host}; retry in {exc.retry_after_seconds:.0f} s"
                break
            except _Refused as exc:
                return self._refused(url, exc.refusal)
            except _ServerError as exc:
                status, error = exc.status, str(exc)
                continue
            except self._transport_errors as exc:
                error = _scrub(f"{type(exc).__name__}: {exc}" if str(exc) else "", url)
                error = error or type(exc).__name__
                continue
            except Exception as exc:  # e.g. a URL aiohttp cannot use: do not retry
                error = _scrub(f"{type(exc).__name__}: {exc}", url)
                break
            if 200 <= status < 300:
                if host in self._failing:
                    self._failing.discard(host)
                    log.info("webhook host %s delivers again", host)
                return DeliveryResult(shown, ok=True, status=status, attempts=attempts)
            error = f"HTTP {status}"
            break  # a 3xx/4xx answer: the receiver is up but refuses, retrying won't help
        self._note_failing(host, "webhook delivery to %s failed: %s", error)
        return DeliveryResult(shown, ok=False, status=status, attempts=attempts, error=error)

    def _refused(self, url: str, refusal: DestinationRefused) -> DeliveryResult:
        self.refused += 1
        reason = _scrub(str(refusal), url)
        self._note_failing(_host_key(url), "webhook delivery to %s refused: %s", reason)
        return DeliveryResult(mask_url(url) or "", ok=False, error=reason, refused=True)

    def _note_failing(self, host: str, message: str, error: str | None) -> None:
        """Logs ``message`` once per failing host (bounded memory of them)."""
        if host in self._failing:
            return
        if len(self._failing) >= MAX_TRACKED_HOSTS:
            self._failing.clear()
        self._failing.add(host)
        log.warning(message, host, error)

    async def post_once(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        """One POST of the JSON ``body`` with ``headers`` to ``url`` under the destination
        policy — no retry and no breaker (the outbox retries and keeps the breakers),
        redirects never followed. Returns the 2xx status. Raises DeliveryFailed:
        retryable for connection errors, time-outs, 5xx, 408 and 429 answers; not for a
        refused destination (``refused``, counted), other 3xx/4xx answers or an unusable
        URL. Its reason never carries the URL's secrets."""
        try:
            self.policy.check_literal(parse_webhook_url(url).raw_host or "")
        except DestinationRefused as refusal:
            refused = self._refused(url, refusal)
            raise DeliveryFailed(refused.error or "refused", False, refused=True) from None
        await self.start()
        if self._session is None:
            raise DeliveryFailed("the webhook sender is closed", retryable=True)
        async with self._slots:
            try:
                status = await self._post(url, body, headers)
            except _Refused as exc:
                refused = self._refused(url, exc.refusal)
                raise DeliveryFailed(refused.error or "refused", False, refused=True) from None
            except _ServerError as exc:
                raise DeliveryFailed(str(exc), retryable=True) from None
            except self._transport_errors as exc:
                error = _scrub(f"{type(exc).__name__}: {exc}" if str(exc) else "", url)
                raise DeliveryFailed(error or type(exc).__name__, retryable=True) from None
            except Exception as exc:  # e.g. a URL aiohttp cannot use: do not retry
                raise DeliveryFailed(_scrub(f"{type(exc).__name__}: {exc}", url), False) from None
        if not 200 <= status < 300:
            raise DeliveryFailed(f"HTTP {status}", retryable=status in (408, 429))
        return status

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str] | None = None) -> int:
        assert self._session is not None
        try:
            async with asyncio.timeout(self.timeout_seconds + 1):  # belt and braces
                async with self._session.post(
                    url,
                    data=body,
                    headers={**(headers or {}), "Content-Type": "application/json"},
                    allow_redirects=False,
                ) as response:
                    await response.content.read(MAX_ANSWER_BYTES)  # the rest is dropped
        except self._connect_error as exc:
            refusal = getattr(exc, "os_error", None)
            if isinstance(refusal, DestinationRefused):
                raise _Refused(refusal) from None
            raise
        if response.status >= 500:
            raise _ServerError(response.status)
        return response.status


def _host_key(url: str) -> str:
    """``host[:port]`` of a URL, lower case, without userinfo ("?" when unparsable)."""
    try:
        parsed = parse_webhook_url(url)
    except DestinationRefused:
        return "?"
    host = parsed.raw_host or "?"
    shown = f"[{host}]" if ":" in host else host
    return shown if parsed.explicit_port is None else f"{shown}:{parsed.explicit_port}"


def _scrub(text: str, url: str) -> str:
    """``text`` without the URL or its secret-bearing parts (userinfo, path, query,
    fragment), each replaced by "…"."""
    try:
        parsed = parse_webhook_url(url)
        parts = [
            url,
            parsed.raw_user,
            parsed.raw_password,
            parsed.raw_path_qs,
            parsed.raw_query_string,
            parsed.raw_fragment,
            parsed.path,
            parsed.query_string,
        ]
    except DestinationRefused:
        parts = [url]
    for part in sorted({p for p in parts if p and len(p) > 1}, key=len, reverse=True):
        text = text.replace(part, "…")
    return text
