"""The shipped nginx sites in front of a real `virtuoso serve`: only WebSocket upgrades
reach the app (no `Upgrade: h2c` in any spelling, no HTTP/2 prior knowledge), the
client's X-Forwarded-Proto never counts, and the TLS site serves HTTPS with HSTS and
redirects plain HTTP. The replica has no monitoring listener, so its /metrics is on
its public port: what nginx lets through is what a bypass would reach."""

from __future__ import annotations

import json
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.request
import warnings
from collections.abc import Iterator
from pathlib import Path

import h2.config
import h2.connection
import h2.events
import pytest
from websockets.sync.client import connect as ws_connect

from tools.local_stack import (
    STARTUP_SECONDS,
    LocalStack,
    Ports,
    Process,
    TlsFiles,
    self_signed_tls,
)

READ_SECONDS = 5.0  # a socket's timeout
ANSWER_SECONDS = 30.0  # the bound on waiting for an answer (the machine may be busy)
SECRET = "proxy-test-secret-key-0123456789"

# Every spelling of an h2c upgrade; each is sent with and without HTTP2-Settings.
H2C_UPGRADES = ["h2c", "H2C", "h2c, websocket", "websocket, h2c", " h2c "]
SETTINGS_HEADER = "AAMAAABkAAQCAAAAAAIAAAAA"  # an h2 client's SETTINGS, base64url


# --- the processes ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def work_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="virtuoso-proxy-") as directory:
        yield Path(directory)


@pytest.fixture(scope="module")
def replica(work_dir: Path) -> Iterator[int]:
    """One `virtuoso serve` behind one trusted proxy; its port."""
    port = Ports.free(replicas=1).replicas[0]
    env = {
        "VIRTUOSO_BIND": f"127.0.0.1:{port}",
        "VIRTUOSO_SECRET_KEY": SECRET,
        "VIRTUOSO_TRUSTED_PROXY_HOPS": "1",
        "VIRTUOSO_DATA_DIR": str(work_dir / "data"),
        "VIRTUOSO_REFRESH_SECONDS": "2",
    }
    serve = [sys.executable, "-m", "app", "serve"]
    with running(Process("app", serve, port, env), work_dir):
        wait_ready(f"http://127.0.0.1:{port}")
        yield port


@pytest.fixture(scope="module")
def proxy(replica: int, work_dir: Path) -> Iterator[LocalStack]:
    """nginx with the plain HTTP site in front of the replica."""
    with nginx_for(replica, work_dir / "plain") as stack:
        yield stack


@pytest.fixture(scope="module")
def tls_proxy(replica: int, work_dir: Path) -> Iterator[tuple[LocalStack, ssl.SSLContext]]:
    """nginx with the TLS site (a certificate made here) in front of the replica, and a
    client context trusting that certificate."""
    files = self_signed_tls(work_dir)
    with nginx_for(replica, work_dir / "tls", files) as stack:
        yield stack, ssl.create_default_context(cafile=str(files.cert))


