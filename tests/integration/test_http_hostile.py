"""Hostile HTTP input against the real app: every body the JSON parser refuses is a
400 (never a 500 nor a logged traceback), only JSON media types reach JSON endpoints
(415), bodies are bounded (413), guarded endpoints authenticate before anything else
(401), the bearer scheme is required and case-insensitive, no path is ever
redirected (so no ``Location`` is built from a client's ``Host``), and the pages may
open sockets to their own origin only.

Most cases use Quart's test client; those a client library would normalize (``//``
in paths, absolute-form targets, raw chunked bodies) go through a real hypercorn."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import orjson
import pytest
import pytest_asyncio
from quart.typing import TestAppProtocol as QuartTestApp

from app.main.embedded import create_app
from app.market.sources.simulated import SimulatedMarket
from app.state import EXTENSION
from app.web import request_guards
from app.web.auth import bearer_credentials
from app.web.request_guards import MAX_BODY_BYTES, MAX_JSON_DEPTH, json_media_type_problem
from app.web.security import content_security_policy
from tests.conftest import (
    RATE_LIMITS_OFF,
    ManualClock,
    eventually,
    make_settings,
    started_app,
)
from tests.support.ws_server import serve_app

API_TOKEN = "hostile-api-Xq81LmZ0pW"
ADMIN_TOKEN = "hostile-admin-Vt52NbR7cK"
ENVIRON = {
    "VIRTUOSO_API_TOKEN": API_TOKEN,
    "VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN,
    "VIRTUOSO_RATE_LIMITS": RATE_LIMITS_OFF,
}
JSON = {"Content-Type": "application/json"}
API_AUTH = {"Authorization": f"Bearer {API_TOKEN}"}
ADMIN_AUTH = {"Authorization": f"Bearer {ADMIN_TOKEN}"}

# Every JSON endpoint: method, path, the headers that authorize it, a valid body.
JSON_ENDPOINTS = [
    ("PUT", "/api/session/watchlist", {}, {"watchlist": ["BTCUSDT"]}),
    ("POST", "/api/alerts/rules", API_AUTH, {"kind": "price_above", "threshold": 1e9}),
    ("POST", "/api/cache/invalidate", ADMIN_AUTH, {"view": "beta"}),
    (
        "POST",
        "/api/rum",
        {},
        {"device": "desktop", "page": "/", "ttfb_ms": 1, "dom_ready_ms": 2, "first_data_ms": 3},
    ),
]
GUARDED_JSON = [(m, p, auth, body) for m, p, auth, body in JSON_ENDPOINTS if auth]


def nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


# Bodies the parser refuses (all under rum's own 1 KB limit); each is its own member
# of the kind "rejected by the JSON decoder".
REFUSED_BODIES = {
    "nested past the depth limit": nested(MAX_JSON_DEPTH + 1),
    "nested 500 deep": nested(500),
    "invalid UTF-8": b'{"a": "\xff\xfe"}',
    "UTF-8 encoded surrogate": b'{"a": "\xed\xa0\x80"}',
    "lone surrogate escape": b'{"a": "\\ud800"}',
    "NaN": b'{"a": NaN}',
    "Infinity": b'{"a": Infinity}',
    "-Infinity": b"-Infinity",
    "trailing garbage": b'{"a": 1} x',
    "two documents": b"{}{}",
    "empty": b"",
    "blank": b"  \n ",
    "number out of range": b'{"a": 1e400}',
    "integer of 400 digits": b'{"a": 1' + b"0" * 400 + b"}",
    "byte order mark": b"\xef\xbb\xbf{}",
    "single quotes": b"{'a': 1}",
    "truncated": b'{"watchlist": [',
    "control character in a string": b'{"a": "\x01"}',
    "UTF-16": '{"a": 1}'.encode("utf-16"),
}


@pytest_asyncio.fixture
async def app(clock: ManualClock) -> AsyncIterator[QuartTestApp]:
    settings = make_settings(**ENVIRON)
    async for test_app in started_app(settings, SimulatedMarket(seed=7, clock=clock), clock):
        yield test_app


def server_errors(test_app: QuartTestApp) -> float:
    """HTTP requests answered 5xx, as the app's metrics count them."""
    registry = test_app.app.extensions[EXTENSION].metrics.registry  # type: ignore[attr-defined]
    return sum(
        sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if sample.name == "virtuoso_http_request_duration_seconds_count"
        and sample.labels.get("status", "").startswith("5")
    )


async def send(
    test_app: QuartTestApp, method: str, path: str, body: bytes, headers: dict[str, str]
) -> tuple[int, dict]:
    response = await test_app.test_client().open(path, method=method, data=body, headers=headers)
    payload = await response.get_data()
    if response.status_code == 204:
        assert payload == b""
        return 204, {}
    assert response.content_type == "application/json", payload[:200]
    return response.status_code, orjson.loads(payload)


