"""The compose topology with local processes: one ``virtuoso collect`` (the only
process that talks to the exchange) publishing into one Memcached and one Redis, nginx
in front of two ``virtuoso serve`` replicas that serve from them
(``VIRTUOSO_COLLECTOR=external``), and Prometheus scraping the replicas and the collector
on their monitoring listeners with the repository's rules. ``make stack`` runs it for a
person to try (Ctrl-C stops everything); the end-to-end tests start it on free ports.
With ``--tls-cert`` and ``--tls-key`` nginx serves the TLS site (HTTPS, plain HTTP
redirecting to it), as ``docker-compose.tls.yml`` does.

Needs Debian's ``nginx``, ``memcached``, ``redis-server`` and ``prometheus``
(``make stack`` installs them when missing).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from tools.ports import free_port

ROOT = Path(__file__).resolve().parent.parent
NGINX_DIR = ROOT / "deploy" / "nginx"
NGINX_SITE = NGINX_DIR / "virtuoso.conf"
NGINX_TLS_SITE = NGINX_DIR / "virtuoso-tls.conf"
# What the sites include (the replicas' list, virtuoso-upstream.conf, is written here).
NGINX_INCLUDES = ("virtuoso-shared.conf", "virtuoso-proxy.conf")
# Where the TLS site reads the certificate and key (compose mounts them there).
TLS_CERT_IN_SITE = "/etc/nginx/tls/cert.pem"
TLS_KEY_IN_SITE = "/etc/nginx/tls/key.pem"
RULES = sorted(str(path) for path in (ROOT / "prometheus" / "rules").glob("*.yml"))
STARTUP_SECONDS = 60.0
STOP_SECONDS = 10.0


@dataclass
class Ports:
    proxy: int
    replicas: list[int]
    memcached: int
    redis: int
    prometheus: int
    monitoring: list[int]  # each replica's monitoring listener
    tls: int  # the proxy's HTTPS port (used when the stack runs with TLS)
    collectors: list[int]  # each collector's metrics listener (one collector, or a standby too)

    @classmethod
    def fixed(cls, base: int = 8003, collectors: int = 1) -> Ports:
        """For a person: the proxy on ``base`` (8003), the rest above it; the collectors'
        metrics from ``base`` + 120 (8123, and 8124 for a standby)."""
        replicas, monitoring = [base + 100, base + 101], [base + 110, base + 111]
        metrics = [base + 120 + index for index in range(collectors)]
        return cls(
            base, replicas, base + 200, base + 201, base + 300, monitoring, base + 440, metrics
        )

    @classmethod
    def free(cls, replicas: int = 2, collectors: int = 1) -> Ports:
        """Every port free on the loopback interface."""
        return cls(
            free_port(),
            [free_port() for _ in range(replicas)],
            free_port(),
            free_port(),
            free_port(),
            [free_port() for _ in range(replicas)],
            free_port(),
            [free_port() for _ in range(collectors)],
        )


@dataclass(frozen=True)
class TlsFiles:
    """A PEM certificate (chain) and its key, for the proxy's HTTPS server."""

    cert: Path
    key: Path


@dataclass
class Process:
    name: str
    argv: list[str]
    port: int
    env: dict[str, str] = field(default_factory=dict)
    popen: subprocess.Popen | None = None
    more_ports: list[int] = field(default_factory=list)  # also waited for
    log_path: Path | None = None

    def start(self, log_dir: Path) -> None:
        binary = shutil.which(self.argv[0]) or self.argv[0]
        self.log_path = log_dir / f"{self.name}.log"
        log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [binary, *self.argv[1:]],
            env=os.environ | self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # Ctrl-C reaches the stack, which stops us in order
        )

    def wait_listening(self, deadline: float) -> None:
        for port in (self.port, *self.more_ports):
            self._wait_port(port, deadline)

    def _wait_port(self, port: int, deadline: float) -> None:
        while time.monotonic() < deadline:
            if self.popen is not None and self.popen.poll() is not None:
                code = self.popen.returncode
                raise RuntimeError(
                    f"{self.name} exited with {code}; its log ends:\n{self.log_tail()}"
                )
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(
            f"{self.name} is not listening on {port}; its log ends:\n{self.log_tail()}"
        )

    def log_tail(self, lines: int = 20) -> str:
        """The last ``lines`` lines of what the process printed."""
        if self.log_path is None or not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen is None or self.popen.poll() is not None:
            return
        self.popen.send_signal(signal.SIGTERM)
        try:
            self.popen.wait(STOP_SECONDS)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(STOP_SECONDS)


