"""The deployment files: docker-compose.yml (and its TLS override) valid (Debian's
docker-compose validates without an engine), every mounted file present, images
pinned, healthchecks wired, only the proxy published beyond the host's loopback,
every variable the app reads documented, the image built as the README says, and
both nginx sites accepted by `nginx -t`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import CONFIG_ENV, ENVIRONMENT
from tools.local_stack import NGINX_DIR, LocalStack, Ports, check_nginx, self_signed_tls

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = ROOT / "docker-compose.yml"
COMPOSE_TLS = ROOT / "docker-compose.tls.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = (ROOT / "README.md").read_text()
# Images without a shell or wget: nothing to run a healthcheck command with.
NO_HEALTHCHECK = {"otel-collector"}
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def docker_compose(
    *args: str, env_file: Path, files: tuple[Path, ...] = (COMPOSE,)
) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found: `make test` installs Debian's docker-compose")
    command = [binary, "--env-file", str(env_file)]
    command += [option for file in files for option in ("-f", str(file))]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=60, cwd=ROOT)


def tls_env(tmp_path: Path) -> Path:
    """.env.example with the TLS certificate and key set (to files made here)."""
    files = self_signed_tls(tmp_path)
    env = tmp_path / "tls.env"
    env.write_text(
        ENV_EXAMPLE.read_text() + f"VIRTUOSO_TLS_CERT={files.cert}\nVIRTUOSO_TLS_KEY={files.key}\n"
    )
    return env


def test_compose_file_is_valid() -> None:
    result = docker_compose("config", "-q", env_file=ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr


def test_compose_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = docker_compose("config", "-q", env_file=empty)
    assert result.returncode != 0
    assert "VIRTUOSO_SECRET_KEY" in result.stderr


def test_every_mounted_file_exists() -> None:
    override = yaml.safe_load(COMPOSE_TLS.read_text())
    for services in (compose()["services"], override["services"]):
        for name, service in services.items():
            for volume in service.get("volumes", []):
                source = volume.split(":")[0]
                if source.startswith("./"):
                    assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (ROOT / compose()["services"]["app"]["build"] / "Dockerfile").exists()
    # what the sites include sits beside them, where the proxy's nginx.conf looks
    mounted = {v.split(":")[1] for v in compose()["services"]["proxy"]["volumes"]}
    for site in (
        "virtuoso.conf",
        "virtuoso-tls.conf",
        "virtuoso-shared.conf",
        "virtuoso-proxy.conf",
    ):
        for include in re.findall(r"^\s*include (\S+);", (NGINX_DIR / site).read_text(), re.M):
            assert f"/etc/nginx/{include}" in mounted, f"{site} includes unmounted {include}"


def test_only_the_proxy_is_published_beyond_the_loopback() -> None:
    services = compose()["services"]
    assert "ports" not in services["app"]  # a replica is reached through the proxy only
    assert set(services["app"]["expose"]) == {"8003", "8001"}
    assert "ports" not in services["collector"]  # its metrics: the stack's network only
    assert set(services["collector"]["expose"]) == {"8001"}
    for name, service in services.items():
        for port in service.get("ports", []):
            if name != "proxy":
                assert port.startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"
    assert "--web.enable-lifecycle" not in services["prometheus"]["command"]


def test_prometheus_scrapes_the_monitoring_listeners() -> None:
    """The replicas as job ``virtuoso``, the collectors as ``virtuoso-collector``, each
    on the port its service's VIRTUOSO_MONITORING_BIND listens on, found by its name."""
    services = compose()["services"]
    config = yaml.safe_load((ROOT / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    for service, job_name in (("app", "virtuoso"), ("collector", "virtuoso-collector")):
        bind = services[service]["environment"]["VIRTUOSO_MONITORING_BIND"]
        (discovery,) = jobs[job_name]["dns_sd_configs"]
        assert discovery["names"] == [service]
        assert discovery["port"] == int(bind.rsplit(":", 1)[1]), job_name
    # the healthcheck stays on the public listener, which keeps /health
    assert "127.0.0.1:8003/health" in " ".join(services["app"]["healthcheck"]["test"])


def test_one_collector_service_and_serving_only_replicas() -> None:
    """The collector runs the image's ``virtuoso collect`` against the same tiers as the
    replicas; the replicas serve only (VIRTUOSO_COLLECTOR=external) and are given
    nothing that only a collector reads (the exchange's URL and timeout)."""
    services = compose()["services"]
    collector, app = services["collector"], services["app"]
    assert collector["command"] == ["virtuoso", "collect"]
    assert collector["image"] == app["image"] and collector["build"] == app["build"]
    assert app["environment"]["VIRTUOSO_COLLECTOR"] == "external"
    assert "VIRTUOSO_COLLECTOR" not in collector["environment"]
    for shared in ("VIRTUOSO_MEMCACHED_URL", "VIRTUOSO_REDIS_URL", "VIRTUOSO_EXCHANGE"):
        assert collector["environment"][shared] == app["environment"][shared], shared
    collector_only = {"VIRTUOSO_EXCHANGE_URL", "VIRTUOSO_EXCHANGE_TIMEOUT_SECONDS"}
    assert collector_only <= set(collector["environment"])
    assert not collector_only & set(app["environment"])
    # no secrets where no request is answered
    assert not {"VIRTUOSO_SECRET_KEY", "VIRTUOSO_ADMIN_TOKEN", "VIRTUOSO_API_TOKEN"} & set(
        collector["environment"]
    )
    # the image has no curl: the healthcheck is Python's, on the metrics listener
    probe = " ".join(collector["healthcheck"]["test"])
    assert probe.startswith("CMD python -c import urllib.request")
    assert "127.0.0.1:8001/metrics" in probe
    assert collector["restart"] == "unless-stopped"
    assert set(collector["depends_on"]) == {"memcached", "redis"}
    assert collector["deploy"]["replicas"] == 2  # a leader and a standby
    # the image runs whatever command compose gives it: no ENTRYPOINT in the way
    assert not re.search(r"^ENTRYPOINT", (ROOT / "Dockerfile").read_text(), re.MULTILINE)


def test_the_tls_override_is_valid_and_replaces_the_site(tmp_path: Path) -> None:
    files = (COMPOSE, COMPOSE_TLS)
    result = docker_compose("config", env_file=tls_env(tmp_path), files=files)
    assert result.returncode == 0, result.stderr
    proxy = yaml.safe_load(result.stdout)["services"]["proxy"]
    sites = [v for v in proxy["volumes"] if "/etc/nginx/conf.d/default.conf" in str(v)]
    assert len(sites) == 1 and "virtuoso-tls.conf" in str(sites[0]), sites
    assert {p["target"] if isinstance(p, dict) else p for p in proxy["ports"]} >= {8003, 8443}
    assert "https://127.0.0.1:8443/health" in proxy["healthcheck"]["test"]
    assert "ports" not in yaml.safe_load(result.stdout)["services"]["app"]


def test_the_tls_override_needs_the_certificate() -> None:
    result = docker_compose("config", "-q", env_file=ENV_EXAMPLE, files=(COMPOSE, COMPOSE_TLS))
    assert result.returncode != 0
    assert "VIRTUOSO_TLS_CERT" in result.stderr


def test_nginx_never_copies_the_clients_upgrade_or_connection() -> None:
    for site in NGINX_DIR.glob("virtuoso*.conf"):
        for line in site.read_text().splitlines():
            code = line.split("#", 1)[0]
            if re.search(r"\$http_(upgrade|connection|http2_settings)\b", code):
                assert code.strip().startswith("map "), f"{site.name}: {line.strip()}"
    proxy = (NGINX_DIR / "virtuoso-proxy.conf").read_text()
    assert proxy.count('proxy_set_header Upgrade "";') == 1  # location /
    assert proxy.count("proxy_set_header Upgrade $virtuoso_upgrade;") == 1  # /ws
    assert proxy.count("proxy_set_header Connection") == 2
    assert proxy.count('proxy_set_header HTTP2-Settings "";') == 2
    assert proxy.count("proxy_set_header X-Forwarded-Proto $scheme;") == 2


def test_images_are_pinned_and_healthchecks_wired() -> None:
    services = compose()["services"]
    for name, service in services.items():
        image = service.get("image", "")
        assert re.search(r":[\w.-]*\d[\w.-]*$", image), f"{name}: unpinned image {image!r}"
        if name not in NO_HEALTHCHECK:
            assert "healthcheck" in service, f"{name} has no healthcheck"
        for dependency, condition in service.get("depends_on", {}).items():
            expected = "service_started" if dependency in NO_HEALTHCHECK else "service_healthy"
            assert condition == {"condition": expected}, (name, dependency)
    assert services["app"]["deploy"]["replicas"] == 2
    assert "volumes" not in services["app"]  # configured by environment variables only
    assert "volumes" not in services["collector"]
    assert "--appendonly" in services["redis"]["command"]
    assert "--maxmemory" in services["redis"]["command"]
    assert "-m" in services["memcached"]["command"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


def test_every_variable_the_app_reads_is_documented() -> None:
    variables = {*ENVIRONMENT.values(), CONFIG_ENV, *OTEL_VARIABLES}
    undocumented = sorted(v for v in variables if f"`{v}`" not in README)
    assert not undocumented, f"not in the README's configuration table: {undocumented}"
    for service in ("app", "collector"):
        service_env = set(compose()["services"][service]["environment"])
        assert service_env <= variables, (
            f"compose sets variables {service} does not read: {service_env - variables}"
        )
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text() + COMPOSE_TLS.read_text()))
    example = set(re.findall(r"^(\w+)=", ENV_EXAMPLE.read_text(), re.MULTILINE))
    assert used <= example, f"not in .env.example: {sorted(used - example)}"


def test_dockerfile_builds_a_small_non_root_image() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
    assert len(stages) >= 2  # multi-stage
    assert all(re.search(r":\d", image) for image in stages), stages
    assert stages[-1].startswith("python:3.11") and "slim" in stages[-1]
    assert re.search(r"^USER (?!root)\w+", dockerfile, re.MULTILINE)
    assert re.search(r"^HEALTHCHECK .*\n?.*/health", dockerfile, re.MULTILINE)
    assert 'CMD ["virtuoso", "serve"]' in dockerfile
    assert "npm ci" in dockerfile and "static/dist" in dockerfile  # the built pages inside
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignored and "**/node_modules" in ignored


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    if shutil.which("nginx") is None:
        pytest.fail("nginx not found: `make test` installs Debian's nginx")
    stack = LocalStack(Ports.free(), work_dir=tmp_path)
    check_nginx(stack.write_nginx_config())  # raises with nginx's message


def test_nginx_accepts_the_tls_site(tmp_path: Path) -> None:
    stack = LocalStack(Ports.free(), work_dir=tmp_path, tls=self_signed_tls(tmp_path))
    check_nginx(stack.write_nginx_config())


def test_nginx_refuses_a_broken_site(tmp_path: Path) -> None:
    stack = LocalStack(Ports.free(), work_dir=tmp_path)
    main = stack.write_nginx_config()
    site = tmp_path / "virtuoso-proxy.conf"
    site.write_text(site.read_text().replace("proxy_pass", "proxy_passs", 1))
    with pytest.raises(RuntimeError, match="nginx -t failed"):
        check_nginx(main)
