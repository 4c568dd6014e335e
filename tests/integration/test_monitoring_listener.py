"""The monitoring listener (VIRTUOSO_MONITORING_BIND) of a real `virtuoso serve`: the
operational endpoints there and not on the public listener, the pages and the API
the other way round, /health on both; both stop on SIGTERM. Without the setting,
one listener serves everything as before."""

from __future__ import annotations

import asyncio
import signal
import socket
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from app.web.listeners import OPERATIONAL_PATHS, listener_apps, served_here
from tests.support.serve import start_serve, wait_until_ready
from tests.support.servers import free_port

ADMIN_TOKEN = "monitoring-test-admin-0123456789"
STARTUP_SECONDS = 60.0
STOP_SECONDS = 20.0


def fetch(url: str, method: str = "GET", token: str | None = None) -> tuple[int, str, bytes]:
    """(status, content type, body)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = b"{}" if method == "POST" else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), 0.5).close()
        return True
    except OSError:
        return False


def start(environ: dict[str, str], log: int = subprocess.DEVNULL) -> subprocess.Popen:
    """`virtuoso serve` with these variables (and the operator token); its log to ``log``."""
    return start_serve({"VIRTUOSO_ADMIN_TOKEN": ADMIN_TOKEN} | environ, stderr=log)


def wait_ready(base: str, process: subprocess.Popen) -> None:
    wait_until_ready(base, process, STARTUP_SECONDS)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.wait(timeout=STOP_SECONDS)


class Launched:
    """A `virtuoso serve` started (not yet ready): with both listeners unless ``split``
    is False; ``public`` and ``monitoring`` are their URLs (one URL without the split)."""

    def __init__(self, split: bool = True) -> None:
        public = free_port()
        environ = {"VIRTUOSO_BIND": f"127.0.0.1:{public}"}
        self.public = f"http://127.0.0.1:{public}"
        self.monitoring = self.public
        if split:
            monitoring = free_port()
            environ["VIRTUOSO_MONITORING_BIND"] = f"127.0.0.1:{monitoring}"
            self.monitoring = f"http://127.0.0.1:{monitoring}"
        self.process = start(environ)

    def ready(self) -> tuple[str, str, subprocess.Popen]:
        """Waits until both listeners say ready; (public URL, monitoring URL, process)."""
        wait_ready(self.public, self.process)
        wait_ready(self.monitoring, self.process)
        return self.public, self.monitoring, self.process


@pytest.fixture(scope="module")
def launched() -> Iterator[dict[str, Launched]]:
    """The module's servers, started together (each takes seconds to be ready: they
    get ready side by side): ``read`` for the tests that only read from it, ``stopped``
    for the test that stops it, ``single`` without the monitoring listener."""
    servers = {"read": Launched(), "stopped": Launched(), "single": Launched(split=False)}
    try:
        yield servers
    finally:
        for server in servers.values():
            stop(server.process)


@pytest.fixture(scope="module")
def server(launched) -> tuple[str, str, subprocess.Popen]:
    """One server for the module's tests that only read from it."""
    return launched["read"].ready()


@pytest.fixture
def server_to_stop(launched) -> tuple[str, str, subprocess.Popen]:
    """A server of the test's own, which the test stops."""
    return launched["stopped"].ready()


@pytest.fixture
def single_listener_server(launched) -> tuple[str, subprocess.Popen]:
    """A server of the test's own without VIRTUOSO_MONITORING_BIND: (URL, process)."""
    base, _, process = launched["single"].ready()
    return base, process


def test_operational_endpoints_only_on_the_monitoring_listener(server) -> None:
    public, monitoring, _ = server
    status, kind, body = fetch(f"{public}/metrics")
    assert status == 404 and kind == "application/json" and b"not_found" in body
    status, kind, body = fetch(f"{monitoring}/metrics")
    assert status == 200 and b"virtuoso_" in body
    for path in ("/api/cache/metrics", "/api/cache/metrics/", "//api/cache/metrics"):
        assert fetch(f"{public}{path}", token=ADMIN_TOKEN)[0] == 404, path
    assert fetch(f"{monitoring}/api/cache/metrics", token=ADMIN_TOKEN)[0] == 200
    assert fetch(f"{monitoring}/api/cache/metrics")[0] == 401  # still needs the token
    for path in ("/api/cache/warm", "/api/cache/invalidate"):
        assert fetch(f"{public}{path}", "POST", ADMIN_TOKEN)[0] == 404, path
    # the endpoint is there: a body without family or view is refused as such
    assert fetch(f"{monitoring}/api/cache/invalidate", "POST", ADMIN_TOKEN)[0] == 400