@pytest.mark.parametrize(("method", "path", "auth", "valid"), JSON_ENDPOINTS)
async def test_every_refused_body_is_a_400_on_every_json_endpoint(
    app: QuartTestApp, caplog: pytest.LogCaptureFixture, method, path, auth, valid
) -> None:
    caplog.set_level(logging.INFO)
    for reason, body in REFUSED_BODIES.items():
        status, error = await send(app, method, path, body, JSON | auth)
        assert (status, error["error"]) == (400, "invalid_json"), (reason, error)
        assert "Traceback" not in error["message"]
    status, _ = await send(app, method, path, orjson.dumps(valid), JSON | auth)
    assert status in (200, 201, 204)
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert server_errors(app) == 0


async def test_the_reported_deep_body_is_a_400(app: QuartTestApp) -> None:
    """The example of the report: 2 KB nested 1,000 deep (a RecursionError before)."""
    body = b'{"watchlist": ' + nested(1000) + b"}"
    for depth_body in (body, nested(2000)):
        status, error = await send(app, "PUT", "/api/session/watchlist", depth_body, JSON)
        assert (status, error["error"]) == (400, "invalid_json")
    assert server_errors(app) == 0


async def test_accepted_json_spellings(app: QuartTestApp) -> None:
    body = orjson.dumps({"watchlist": ["btc-usdt"]})
    for content_type in (
        "application/json",
        "application/json; charset=utf-8",
        'Application/JSON;charset="UTF-8"',
        "application/vnd.virtuoso+json",
    ):
        headers = {"Content-Type": content_type}
        status, _ = await send(app, "PUT", "/api/session/watchlist", body, headers)
        assert status == 200, content_type
    duplicate = b'{"watchlist": ["BTCUSDT"], "watchlist": ["ETHUSDT"]}'
    status, payload = await send(app, "PUT", "/api/session/watchlist", duplicate, JSON)
    assert (status, payload["watchlist"]) == (200, ["ETHUSDT"])  # the last one wins


REFUSED_MEDIA_TYPES = [
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=xyz",
    "application/xml",
    "text/json",
    "application/json-patch",
    "application/+json",
    "application/json; charset=utf-16",
    "application/json; charset=latin-1",
    None,
]


@pytest.mark.parametrize(("method", "path", "auth", "valid"), JSON_ENDPOINTS)
async def test_json_endpoints_refuse_other_media_types_with_415(
    app: QuartTestApp, method, path, auth, valid
) -> None:
    body = orjson.dumps(valid)
    for content_type in REFUSED_MEDIA_TYPES:
        headers = dict(auth) | ({"Content-Type": content_type} if content_type else {})
        status, error = await send(app, method, path, body, headers)
        assert (status, error["error"]) == (415, "unsupported_media_type"), content_type


@pytest.mark.parametrize(
    ("content_type", "accepted"),
    [
        ("application/json", True),
        ("APPLICATION/JSON ; charset=utf8", True),
        ("application/problem+json", True),
        ("application/json; foo=bar", True),
        ("", False),
        ("application/", False),
        ("json", False),
        ("text/plain; charset=utf-8", False),
    ],
)
def test_json_media_types(content_type: str, accepted: bool) -> None:
    assert (json_media_type_problem(content_type) is None) is accepted


