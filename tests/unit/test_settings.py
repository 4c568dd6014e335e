"""Configuration layers and the one-line errors that name the bad setting."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from app.errors import ConfigError
from app.main.sections import cache_config
from app.settings import load_settings


def test_defaults_are_the_embedded_simulated_market() -> None:
    settings = load_settings(environ={})
    assert settings.exchange == "simulated"
    assert (settings.host, settings.port) == ("127.0.0.1", 8003)
    assert len(settings.symbols) == 25 and settings.symbols[0] == "BTCUSDT"
    assert settings.confluence.weights["orderflow"] == pytest.approx(0.30)
    assert settings.confluence.timeframes == {"1m": 0.4, "5m": 0.3, "30m": 0.2, "4h": 0.1}


def test_layers_flags_over_environment_over_yaml(tmp_path: Path) -> None:
    config = tmp_path / "virtuoso.yaml"
    config.write_text("refresh_seconds: 30\nseed: 11\nmovers: {count: 3, min_quote_volume: 5}\n")
    environ = {
        "VIRTUOSO_CONFIG": str(config),
        "VIRTUOSO_SEED": "12",
        "VIRTUOSO_SYMBOLS": "btc/usdt, ETH-USDT ,SOLUSDT",
    }
    settings = load_settings({"seed": "13"}, environ=environ)
    assert settings.refresh_seconds == 30
    assert settings.seed == 13
    assert settings.symbols == ("BTCUSDT", "ETHUSDT", "SOLUSDT")
    assert settings.movers.count == 3


def test_tier_timeouts_reach_the_cache_config() -> None:
    default = cache_config(load_settings(environ={}))
    assert (default.memcached_timeout_seconds, default.redis_timeout_seconds) == (0.25, 0.5)
    environ = {"VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS": "1.5", "VIRTUOSO_REDIS_TIMEOUT_SECONDS": "2"}
    config = cache_config(load_settings(environ=environ))
    assert (config.memcached_timeout_seconds, config.redis_timeout_seconds) == (1.5, 2.0)


def test_the_collector_timings_reach_the_lease_and_the_servers_link() -> None:
    """The leader lease of ``virtuoso collect`` and the silence after which a server
    counts its collector gone: 5 s each by default, else as configured."""
    from app.main.collector_process import build_collector
    from app.main.server_app import create_server_app
    from app.state import EXTENSION

    redis = {"VIRTUOSO_REDIS_URL": "redis://127.0.0.1:9/0", "VIRTUOSO_COLLECTOR": "external"}
    default = load_settings(environ=redis)
    assert (default.collector_lease_seconds, default.collector_silence_seconds) == (5, 5)
    configured = load_settings(
        environ=redis
        | {"VIRTUOSO_COLLECTOR_LEASE_SECONDS": "3", "VIRTUOSO_COLLECTOR_SILENCE_SECONDS": "2.5"}
    )
    for settings, lease, silence in ((default, 5, 5), (configured, 3, 2.5)):
        collector = build_collector(settings)  # nothing connects before start
        assert collector.lease is not None and collector.lease.ttl_seconds == lease
        link = create_server_app(settings).extensions[EXTENSION].collector
        assert link.timings.gone_after_seconds == silence


def test_a_real_exchange_with_a_url_override() -> None:
    settings = load_settings(
        environ={
            "VIRTUOSO_EXCHANGE": "Bybit",
            "VIRTUOSO_EXCHANGE_URL": "http://127.0.0.1:9/",
            "VIRTUOSO_SYMBOLS": "BTCUSDT,NEWUSDT",
        }
    )
    assert settings.exchange == "bybit"
    assert settings.exchange_url == "http://127.0.0.1:9"
    assert settings.symbols == ("BTCUSDT", "NEWUSDT")  # checked against the listing at start


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"VIRTUOSO_EXCHANGE": "nope"}, "VIRTUOSO_EXCHANGE='nope': must be 'simulated' or a ccxt"),
        ({"VIRTUOSO_BIND": "8003"}, "VIRTUOSO_BIND='8003': must be host:port"),
        ({"VIRTUOSO_BIND": "127.0.0.1:70000"}, "port from 1 to 65535"),
        ({"VIRTUOSO_REFRESH_SECONDS": "fast"}, "VIRTUOSO_REFRESH_SECONDS='fast'"),
        ({"VIRTUOSO_REFRESH_SECONDS": "0"}, "greater than or equal to 1"),
        (
            {"VIRTUOSO_SYMBOLS": "BTCUSDT,FOOUSDT"},
            "FOOUSDT not in the simulated market; valid: BTC",
        ),
        ({"VIRTUOSO_SYMBOLS": "BTCUSDT,btcusdt"}, "lists a symbol twice"),
        ({"VIRTUOSO_EXCHANGE_URL": "ftp://host"}, "must be an http:// or https:// URL"),
        ({"VIRTUOSO_EXCHANGE_WS_URL": "http://host"}, "must be a ws:// or wss:// URL"),
        ({"VIRTUOSO_EXCHANGE_WS_URL": "ws://"}, "VIRTUOSO_EXCHANGE_WS_URL='ws://': must be"),
        ({"VIRTUOSO_EXCHANGE_WS_URL": "ws://h:notaport"}, "with a valid port"),
        ({"VIRTUOSO_EXCHANGE_WS_URL": "ws://127.0.0.1:99999"}, "with a valid port"),
        ({"VIRTUOSO_STREAMS": "maybe"}, "VIRTUOSO_STREAMS='maybe'"),
        ({"VIRTUOSO_STREAM_SILENCE_SECONDS": "0.1"}, "greater than or equal to 0.5"),
        ({"VIRTUOSO_CONFIG": "/nonexistent/virtuoso.yaml"}, "cannot read /nonexistent"),
        ({"VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS": "0"}, "VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS='0'"),
        ({"VIRTUOSO_REDIS_TIMEOUT_SECONDS": "11"}, "less than or equal to 10"),
        ({"VIRTUOSO_EXCHANGE_RATE_LIMIT_MS": "0"}, "VIRTUOSO_EXCHANGE_RATE_LIMIT_MS='0'"),
        ({"VIRTUOSO_EXCHANGE_RATE_LIMIT_MS": "60000"}, "less than or equal to 1000"),
        ({"VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS": "1e-300"}, "greater than or equal to 0.001"),
        ({"VIRTUOSO_REDIS_TIMEOUT_SECONDS": "soon"}, "VIRTUOSO_REDIS_TIMEOUT_SECONDS='soon'"),
        ({"VIRTUOSO_COLLECTOR_LEASE_SECONDS": "0.5"}, "greater than or equal to 1"),
        ({"VIRTUOSO_COLLECTOR_LEASE_SECONDS": "301"}, "less than or equal to 300"),
        ({"VIRTUOSO_COLLECTOR_SILENCE_SECONDS": "1"}, "greater than or equal to 2"),
        ({"VIRTUOSO_COLLECTOR_SILENCE_SECONDS": "never"}, "VIRTUOSO_COLLECTOR_SILENCE_SECONDS="),
    ],
)
def test_invalid_settings_name_the_setting(environ: dict[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ)
    message = str(raised.value)
    assert message.startswith("invalid configuration: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("refesh_seconds: 5\n", "unknown setting virtuoso.yaml: refesh_seconds"),
        (
            "confluence: {weights: {magic: 1}, timeframes: {1m: 1}, long_threshold: 70, "
            "short_threshold: 35}\n",
            "unknown component(s): magic; valid: technical",
        ),
        (
            "confluence: {weights: {volume: 1}, timeframes: {1m: 1}, long_threshold: 30, "
            "short_threshold: 35}\n",
            "need 0 <= short < long threshold <= 100",
        ),
        (
            "confluence: {weights: {volume: -1}, timeframes: {1m: 1}, long_threshold: 70, "
            "short_threshold: 35}\n",
            "component weights must be finite and non-negative",
        ),
        ("candle_limits: {1m: 5}\n", "needs exactly the timeframes 1m, 5m"),
        ("symbols: [\n", "is not valid YAML"),
        ("- a list\n", "must hold a mapping of settings"),
    ],
)
def test_invalid_yaml_names_the_setting(tmp_path: Path, yaml_text: str, expected: str) -> None:
    config = tmp_path / "virtuoso.yaml"
    config.write_text(yaml_text)
    with pytest.raises(ConfigError, match="invalid configuration") as raised:
        load_settings(environ={"VIRTUOSO_CONFIG": str(config)})
    assert expected in str(raised.value)


def test_cache_policy_must_outlast_the_refresh_interval() -> None:
    from app.cache.policy import load_policy
    from app.services.catalogue import check_policy_fits_refresh

    policy = load_policy()
    check_policy_fits_refresh(policy, 10)  # the shipped defaults fit
    with pytest.raises(ConfigError, match=r"dash:desktop min_ttl 15 s is under 1.5 × refresh"):
        check_policy_fits_refresh(policy, 11)


@pytest.mark.parametrize(
    ("family", "owner", "message"),
    [
        ("candles", "pipeline", "cache family candles must have owner on_demand (view candles)"),
        ("beta", "on_demand", "cache family beta must have owner pipeline (view beta)"),
        (
            "dash:desktop",
            "on_demand",
            "dash:desktop must have owner pipeline (view dashboard:desktop), not on_demand",
        ),
    ],
)
def test_cache_policy_owners_must_match_the_view_catalogue(
    tmp_path: Path, family: str, owner: str, message: str
) -> None:
    """A snapshot view in an on-demand family would never be refreshed by the pipeline;
    an on-demand view in a pipeline family would run a whole refresh per miss."""
    from app.cache.policy import POLICY_FILE, load_policy
    from app.services.catalogue import check_policy_fits_refresh

    data = yaml.safe_load(POLICY_FILE.read_text())
    data["families"][family]["owner"] = owner
    (tmp_path / "cache.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match=re.escape(message)):
        check_policy_fits_refresh(load_policy(tmp_path / "cache.yaml"), 10)


ROOT = Path(__file__).resolve().parents[2]


def env_example() -> dict[str, str]:
    """The variables .env.example sets (KEY=value lines)."""
    pairs = {}
    for line in (ROOT / ".env.example").read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            pairs[key.strip()] = value.strip()
    return pairs


@pytest.mark.parametrize("variable", ["VIRTUOSO_API_TOKEN", "VIRTUOSO_ADMIN_TOKEN"])
@pytest.mark.parametrize(
    "token",
    [
        "short-token",  # under 16 characters
        "replace-with-an-api-token-00000",  # the example's wording
        "CHANGEME-CHANGEME-2024",
        "my-example-token-1234",
        "aaaaaaaaaaaaaaaaaaaaaaaa",  # one repeated character
        "abababababababababab",  # too few distinct characters
    ],
)
def test_placeholder_and_short_tokens_are_refused_without_echoing_them(
    variable: str, token: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ={variable: token})
    message = str(raised.value)
    assert message.startswith(f"invalid configuration: {variable} (value hidden): ")
    assert token not in message and "\n" not in message


def test_the_example_environment_file_does_not_start_the_service() -> None:
    """Copying .env.example without setting the secrets must not give a service whose
    write endpoints open to the published placeholders."""
    example = env_example()
    for variable in ("VIRTUOSO_SECRET_KEY", "VIRTUOSO_ADMIN_TOKEN", "VIRTUOSO_API_TOKEN"):
        with pytest.raises(ConfigError, match=f"{variable} .value hidden.: is a placeholder"):
            load_settings(environ={variable: example[variable]})


def test_real_random_tokens_are_accepted() -> None:
    settings = load_settings(
        environ={
            "VIRTUOSO_API_TOKEN": "k3J9x_Qm2vT8pL0wZr5",
            "VIRTUOSO_ADMIN_TOKEN": "0f3a9c2e51b84d06e7aa",
            "VIRTUOSO_SECRET_KEY": "Zx81-nB4q0pRt7Lm2Ws9",
        }
    )
    assert settings.api_token == "k3J9x_Qm2vT8pL0wZr5"


def test_a_placeholder_token_stops_virtuoso_serve_with_one_line(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    environ = os.environ | {"VIRTUOSO_API_TOKEN": env_example()["VIRTUOSO_API_TOKEN"]}
    done = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--bind", "127.0.0.1:1"],
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "VIRTUOSO_API_TOKEN (value hidden): is a placeholder" in lines[0]
    assert env_example()["VIRTUOSO_API_TOKEN"] not in done.stderr


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"VIRTUOSO_ALLOWED_ORIGINS": "dash.example.com"}, "is not an origin"),
        ({"VIRTUOSO_ALLOWED_ORIGINS": "https://a.example/path"}, "is not an origin"),
        ({"VIRTUOSO_MONITORING_BIND": "8001"}, "must be host:port"),
        ({"VIRTUOSO_WEBHOOK_ALLOW": "10.0.0.0/33"}, "'10.0.0.0/33' is neither a host name"),
        ({"VIRTUOSO_WEBHOOK_ALLOW": "alertmanager,http://x"}, "'http://x' is neither"),
    ],
)
def test_invalid_hardening_settings_name_the_setting(
    environ: dict[str, str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_settings(environ=environ)


def test_allowed_origins_are_normalised() -> None:
    settings = load_settings(
        environ={"VIRTUOSO_ALLOWED_ORIGINS": " https://Dash.Example.com/ ,http://127.0.0.1:9000"}
    )
    assert settings.allowed_origins == ("https://dash.example.com", "http://127.0.0.1:9000")


@pytest.mark.parametrize(
    ("environ", "expected", "never_shown"),
    [
        (
            {"VIRTUOSO_ALLOWED_ORIGINS": "https://u:SECRETPW@dash.example.com"},
            "is not an origin",
            "SECRETPW",
        ),
        ({"VIRTUOSO_ALLOWED_ORIGINS": "https://dash.example.com:99999"}, "is not an origin", ""),
        ({"VIRTUOSO_ALLOWED_ORIGINS": "https://dash.example.com:abc"}, "is not an origin", ""),
        (
            {"VIRTUOSO_WEBHOOK_ALLOW": "https://user:S3CRETPASS@hooks.example/x"},
            "is neither a host name",
            "S3CRETPASS",
        ),
        ({"VIRTUOSO_WEBHOOK_ALLOW": "0.0.0.0/0"}, "0.0.0.0/0 is too broad", ""),
        ({"VIRTUOSO_WEBHOOK_ALLOW": "::/0"}, "::/0 is too broad", ""),
        ({"VIRTUOSO_EXCHANGE_URL": "ftp://me:hunter2@x"}, "must be an http", "hunter2"),
        (
            {
                "VIRTUOSO_API_TOKEN": "k3J9x_Qm2vT8pL0wZr5",
                "VIRTUOSO_ADMIN_TOKEN": "k3J9x_Qm2vT8pL0wZr5",
            },
            "VIRTUOSO_API_TOKEN and VIRTUOSO_ADMIN_TOKEN must differ",
            "k3J9x",
        ),
        ({"VIRTUOSO_API_TOKEN": "password1234567890"}, "is a placeholder", "password1"),
        ({"VIRTUOSO_API_TOKEN": "abcdefabcdefabcdefabcdef"}, "is a placeholder", "abcdefabc"),
        ({"VIRTUOSO_ADMIN_TOKEN": "tok en with spaces 123"}, "visible ASCII", "spaces"),
        ({"VIRTUOSO_ADMIN_TOKEN": "k3J9x_Qm2vT8pL0wZr5\u00e9"}, "visible ASCII", "k3J9x"),
    ],
)
def test_bad_values_are_named_without_showing_secrets(
    environ: dict[str, str], expected: str, never_shown: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings(environ=environ)
    message = str(raised.value)
    assert message.startswith("invalid configuration: ") and "\n" not in message
    assert expected in message
    assert not never_shown or never_shown not in message


def test_internal_networks_can_be_allowed() -> None:
    allowed = "alertmanager,10.0.0.0/8,172.16.0.0/12,fc00::/7,10.0.0.7"
    settings = load_settings(environ={"VIRTUOSO_WEBHOOK_ALLOW": allowed})
    assert settings.webhook_allow == tuple(allowed.split(","))