class LocalStack:
    """Start with ``start()`` (blocks until every part listens), stop with ``stop()``.
    ``app_env``: variables of every ``virtuoso`` process, collectors and replicas alike
    (each reads the ones of its role)."""

    def __init__(
        self,
        ports: Ports,
        app_env: dict[str, str] | None = None,
        work_dir: Path | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.ports = ports
        self.app_env = app_env or {}
        self.tls = tls
        self.dir = work_dir or Path(tempfile.mkdtemp(prefix="virtuoso-stack-"))
        self.processes: list[Process] = []
        self.admin_token = self.app_env.get("VIRTUOSO_ADMIN_TOKEN", "stack-admin-token-0123456789")

    @property
    def url(self) -> str:
        """The proxy (with TLS: its HTTPS server; plain HTTP only redirects there)."""
        if self.tls is not None:
            return f"https://127.0.0.1:{self.ports.tls}"
        return f"http://127.0.0.1:{self.ports.proxy}"

    def replica_urls(self) -> list[str]:
        """Each replica's public listener."""
        return [f"http://127.0.0.1:{port}" for port in self.ports.replicas]

    def monitoring_urls(self) -> list[str]:
        """Each replica's monitoring listener (/metrics, /api/cache/…, /health)."""
        return [f"http://127.0.0.1:{port}" for port in self.ports.monitoring]

    def collector_urls(self) -> list[str]:
        """Each collector's metrics listener (/metrics)."""
        return [f"http://127.0.0.1:{port}" for port in self.ports.collectors]

    def process(self, name: str) -> Process:
        """The running part called ``name`` (``collector-1``, ``app-2``, ``redis``, …)."""
        found = [process for process in self.processes if process.name == name]
        if not found:
            raise KeyError(f"no process {name!r} in this stack")
        return found[0]

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.ports.prometheus}"

    def start(self) -> LocalStack:
        self.dir.mkdir(parents=True, exist_ok=True)
        check_nginx(self.write_nginx_config())
        backends = [self._memcached(), self._redis()]
        collectors = [
            self._collector(index, port) for index, port in enumerate(self.ports.collectors)
        ]
        replicas = [self._replica(index, port) for index, port in enumerate(self.ports.replicas)]
        try:
            for group in (backends, collectors, replicas, [self._nginx(), self._prometheus()]):
                for process in group:
                    process.start(self.dir)
                    self.processes.append(process)
                deadline = time.monotonic() + STARTUP_SECONDS
                for process in group:
                    process.wait_listening(deadline)
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Stops every part, the proxy first, then the replicas, the collectors and the
        stores last."""
        for process in reversed(self.processes):
            process.stop()

    def __enter__(self) -> LocalStack:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # --- the parts ---------------------------------------------------------------------

    def _memcached(self) -> Process:
        argv = ["memcached", "-l", "127.0.0.1", "-p", str(self.ports.memcached), "-m", "64"]
        argv += ["-U", "0"] + (["-u", "root"] if os.geteuid() == 0 else [])
        return Process("memcached", argv, self.ports.memcached)

    def _redis(self) -> Process:
        argv = ["redis-server", "--bind", "127.0.0.1", "--port", str(self.ports.redis)]
        argv += ["--save", "", "--appendonly", "yes", "--dir", str(self.dir)]
        argv += ["--maxmemory", "256mb", "--maxmemory-policy", "volatile-lru"]
        return Process("redis", argv, self.ports.redis)

    def _tiers(self) -> dict[str, str]:
        return {
            "VIRTUOSO_MEMCACHED_URL": f"127.0.0.1:{self.ports.memcached}",
            "VIRTUOSO_REDIS_URL": f"redis://127.0.0.1:{self.ports.redis}/0",
        }

    def _collector(self, index: int, port: int) -> Process:
        """``virtuoso collect``, its metrics on ``port`` (its only listener)."""
        env = (
            self._tiers()
            | {
                "VIRTUOSO_MONITORING_BIND": f"127.0.0.1:{port}",
                "VIRTUOSO_REPLICA_ID": f"collector-{index + 1}",
                "VIRTUOSO_DATA_DIR": str(self.dir / f"collector-data-{index + 1}"),
            }
            | self.app_env
        )
        virtuoso = str(Path(sys.executable).with_name("virtuoso"))
        return Process(f"collector-{index + 1}", [virtuoso, "collect"], port, env)

    def _replica(self, index: int, port: int) -> Process:
        """``virtuoso serve``, serving only: the collector runs apart."""
        monitoring = self.ports.monitoring[index]
        env = (
            self._tiers()
            | {
                "VIRTUOSO_COLLECTOR": "external",
                "VIRTUOSO_BIND": f"127.0.0.1:{port}",
                "VIRTUOSO_MONITORING_BIND": f"127.0.0.1:{monitoring}",
                "VIRTUOSO_REPLICA_ID": f"app-{index + 1}",
                "VIRTUOSO_SECRET_KEY": "stack-secret-key-0123456789abcdef",
                "VIRTUOSO_ADMIN_TOKEN": self.admin_token,
                "VIRTUOSO_TRUSTED_PROXY_HOPS": "1",
                "VIRTUOSO_DATA_DIR": str(self.dir / f"data-{index + 1}"),
            }
            | self.app_env
        )
        virtuoso = str(Path(sys.executable).with_name("virtuoso"))
        return Process(f"app-{index + 1}", [virtuoso, "serve"], port, env, more_ports=[monitoring])

    def write_nginx_config(self) -> Path:
        """nginx.conf (process settings) + the compose stack's site (the TLS one when
        this stack has TLS files) with this stack's listen addresses, certificate and
        replicas; returns the main file."""
        (self.dir / "virtuoso.conf").write_text(self._site())
        for name in NGINX_INCLUDES:
            shutil.copyfile(NGINX_DIR / name, self.dir / name)
        servers = "".join(
            f"server 127.0.0.1:{port} max_fails=2 fail_timeout=5s;\n"
            for port in self.ports.replicas
        )
        (self.dir / "virtuoso-upstream.conf").write_text(servers)
        temp = self.dir / "nginx-temp"
        temp.mkdir(exist_ok=True)
        main = self.dir / "nginx.conf"
        user = "user root;\n" if os.geteuid() == 0 else ""
        main.write_text(
            f"{user}worker_processes 1;\npid {self.dir}/nginx.pid;\n"
            f"error_log {self.dir}/nginx-error.log warn;\n"
            "events { worker_connections 1024; }\n"
            "http {\n"
            f"  access_log off;\n  client_body_temp_path {temp}/body;\n"
            f"  proxy_temp_path {temp}/proxy;\n  fastcgi_temp_path {temp}/fastcgi;\n"
            f"  uwsgi_temp_path {temp}/uwsgi;\n  scgi_temp_path {temp}/scgi;\n"
            "  include virtuoso.conf;\n}\n"
        )
        return main

    def _site(self) -> str:
        """The shipped site with this stack's addresses (the compose ones are fixed)."""
        if self.tls is None:
            return _place(NGINX_SITE, {"listen 8003;": f"listen 127.0.0.1:{self.ports.proxy};"})
        tls = self.ports.tls
        return _place(
            NGINX_TLS_SITE,
            {
                "listen 8003;": f"listen 127.0.0.1:{self.ports.proxy};",
                "listen 8443 ssl;": f"listen 127.0.0.1:{tls} ssl;",
                "https://$host$request_uri": f"https://$host:{tls}$request_uri",
                TLS_CERT_IN_SITE: str(self.tls.cert),
                TLS_KEY_IN_SITE: str(self.tls.key),
            },
        )

    def _nginx(self) -> Process:
        main = self.dir / "nginx.conf"
        argv = ["nginx", "-p", str(self.dir), "-c", str(main), "-g", "daemon off;"]
        more = [self.ports.tls] if self.tls is not None else []
        return Process("nginx", argv, self.ports.proxy, more_ports=more)

    def _prometheus(self) -> Process:
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": RULES,
            "scrape_configs": [
                {  # each replica's monitoring listener, as in compose
                    "job_name": "virtuoso",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}" for port in self.ports.monitoring]}
                    ],
                },
                {  # each collector's metrics listener, as in compose
                    "job_name": "virtuoso-collector",
                    "static_configs": [
                        {"targets": [f"127.0.0.1:{port}" for port in self.ports.collectors]}
                    ],
                },
                {
                    "job_name": "prometheus",
                    "static_configs": [{"targets": [f"127.0.0.1:{self.ports.prometheus}"]}],
                },
            ],
        }
        argv = prometheus_command(config, self.dir, self.ports.prometheus)
        return Process("prometheus", argv, self.ports.prometheus)


