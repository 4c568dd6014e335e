"""Configuration layers and the one-line errors that name the bad setting."""

from __future__ import annotations

from pathlib import Path

import pytest

from app.settings import ConfigError, load_settings


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
        ({"VIRTUOSO_CONFIG": "/nonexistent/virtuoso.yaml"}, "cannot read /nonexistent"),
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
    from app.web.app import check_policy_fits_refresh

    policy = load_policy()
    check_policy_fits_refresh(policy, 10)  # the shipped defaults fit
    with pytest.raises(ConfigError, match=r"dash:desktop min_ttl 15 s is under 1.5 × refresh"):
        check_policy_fits_refresh(policy, 11)
