"""The deployment files: docker-compose.yml valid (Debian's docker-compose validates
without an engine), every mounted file present, images pinned, healthchecks wired,
every variable the app reads documented, the image built as the README says, and
the nginx site accepted by `nginx -t`."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from app.settings import CONFIG_ENV, ENVIRONMENT
from tools.local_stack import LocalStack, Ports, check_nginx

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yml"
ENV_EXAMPLE = ROOT / ".env.example"
README = (ROOT / "README.md").read_text()
# Images without a shell or wget: nothing to run a healthcheck command with.
NO_HEALTHCHECK = {"otel-collector"}
OTEL_VARIABLES = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME")


def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def docker_compose(*args: str, env_file: Path) -> subprocess.CompletedProcess:
    binary = shutil.which("docker-compose")
    if binary is None:
        pytest.fail("docker-compose not found: `make test` installs Debian's docker-compose")
    command = [binary, "--env-file", str(env_file), "-f", str(COMPOSE), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT)


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
    for name, service in compose()["services"].items():
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name} mounts missing {source}"
    assert (ROOT / compose()["services"]["app"]["build"] / "Dockerfile").exists()


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
    assert "--appendonly" in services["redis"]["command"]
    assert "--maxmemory" in services["redis"]["command"]
    assert "-m" in services["memcached"]["command"]
    assert "--enable-feature=exemplar-storage" in services["prometheus"]["command"]


def test_every_variable_the_app_reads_is_documented() -> None:
    variables = {*ENVIRONMENT.values(), CONFIG_ENV, *OTEL_VARIABLES}
    undocumented = sorted(v for v in variables if f"`{v}`" not in README)
    assert not undocumented, f"not in the README's configuration table: {undocumented}"
    app_env = set(compose()["services"]["app"]["environment"])
    assert app_env <= variables, (
        f"compose sets variables the app does not read: {app_env - variables}"
    )
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text()))
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


def test_nginx_refuses_a_broken_site(tmp_path: Path) -> None:
    stack = LocalStack(Ports.free(), work_dir=tmp_path)
    main = stack.write_nginx_config()
    site = tmp_path / "virtuoso.conf"
    site.write_text(site.read_text().replace("proxy_pass", "proxy_passs", 1))
    with pytest.raises(RuntimeError, match="nginx -t failed"):
        check_nginx(main)