def wait_ready(base: str) -> None:
    """Until /health/ready answers 200 (the first snapshot is served)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while get(f"{base}/health/ready")[0] != 200:
        assert time.monotonic() < deadline, "the replica never became ready"
        time.sleep(0.1)


class running:
    """Starts ``process`` (logs in ``directory``), waits until it listens, stops it."""

    def __init__(self, process: Process, directory: Path) -> None:
        self.process, self.directory = process, directory

    def __enter__(self) -> Process:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.process.start(self.directory)
        try:
            self.process.wait_listening(time.monotonic() + STARTUP_SECONDS)
        except BaseException:
            self.process.stop()
            raise
        return self.process

    def __exit__(self, *exc_info: object) -> None:
        self.process.stop()
        assert self.process.popen is not None and self.process.popen.poll() is not None


class nginx_for:
    """The shipped site (plain, or TLS with ``tls``) in front of one replica."""

    def __init__(self, replica: int, directory: Path, tls: TlsFiles | None = None) -> None:
        ports = Ports.free(replicas=1)
        ports.replicas = [replica]
        self.stack = LocalStack(ports, work_dir=directory, tls=tls)
        self.running: running | None = None

    def __enter__(self) -> LocalStack:
        self.stack.dir.mkdir(parents=True, exist_ok=True)
        self.stack.write_nginx_config()
        self.running = running(self.stack._nginx(), self.stack.dir)
        self.running.__enter__()
        return self.stack

    def __exit__(self, *exc_info: object) -> None:
        if self.running is not None:
            self.running.__exit__(*exc_info)


# --- raw HTTP/1.1 and HTTP/2 over a socket ---------------------------------------------


def request_bytes(path: str, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"GET {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers)]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def read_head(sock: socket.socket) -> tuple[int, bytes, bytes]:
    """The status, the head and whatever followed it (bounded by ANSWER_SECONDS)."""
    data = b""
    deadline = time.monotonic() + ANSWER_SECONDS
    while b"\r\n\r\n" not in data and time.monotonic() < deadline:
        sock.settimeout(max(0.1, deadline - time.monotonic()))
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), data[:200]
    return int(head.split()[1]), head, rest


def read_more(sock: socket.socket, seconds: float = 1.0) -> bytes:
    """What the peer sends within ``seconds`` (or until it closes)."""
    data = b""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sock.settimeout(max(0.05, deadline - time.monotonic()))
        try:
            chunk = sock.recv(65536)
        except (TimeoutError, ConnectionResetError):
            break
        if not chunk:
            break
        data += chunk
    return data


def h2_requests(
    sock: socket.socket,
    conn: h2.connection.H2Connection,
    paths: list[str],
    upgraded: bytes | None = None,
) -> dict:
    """Sends GET ``paths`` over an HTTP/2 connection; each stream's status as the
    server answered. ``upgraded``: the connection was upgraded from HTTP/1.1, these
    bytes came after the 101, and stream 1 (the upgrade request's) is answered too."""
    port = sock.getpeername()[1]
    for path in paths:
        stream = conn.get_next_available_stream_id()
        headers = [(":method", "GET"), (":path", path), (":scheme", "http")]
        conn.send_headers(stream, [*headers, (":authority", f"127.0.0.1:{port}")], True)
    sock.sendall(conn.data_to_send())
    statuses: dict[int, int] = {}
    bodies: dict[int, bytes] = {}
    deadline = time.monotonic() + ANSWER_SECONDS
    data = upgraded or b""
    while time.monotonic() < deadline and len(statuses) < len(paths) + (upgraded is not None):
        data += read_more(sock, 0.5)
        if not data:
            continue
        for event in conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                statuses[event.stream_id] = int(dict(event.headers)[b":status"])
            elif isinstance(event, h2.events.DataReceived):
                bodies[event.stream_id] = bodies.get(event.stream_id, b"") + event.data
                conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        sock.sendall(conn.data_to_send())
        data = b""
    return {"statuses": statuses, "bodies": bodies}


def h2c_upgrade(port: int, path: str, upgrade: str, with_settings: bool) -> tuple[int, bytes]:
    """A request asking to upgrade to h2c; then, as an attacker would, the HTTP/2
    preface and a request for /metrics. The status and everything the peer sent back."""
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    settings = conn.initiate_upgrade_connection().decode()
    headers = [("Upgrade", upgrade), ("Connection", "Upgrade, HTTP2-Settings")]
    if with_settings:
        headers.append(("HTTP2-Settings", settings))
    with socket.create_connection(("127.0.0.1", port), READ_SECONDS) as sock:
        sock.sendall(request_bytes(path, headers))
        status, head, rest = read_head(sock)
        conn.send_headers(3, [(":method", "GET"), (":path", "/metrics"), (":scheme", "http"),
                              (":authority", "127.0.0.1")], end_stream=True)  # fmt: skip
        try:
            sock.sendall(conn.data_to_send())
            rest += read_more(sock)
        except (BrokenPipeError, ConnectionResetError):
            pass
    return status, head + rest


def get(url: str, context: ssl.SSLContext | None = None, headers: dict | None = None):
    """(status, headers, body) of a GET that follows no redirect."""

    class NoRedirect(urllib.request.HTTPRedirectHandler):
        def redirect_request(self, *args: object, **kwargs: object) -> None:
            return None

    handlers = [NoRedirect(), urllib.request.HTTPSHandler(context=context)]
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(urllib.request.Request(url, headers=headers or {}), timeout=10) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


# --- the app server alone: what the proxy must keep clients from --------------------------


def test_the_app_server_itself_answers_h2c_but_serves_nothing_over_it(replica: int) -> None:
    """hypercorn answers 101 before the app sees the request (no setting turns it off);
    every request made over the resulting HTTP/2 connection is refused (505)."""
    headers = [("Upgrade", "h2c"), ("Connection", "Upgrade, HTTP2-Settings")]
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    headers.append(("HTTP2-Settings", conn.initiate_upgrade_connection().decode()))
    with socket.create_connection(("127.0.0.1", replica), READ_SECONDS) as sock:
        sock.sendall(request_bytes("/metrics", headers))
        status, _, rest = read_head(sock)
        assert status == 101  # the documented limit: hypercorn's own answer
        answers = h2_requests(sock, conn, ["/metrics", "/api/symbols"], upgraded=rest)
    assert answers["statuses"] == {1: 505, 3: 505, 5: 505}, answers
    assert all(b"virtuoso_" not in body for body in answers["bodies"].values())


def test_the_app_server_refuses_http2_prior_knowledge(replica: int) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    with socket.create_connection(("127.0.0.1", replica), READ_SECONDS) as sock:
        answers = h2_requests(sock, conn, ["/metrics", "/api/symbols"])
    assert answers["statuses"] == {1: 505, 3: 505}, answers


# --- through nginx ---------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/ws", "/", "/metrics", "/api/symbols"])
@pytest.mark.parametrize("with_settings", [True, False])
@pytest.mark.parametrize("upgrade", H2C_UPGRADES)
def test_no_h2c_upgrade_gets_through_nginx(
    proxy: LocalStack, path: str, upgrade: str, with_settings: bool
) -> None:
    status, answer = h2c_upgrade(proxy.ports.proxy, path, upgrade, with_settings)
    assert status != 101, answer[:300]
    assert b"h2c" not in answer.lower()
    assert b"virtuoso_" not in answer  # no metrics, whatever was sent after
    if path == "/ws":
        assert status == 400  # an upgrade to anything but WebSocket
    elif path in ("/", "/api/symbols"):
        assert status == 200  # served as the plain request it also is


def test_a_second_upgrade_header_does_not_get_through(proxy: LocalStack) -> None:
    headers = [("Upgrade", "websocket"), ("Upgrade", "h2c"), ("Connection", "Upgrade")]
    headers.append(("HTTP2-Settings", SETTINGS_HEADER))
    with socket.create_connection(("127.0.0.1", proxy.ports.proxy), READ_SECONDS) as sock:
        sock.sendall(request_bytes("/ws", headers))
        status, head, rest = read_head(sock)
    assert status != 101 and b"h2c" not in (head + rest).lower(), head


def test_http2_prior_knowledge_is_refused_by_nginx(proxy: LocalStack) -> None:
    conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
    conn.initiate_connection()
    conn.send_headers(1, [(":method", "GET"), (":path", "/metrics"), (":scheme", "http"),
                          (":authority", "127.0.0.1")], end_stream=True)  # fmt: skip
    with socket.create_connection(("127.0.0.1", proxy.ports.proxy), READ_SECONDS) as sock:
        sock.sendall(conn.data_to_send())
        answer = read_more(sock, READ_SECONDS)
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert b"virtuoso_" not in answer


def test_a_websocket_through_nginx_still_works(proxy: LocalStack) -> None:
    url = proxy.url.replace("http://", "ws://") + "/ws"
    with ws_connect(url, open_timeout=READ_SECONDS, close_timeout=READ_SECONDS) as socket_:
        socket_.send(json.dumps({"type": "subscribe", "channels": ["market"]}))
        message = json.loads(socket_.recv(timeout=30))
    assert message["type"]


def test_the_page_origin_opens_the_websocket_through_nginx(proxy: LocalStack) -> None:
    """A browser sends its page's origin, port included: nginx must pass the Host the
    browser used (with the port) so the app sees the page as same-origin."""
    url = proxy.url.replace("http://", "ws://") + "/ws"
    for page in (proxy.url, proxy.url.replace("127.0.0.1", "localhost")):
        host = page.removeprefix("http://")
        with ws_connect(
            url.replace("127.0.0.1", host.split(":")[0]),
            origin=page,
            open_timeout=READ_SECONDS,
            close_timeout=READ_SECONDS,
        ) as socket_:
            socket_.send(json.dumps({"type": "ping"}))
            assert json.loads(socket_.recv(timeout=30))["type"] == "pong"


@pytest.mark.parametrize(
    "extra",
    [
        [],
        [("X-Forwarded-Host", "evil.example")],  # nginx drops it: no one of ours sets it
        [("X-Forwarded-Host", "evil.example"), ("Forwarded", "host=evil.example")],
    ],
)
def test_a_foreign_origin_is_refused_through_nginx(
    proxy: LocalStack, extra: list[tuple[str, str]]
) -> None:
    headers = [("Upgrade", "websocket"), ("Connection", "Upgrade"), *extra]
    headers += [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    headers += [("Origin", "http://evil.example")]
    with socket.create_connection(("127.0.0.1", proxy.ports.proxy), READ_SECONDS) as sock:
        sock.sendall(request_bytes("/ws", headers))
        status, head, _ = read_head(sock)
    assert status == 403, head


def test_the_websocket_upgrade_is_case_insensitive(proxy: LocalStack) -> None:
    headers = [("Upgrade", "WebSocket"), ("Connection", "keep-alive, Upgrade")]
    headers += [("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]
    with socket.create_connection(("127.0.0.1", proxy.ports.proxy), READ_SECONDS) as sock:
        sock.sendall(request_bytes("/ws", headers))
        status, head, _ = read_head(sock)
    assert status == 101 and b"upgrade: websocket" in head.lower(), head


def test_nginx_hides_the_operational_endpoints(proxy: LocalStack) -> None:
    for path in ("/metrics", "/api/cache/metrics", "/api/cache/warm"):
        status, _, body = get(f"{proxy.url}{path}")
        assert status == 404 and json.loads(body)["error"] == "not_found", path
    assert get(f"{proxy.url}/api/symbols")[0] == 200


def test_a_client_cannot_claim_https_through_the_plain_site(proxy: LocalStack) -> None:
    status, headers, _ = get(
        f"{proxy.url}/api/session/watchlist", headers={"X-Forwarded-Proto": "https"}
    )
    assert status == 200
    assert "; Secure" not in headers["Set-Cookie"]  # nginx says http, whatever was sent


# --- the TLS site ----------------------------------------------------------------------


def test_the_tls_site_serves_https_with_hsts(tls_proxy) -> None:
    stack, context = tls_proxy
    status, headers, body = get(f"{stack.url}/api/symbols", context)
    assert status == 200 and json.loads(body)
    assert headers["Strict-Transport-Security"] == "max-age=63072000"
    status, headers, _ = get(f"{stack.url}/metrics", context)
    assert status == 404 and headers["Strict-Transport-Security"]
    with (
        socket.create_connection(("127.0.0.1", stack.ports.tls), READ_SECONDS) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")


def test_the_session_cookie_is_secure_over_https(tls_proxy) -> None:
    stack, context = tls_proxy
    status, headers, _ = get(
        f"{stack.url}/api/session/watchlist", context, headers={"X-Forwarded-Proto": "http"}
    )
    assert status == 200
    assert "; Secure" in headers["Set-Cookie"]  # nginx says https, whatever was sent


def test_plain_http_is_redirected_to_https(tls_proxy) -> None:
    stack, _ = tls_proxy
    status, headers, _ = get(f"http://127.0.0.1:{stack.ports.proxy}/mobile?x=1")
    assert status == 308
    assert headers["Location"] == f"https://127.0.0.1:{stack.ports.tls}/mobile?x=1"
    assert "Strict-Transport-Security" not in headers  # only ever over HTTPS


def test_old_tls_versions_are_refused(tls_proxy) -> None:
    stack, _ = tls_proxy
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with warnings.catch_warnings():  # TLS 1.1 is deprecated: that is the point
        warnings.simplefilter("ignore", DeprecationWarning)
        context.maximum_version = ssl.TLSVersion.TLSv1_1
        context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # this client offers it; nginx must refuse
    with (
        socket.create_connection(("127.0.0.1", stack.ports.tls), READ_SECONDS) as raw,
        pytest.raises(ssl.SSLError, match=r"(?i)protocol.version"),
    ):
        context.wrap_socket(raw, server_hostname="127.0.0.1")