def self_signed_tls(directory: Path) -> TlsFiles:
    """A self-signed certificate for 127.0.0.1 and localhost, valid for a day, and its
    key, written into ``directory`` (for tests and trying the TLS site locally)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(directory / "cert.pem", directory / "key.pem")
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    private = serialization.PrivateFormat.PKCS8
    pem = key.private_bytes(serialization.Encoding.PEM, private, serialization.NoEncryption())
    files.key.touch(mode=0o600)
    files.key.write_bytes(pem)
    return files


def _place(site: Path, replacements: dict[str, str]) -> str:
    """``site``'s text with each fixed string replaced exactly once."""
    text = site.read_text()
    for fixed, local in replacements.items():
        text, found = re.subn(re.escape(fixed), lambda _match, value=local: value, text)
        if found != 1:
            raise RuntimeError(f"{site} has no single `{fixed}` to place")
    return text


def prometheus_command(config: dict, directory: Path, port: int) -> list[str]:
    """Writes ``config`` into ``directory``; the command serving it on 127.0.0.1:port
    with its data there and exemplar storage on."""
    config_file = directory / "prometheus.yml"
    config_file.write_text(yaml.safe_dump(config))
    return [
        "prometheus",
        f"--config.file={config_file}",
        f"--storage.tsdb.path={directory / 'prometheus'}",
        f"--web.listen-address=127.0.0.1:{port}",
        "--enable-feature=exemplar-storage",
        "--log.level=warn",
    ]