def test_pages_and_api_only_on_the_public_listener(server) -> None:
    public, monitoring, _ = server
    for path in ("/", "/mobile", "/api/symbols", "/api/dashboard/data", "/openapi.json"):
        assert fetch(f"{public}{path}")[0] == 200, path
        status, kind, _ = fetch(f"{monitoring}{path}")
        assert status == 404 and kind == "application/json", path
    for path in ("/health", "/health/ready"):
        assert fetch(f"{public}{path}")[0] == 200, path
        assert fetch(f"{monitoring}{path}")[0] == 200, path


def test_no_websocket_on_the_monitoring_listener(server) -> None:
    public, monitoring, _ = server
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    with connect(public.replace("http", "ws") + "/ws", open_timeout=10) as socket_:
        socket_.ping()
    with pytest.raises(InvalidStatus) as refused:
        connect(monitoring.replace("http", "ws") + "/ws", open_timeout=10)
    assert refused.value.response.status_code == 404


def test_both_listeners_stop_on_sigterm(server_to_stop) -> None:
    public, monitoring, process = server_to_stop
    ports = [int(url.rsplit(":", 1)[1]) for url in (public, monitoring)]
    assert all(listening(port) for port in ports)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_SECONDS) == 0
    assert not any(listening(port) for port in ports)


def test_without_the_setting_one_listener_serves_everything(single_listener_server) -> None:
    base, process = single_listener_server
    assert fetch(f"{base}/metrics")[0] == 200
    assert fetch(f"{base}/api/cache/metrics", token=ADMIN_TOKEN)[0] == 200
    assert fetch(f"{base}/api/symbols")[0] == 200
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=STOP_SECONDS) == 0


def test_a_monitoring_address_in_use_stops_the_server() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        public = free_port()
        process = start(
            {
                "VIRTUOSO_BIND": f"127.0.0.1:{public}",
                "VIRTUOSO_MONITORING_BIND": f"127.0.0.1:{busy}",
            },
            log=subprocess.PIPE,
        )
        try:
            assert process.wait(timeout=STARTUP_SECONDS + STOP_SECONDS) == 1
            assert "a listener failed" in process.stderr.read()
        finally:
            stop(process)
    assert not listening(public)


def test_served_here() -> None:
    for path in OPERATIONAL_PATHS:
        assert served_here(path, monitoring=True) and not served_here(path, monitoring=False)
        assert not served_here(f"{path}/", monitoring=False)
        assert not served_here(f"/{path}", monitoring=False)
    for path in ("/health", "/health/ready"):
        assert served_here(path, monitoring=True) and served_here(path, monitoring=False)
    for path in ("/", "/api/symbols", "/ws", "/healthz", "/static/x.js"):
        assert served_here(path, monitoring=False) and not served_here(path, monitoring=True)


async def test_the_monitoring_copy_answers_its_own_lifespan_after_the_app_started() -> None:
    calls: list[str] = []

    async def app(scope, receive, send) -> None:
        calls.append(scope["type"])
        if scope["type"] == "lifespan":
            await receive()
            await send({"type": "lifespan.startup.complete"})
        else:
            calls.append(scope["extensions"]["virtuoso.listener"])

    public, monitoring = listener_apps(app, monitoring=True)
    assert monitoring is not None
    sent: list[dict] = []
    messages = asyncio.Queue()
    for message in ({"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}):
        messages.put_nowait(message)

    async def send(message: dict) -> None:
        sent.append(message)

    waiting = asyncio.create_task(monitoring({"type": "lifespan"}, messages.get, send))
    await asyncio.sleep(0.05)
    assert sent == []  # the app has not started yet
    await public({"type": "lifespan"}, _startup(), send)
    await asyncio.wait_for(waiting, 10)
    assert [m["type"] for m in sent] == [
        "lifespan.startup.complete",  # the app's, through the public copy
        "lifespan.startup.complete",  # then the monitoring copy's own
        "lifespan.shutdown.complete",
    ]
    await monitoring({"type": "http", "extensions": {}}, messages.get, send)
    assert calls == ["lifespan", "http", "monitoring"]


def _startup():
    async def receive() -> dict:
        return {"type": "lifespan.startup"}

    return receive