@pytest.mark.parametrize(("method", "path", "auth", "valid"), GUARDED_JSON)
async def test_guarded_endpoints_authenticate_before_reading_the_body(
    app: QuartTestApp, monkeypatch: pytest.MonkeyPatch, method, path, auth, valid
) -> None:
    parsed: list[bytes] = []
    real_parse = request_guards.parse_json
    monkeypatch.setattr(request_guards, "parse_json", lambda data: parsed.append(data))
    big = b'{"pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    hostile = [
        (b"[[[", JSON, 400),
        (orjson.dumps(valid), {"Content-Type": "text/plain"}, 415),
        (big, JSON, 413),
    ]
    for wrong in ({}, {"Authorization": "Bearer wrong-token-0123456789"}):
        for body, headers, _ in hostile:
            status, error = await send(app, method, path, body, headers | wrong)
            assert (status, error["error"]) == (401, "unauthorized")
    assert parsed == []  # nothing parsed for a client without the token
    monkeypatch.setattr(request_guards, "parse_json", real_parse)
    for body, headers, expected in hostile:
        status, _ = await send(app, method, path, body, headers | auth)
        assert status == expected


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/cache/warm"),
        ("DELETE", "/api/alerts/rules/nope"),
        ("POST", "/api/alerts/nope/ack"),
        ("POST", "/api/alerts/nope/resolve"),
    ],
)
async def test_bodiless_guarded_endpoints_authenticate_first(
    app: QuartTestApp, method: str, path: str
) -> None:
    status, error = await send(app, method, path, b"\xff" * 100, {"Content-Type": "text/plain"})
    assert (status, error["error"]) == (401, "unauthorized")


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer T0k", "T0k"),
        ("bearer T0k", "T0k"),
        ("BEARER T0k", "T0k"),
        ("BeArEr T0k", "T0k"),
        ("  Bearer T0k  ", "T0k"),
        ("Bearer  T0k", "T0k"),
        ("Bearer\tT0k", "T0k"),
        ("Bearer dGVzdA==", "dGVzdA=="),
        ("T0k", None),
        ("Basic T0k", None),
        ("Bearer", None),
        ("Bearer ", None),
        ("BearerT0k", None),
        ("Bearer T0k extra", None),
        ("Token T0k", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_credentials(header: str | None, token: str | None) -> None:
    assert bearer_credentials(header) == token


@pytest.mark.parametrize(
    ("authorization", "allowed"),
    [
        (f"Bearer {API_TOKEN}", True),
        (f"bearer {API_TOKEN}", True),
        (f"BEARER {API_TOKEN}", True),
        (f"Bearer  {API_TOKEN}", True),
        (f"Bearer\t{API_TOKEN}", True),
        (f" Bearer {API_TOKEN} ", True),
        (API_TOKEN, False),  # the report: no scheme was accepted
        (f"Basic {API_TOKEN}", False),
        ("Bearer", False),
        (f"Bearer {API_TOKEN}x", False),
        (f"Bearer {ADMIN_TOKEN}", False),  # the other token
    ],
)
async def test_the_scheme_is_required_and_case_insensitive(
    app: QuartTestApp, authorization: str, allowed: bool
) -> None:
    status, body = await send(
        app, "POST", "/api/alerts/nope/ack", b"", {"Authorization": authorization}
    )
    assert status == (404 if allowed else 401), body


async def test_401_challenges_say_bearer(app: QuartTestApp) -> None:
    client = app.test_client()
    missing = await client.post("/api/alerts/nope/ack")
    assert missing.headers["WWW-Authenticate"] == "Bearer"
    wrong = await client.post("/api/alerts/nope/ack", headers={"Authorization": "Bearer nope"})
    assert wrong.headers["WWW-Authenticate"] == 'Bearer error="invalid_token"'


async def test_bodies_over_the_limit_are_413_json(app: QuartTestApp) -> None:
    assert app.app.config["MAX_CONTENT_LENGTH"] == MAX_BODY_BYTES  # type: ignore[attr-defined]
    padded = b'{"watchlist": [], "pad": "' + b"x" * MAX_BODY_BYTES + b'"}'
    status, error = await send(app, "PUT", "/api/session/watchlist", padded, JSON)
    assert (status, error["error"]) == (413, "content_too_large")
    fits = b'{"watchlist": ["BTCUSDT"]}' + b" " * (MAX_BODY_BYTES - 100)
    status, _ = await send(app, "PUT", "/api/session/watchlist", fits, JSON)
    assert status == 200


async def test_openapi_documents_what_the_guards_answer(app: QuartTestApp) -> None:
    spec = orjson.loads(await (await app.test_client().get("/openapi.json")).get_data())
    schemes = spec["components"]["securitySchemes"]
    assert schemes["apiToken"]["scheme"] == schemes["adminToken"]["scheme"] == "bearer"
    operations = [op for ops in spec["paths"].values() for op in ops.values()]
    for operation in operations:
        responses = set(operation["responses"])
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= responses, operation.get("summary")
        if operation.get("security"):
            assert "401" in responses, operation.get("summary")
    watchlist = spec["paths"]["/api/session/watchlist"]["put"]
    assert "security" not in watchlist
    create = spec["paths"]["/api/alerts/rules"]["post"]
    assert create["security"] == [{"apiToken": []}]
    assert spec["paths"]["/api/rum"]["post"]["responses"]["204"]
    assert "/" not in spec["paths"] and "/mobile" not in spec["paths"]  # pages: not API


def test_sockets_only_to_the_pages_own_origin() -> None:
    connect = next(d for d in content_security_policy().split("; ") if d.startswith("connect-src "))
    assert connect == "connect-src 'self'"


# --- through a real hypercorn: what client libraries would not send ---------------


async def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """One request on a fresh connection; the status, headers (lower-cased) and body."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        await writer.drain()
        async with asyncio.timeout(30):
            head = await reader.readuntil(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            headers = dict(
                (name.strip().lower(), value.strip())
                for name, _, value in (line.partition(":") for line in lines[1:] if line)
            )
            body = await reader.readexactly(int(headers.get("content-length", "0")))
    finally:
        writer.close()
    return int(lines[0].split()[1]), headers, body


def http_request(
    target: str, host: str = "evil.example", extra: str = "", body: bytes = b""
) -> bytes:
    head = f"GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n{extra}\r\n"
    return head.encode("latin-1") + body


@pytest_asyncio.fixture
async def served(clock: ManualClock) -> AsyncIterator[tuple[int, QuartTestApp]]:
    app = create_app(make_settings(**ENVIRON), SimulatedMarket(seed=7, clock=clock), clock)
    async with serve_app(app) as base:
        await eventually(lambda: app.extensions[EXTENSION].warmed, seconds=30)
        yield int(base.rsplit(":", 1)[1]), app


async def test_no_path_is_redirected_whatever_the_host(served) -> None:
    port, app = served
    doubled = [  # every route with its last slash doubled: merge_slashes would redirect
        f"{rule.rule[: rule.rule.rfind('/')]}/{rule.rule[rule.rule.rfind('/') :]}"
        for rule in app.url_map.iter_rules()
        if "GET" in rule.methods and "<" not in rule.rule and rule.rule.count("/") > 1
    ]
    targets = [
        "/api//x",  # the report's example
        "/api//dashboard/data",
        "/api/dashboard//data",
        "/docs/assets//swagger-ui.css",
        "/api/dashboard/data/",
        "/mobile/",
        "http://evil.example/api//dashboard/data",  # absolute form
        *doubled,
    ]
    for target in targets:
        status, headers, body = await raw_exchange(port, http_request(target))
        assert status == 404, (target, status, headers)
        assert "location" not in headers, target
        assert orjson.loads(body)["error"] == "not_found"
    # Leading doubled slashes: werkzeug would serve them silently; 404 like any other.
    for target in (
        "//api/dashboard/data",
        "///",
        "//evil.example/x",
        "http://e.example//api/symbols",
    ):
        status, headers, _ = await raw_exchange(port, http_request(target))
        assert status == 404 and "location" not in headers, target


async def test_raw_hostile_bodies_through_hypercorn(served) -> None:
    port, _ = served
    deep = b'{"watchlist": ' + nested(1000) + b"}"
    for body in (deep, b"\xff\xfe\xfd", b'{"watchlist": ["\\udfff"]}'):
        extra = f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        request = http_request("/api/session/watchlist", "127.0.0.1", extra, body)
        status, _, payload = await raw_exchange(port, request.replace(b"GET", b"PUT", 1))
        assert (status, orjson.loads(payload)["error"]) == (400, "invalid_json")


async def test_chunked_bodies_past_the_limit_are_413(served) -> None:
    port, _ = served
    chunk = b"x" * 8192
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(10)) + b"0\r\n\r\n"
    extra = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
    request = http_request("/api/session/watchlist", "127.0.0.1", extra, chunks)
    status, _, payload = await raw_exchange(port, request.replace(b"GET", b"PUT", 1))
    assert (status, orjson.loads(payload)["error"]) == (413, "content_too_large")
    # Without the token, the same body is a 401 before a byte of it is read.
    request = http_request("/api/alerts/rules", "127.0.0.1", extra, chunks)
    status, _, payload = await raw_exchange(port, request.replace(b"GET", b"POST", 1))
    assert (status, orjson.loads(payload)["error"]) == (401, "unauthorized")


async def test_a_chunked_rum_beacon_past_its_own_limit_is_413(served) -> None:
    port, _ = served
    beacon = orjson.dumps(
        {"device": "desktop", "page": "/", "ttfb_ms": 1, "dom_ready_ms": 2, "first_data_ms": 3}
    )
    for padding in (2000, 60_000):  # past the beacon's 1 KB, under the app's 64 KiB
        body = beacon[:-1] + b" " * padding + b"}"
        chunks = b"".join(
            b"%x\r\n%s\r\n" % (len(part), part)
            for part in (body[i : i + 4096] for i in range(0, len(body), 4096))
        )
        extra = "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
        request = http_request("/api/rum", "127.0.0.1", extra, chunks + b"0\r\n\r\n")
        status, _, payload = await raw_exchange(port, request.replace(b"GET", b"POST", 1))
        assert status == 413, (padding, payload)
    small = http_request(
        "/api/rum",
        "127.0.0.1",
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n",
        b"%x\r\n%s\r\n0\r\n\r\n" % (len(beacon), beacon),
    )
    assert (await raw_exchange(port, small.replace(b"GET", b"POST", 1)))[0] == 204
