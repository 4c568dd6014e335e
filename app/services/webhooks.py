"""Delivers alerts to webhook URLs: POST the alert JSON, in the background.

One aiohttp session (``start``/``close``), a total timeout per attempt, at most
``max_retries`` jittered retries on 5xx answers, connection errors and timeouts (never
on 2xx-4xx answers), and one circuit breaker per URL host so a dead receiver is not
hammered. ``send`` never raises: it returns a ``DeliveryResult``. A host that starts
failing is logged once (a warning), and once more (info) when it delivers again.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from app.resilience.breaker import BreakerConfig, BreakerOpen, CircuitBreaker

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    url: str
    ok: bool
    status: int | None = None  # the last HTTP status, if any answer came
    attempts: int = 0  # requests actually made
    error: str | None = None


class _ServerError(Exception):
    """A 5xx answer: retried, and a failure for the host's breaker."""

    def __init__(self, status: int) -> None:
        super().__init__(f"HTTP {status}")
        self.status = status


def webhook_breaker_config() -> BreakerConfig:
    return BreakerConfig(consecutive_failures=3, open_seconds=30.0, max_open_seconds=600.0)


class WebhookSender:
    def __init__(
        self,
        timeout_seconds: float = 5.0,
        max_retries: int = 2,
        clock: Callable[[], float] = time.monotonic,
        *,
        backoff_seconds: float = 0.5,
        max_concurrency: int = 16,
        breaker_config: BreakerConfig | None = None,
    ) -> None:
        if timeout_seconds <= 0 or max_retries < 0 or backoff_seconds < 0:
            raise ValueError("timeout_seconds > 0, max_retries >= 0, backoff_seconds >= 0")
        self.timeout_seconds = timeout_seconds
        self.max_retries = max_retries
        self.backoff_seconds = backoff_seconds
        self._clock = clock
        self._breaker_config = breaker_config or webhook_breaker_config()
        self._breakers: dict[str, CircuitBreaker] = {}
        self._failing: set[str] = set()
        self._tasks: set[asyncio.Task[DeliveryResult]] = set()
        self._slots = asyncio.Semaphore(max_concurrency)
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def start(self) -> None:
        if self._session is None and not self._closed:
            timeout = aiohttp.ClientTimeout(total=self.timeout_seconds)
            self._session = aiohttp.ClientSession(timeout=timeout)

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

    @property
    def pending(self) -> int:
        """Background sends not finished yet."""
        return len(self._tasks)

    def breaker(self, url: str) -> CircuitBreaker:
        host = urlsplit(url).netloc
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
        try:
            body = orjson.dumps(payload)
        except TypeError as exc:
            return DeliveryResult(url, ok=False, error=f"payload is not JSON: {exc}")
        await self.start()
        if self._session is None:
            return DeliveryResult(url, ok=False, error="sender is closed")
        host = urlsplit(url).netloc
        breaker = self.breaker(url)
        attempts, status, error = 0, None, None
        async with self._slots:
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
                except _ServerError as exc:
                    status, error = exc.status, str(exc)
                    continue
                except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                    error = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
                    continue
                except Exception as exc:  # e.g. a URL aiohttp cannot use: do not retry
                    error = f"{type(exc).__name__}: {exc}"
                    break
                if 200 <= status < 300:
                    if host in self._failing:
                        self._failing.discard(host)
                        log.info("webhook host %s delivers again", host)
                    return DeliveryResult(url, ok=True, status=status, attempts=attempts)
                error = f"HTTP {status}"
                break  # a 3xx/4xx answer: the receiver is up but refuses, retrying won't help
        if host not in self._failing:
            self._failing.add(host)
            log.warning("webhook delivery to %s failed: %s", host, error)
        return DeliveryResult(url, ok=False, status=status, attempts=attempts, error=error)

    async def _post(self, url: str, body: bytes) -> int:
        assert self._session is not None
        async with asyncio.timeout(self.timeout_seconds + 1):  # belt and braces
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json"},
                allow_redirects=False,
            ) as response:
                await response.read()
                if response.status >= 500:
                    raise _ServerError(response.status)
                return response.status
