"""Property-based fuzzing of the HTTP API from its own ``/openapi.json`` (schemathesis);
the positive and negative runs are two test modules (``test_fuzz_positive.py``,
``test_fuzz_negative.py``) so that two workers can take them.

The app runs on the simulated market behind a real hypercorn on a free loopback port
(in a thread: schemathesis calls are synchronous). Every documented operation gets
valid and invalid inputs (schemathesis' positive and negative modes); operations
that need a token are called with it and without it. Each answer must be:

* no 5xx;
* a status code the document lists for the operation;
* the declared content type, and a body matching the declared schema.

Seeded and bounded: hypothesis is derandomized and each operation gets
``MAX_EXAMPLES`` inputs, so the run is the same every time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from app.main.embedded import create_app
from app.market.sources.simulated import SimulatedMarket
from app.services.alerts.channels import CHANNEL_TYPES, url_scheme
from app.state import EXTENSION
from app.web.request_guards import MAX_BODY_BYTES
from app.web.rum import MAX_BODY_BYTES as RUM_MAX_BODY_BYTES
from tests.conftest import RATE_LIMITS_OFF, ManualClock, eventually, make_settings
from tests.support.ws_server import serve_app

MAX_EXAMPLES = 50
# The market the fuzzed app serves. Few symbols: ``POST /api/cache/warm`` refreshes the
# whole market for every example (with the 25 default symbols that one operation took
# ~20 s of a ~45 s run), and no input names a symbol the fuzzer could know (the schema
# enumerates none); BTCUSDT and ETHUSDT are the hot on-demand views' symbols.
SYMBOLS = "BTCUSDT,ETHUSDT,SOLUSDT,XRPUSDT"
CALLS: Counter[str] = Counter()  # requests per operation (printed with -s)
TOKENS = {"apiToken": "fuzz-api-7Hq2Lm9XzR4t", "adminToken": "fuzz-admin-3Kd8Wp5NvB2s"}
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


class ServedApp(threading.Thread):
    """The app served by hypercorn on its own event loop, in a daemon thread."""

    def __init__(self) -> None:
        super().__init__(name="fuzzed-app", daemon=True)
        self.base_url = ""
        self.ready = threading.Event()
        self.failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as error:  # reported to the fixture, which fails the test
            self.failure = error
            self.ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        clock = ManualClock()
        environ = {
            "VIRTUOSO_API_TOKEN": TOKENS["apiToken"],
            "VIRTUOSO_ADMIN_TOKEN": TOKENS["adminToken"],
            "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
            "VIRTUOSO_SYMBOLS": SYMBOLS,
        }
        app = create_app(make_settings(**environ), SimulatedMarket(seed=7, clock=clock), clock)
        state = app.extensions[EXTENSION]
        async with serve_app(app) as base:
            await eventually(lambda: state.warmed, seconds=60)
            _no_webhooks(state)
            self.base_url = base.replace("ws://", "http://")
            self.ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self.join(timeout=30)


def _no_webhooks(state: Any) -> None:
    """Rules the fuzzer creates must never send anything off this machine."""

    async def not_sent(*args: Any, **kwargs: Any) -> None:
        return None

    if state.alerts.delivery_worker is not None:  # every delivery goes through the outbox
        state.alerts.delivery_worker.send = not_sent


@contextlib.contextmanager
def served_schema() -> Iterator[Any]:
    """The API's schema as served by the app (running in a thread until the block ends)."""
    server = ServedApp()
    server.start()
    try:
        assert server.ready.wait(timeout=90), "the app did not start within 90 s"
        if server.failure is not None:
            raise server.failure
        yield schemathesis.openapi.from_url(f"{server.base_url}/openapi.json")
    finally:
        with contextlib.suppress(Exception):
            server.stop()


FUZZ_SETTINGS = settings(
    max_examples=MAX_EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    phases=[Phase.explicit, Phase.generate, Phase.shrink],
    suppress_health_check=list(HealthCheck),
)


def operations(api_schema: Any) -> list[Any]:
    found = [result.ok() for result in api_schema.get_all_operations()]
    assert len(found) >= 20, [operation.label for operation in found]
    return found


def fuzz_every_operation(api_schema: Any, mode: GenerationMode, subtests: Any) -> None:
    """Each operation in its own subtest (schemathesis' pytest plugin does not run
    under this pytest: it reads a node attribute pytest 9 removed)."""
    for operation in operations(api_schema):
        if mode is GenerationMode.NEGATIVE and not takes_input(operation):
            continue  # nothing to make invalid
        with subtests.test(msg=operation.label):
            fuzz_operation(operation, mode)
    print(f"\nfuzz, {mode} through: {sum(CALLS.values())} requests, {len(CALLS)} operations")


def takes_input(operation: Any) -> bool:
    """Whether the operation has input to make invalid: a body or a parameter — but a
    GET whose only parameters are path segments of any string (an alert's id: every
    value is valid, an unknown one a 404) has none."""
    raw = operation.definition.raw
    parameters = raw.get("parameters") or []
    any_string = all(
        p.get("in") == "path" and p.get("schema") == {"type": "string"} for p in parameters
    )
    if operation.method.upper() == "GET" and any_string:
        return False
    return bool(parameters) or "requestBody" in raw


def fuzz_operation(operation: Any, mode: GenerationMode) -> None:
    @FUZZ_SETTINGS
    @given(case=operation.as_strategy(generation_mode=mode))
    def fuzz(case: Any) -> None:
        check_case(case)

    fuzz()


def check_case(case: Any) -> None:
    """Calls the operation (with each token it accepts, then without) and checks the answer."""
    if isinstance(case.body, dict) and isinstance(case.body.get("webhook_url"), str):
        # Checking a fuzzed webhook host would resolve it: DNS leaves the machine. A
        # webhook_url of another type stays: it is refused before any lookup, and it
        # may be the only invalid part of a negative case.
        del case.body["webhook_url"]
    if isinstance(case.body, dict) and url_scheme(str(case.body.get("url", ""))) in CHANNEL_TYPES:
        # The same for a channel URL of a known type; any other is refused unparsed.
        del case.body["url"]
    security = case.operation.definition.raw.get("security", [])
    schemes = [name for requirement in security for name in requirement]
    variants = [{"Authorization": f"Bearer {TOKENS[name]}"} for name in schemes] + [{}]
    for headers in variants:
        CALLS[case.operation.label] += 1
        response = case.call(headers=headers)
        case.validate_response(response, checks=checks_for(response))


def checks_for(response: Any) -> list[Any]:
    """All the checks; a 413 (documented) is the rejection of a body over its route's
    limit, so it must be one, and the negative-data check (whose list of rejecting
    statuses lacks 413) is not asked to count it again."""
    if response.status_code != 413:
        return CHECKS
    sent = len(response.request.body or b"")
    limit = RUM_MAX_BODY_BYTES if response.request.url.endswith("/api/rum") else MAX_BODY_BYTES
    assert sent > limit, f"413 for a body of {sent} bytes (limit {limit})"
    return [check for check in CHECKS if check is not negative_data_rejection]