def check_nginx(main: Path) -> None:
    """``nginx -t`` on the written configuration; raises with nginx's words."""
    result = subprocess.run(
        ["nginx", "-t", "-p", str(main.parent), "-c", str(main)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        raise RuntimeError(f"nginx -t failed:\n{result.stderr}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8003, help="the proxy's port (8003)")
    parser.add_argument("--tls-cert", type=Path, help="PEM certificate: the proxy on HTTPS")
    parser.add_argument("--tls-key", type=Path, help="its PEM key")
    parser.add_argument(
        "--collectors",
        type=int,
        choices=range(1, 10),
        default=1,
        metavar="N",
        help="virtuoso collect processes (1); 2: a leader and a standby that takes over",
    )
    args = parser.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    tls = TlsFiles(args.tls_cert.resolve(), args.tls_key.resolve()) if args.tls_cert else None
    stack = LocalStack(Ports.fixed(args.port, args.collectors), tls=tls)
    stop = {"asked": False}

    def ask_stop(_signum: int, _frame: object) -> None:
        stop["asked"] = True

    signal.signal(signal.SIGINT, ask_stop)
    signal.signal(signal.SIGTERM, ask_stop)
    print(f"starting the local stack in {stack.dir} …", flush=True)
    stack.start()
    replicas = ", ".join(stack.replica_urls())
    print(
        f"dashboards  {stack.url}  (nginx → {replicas})\n"
        f"monitoring  {', '.join(stack.monitoring_urls())}  (/metrics, /api/cache/…)\n"
        f"collector   {', '.join(stack.collector_urls())}  (/metrics)\n"
        f"prometheus  {stack.prometheus_url}\n"
        f"logs        {stack.dir}/*.log\n"
        "Ctrl-C stops everything.",
        flush=True,
    )
    try:
        while not stop["asked"]:
            for process in stack.processes:
                if process.popen is not None and process.popen.poll() is not None:
                    print(f"{process.name} exited ({process.popen.returncode}); stopping")
                    stop["asked"] = True
            time.sleep(0.5)
    finally:
        print("stopping …", flush=True)
        stack.stop()
    print("stopped.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
