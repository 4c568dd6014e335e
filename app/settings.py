"""Configuration: defaults from ``config/default.yaml``, then a YAML file
(``VIRTUOSO_CONFIG``), then ``VIRTUOSO_*`` environment variables, then command-line
flags. Invalid configuration raises ``ConfigError`` with one message naming the
setting (as the user wrote it) and the valid values.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from app.errors import ConfigError
from app.hosts import parse_allow_list
from app.market.models.confluence_weights import ConfluenceWeights
from app.market.models.symbols import canonical_symbol
from app.market.models.timeframes import TIMEFRAME_SECONDS
from app.market.simulated_universe import SIMULATED_UNIVERSE

DEFAULTS_FILE = Path(__file__).resolve().parent.parent / "config" / "default.yaml"
DEFAULT_CACHE_POLICY = DEFAULTS_FILE.parent / "cache.yaml"
CONFIG_ENV = "VIRTUOSO_CONFIG"

# Settings that can be given as environment variables (and flags of the same name).
ENVIRONMENT: dict[str, str] = {
    "exchange": "VIRTUOSO_EXCHANGE",
    "exchange_url": "VIRTUOSO_EXCHANGE_URL",
    "exchange_ws_url": "VIRTUOSO_EXCHANGE_WS_URL",
    "streams": "VIRTUOSO_STREAMS",
    "stream_silence_seconds": "VIRTUOSO_STREAM_SILENCE_SECONDS",
    "exchange_timeout_seconds": "VIRTUOSO_EXCHANGE_TIMEOUT_SECONDS",
    "exchange_rate_limit_ms": "VIRTUOSO_EXCHANGE_RATE_LIMIT_MS",
    "symbols": "VIRTUOSO_SYMBOLS",
    "refresh_seconds": "VIRTUOSO_REFRESH_SECONDS",
    "memcached_url": "VIRTUOSO_MEMCACHED_URL",
    "redis_url": "VIRTUOSO_REDIS_URL",
    "memcached_timeout_seconds": "VIRTUOSO_MEMCACHED_TIMEOUT_SECONDS",
    "redis_timeout_seconds": "VIRTUOSO_REDIS_TIMEOUT_SECONDS",
    "cache_policy": "VIRTUOSO_CACHE_POLICY",
    "rate_limits": "VIRTUOSO_RATE_LIMITS",
    "l1_max_mb": "VIRTUOSO_L1_MAX_MB",
    "admin_token": "VIRTUOSO_ADMIN_TOKEN",
    "api_token": "VIRTUOSO_API_TOKEN",
    "data_dir": "VIRTUOSO_DATA_DIR",
    "secret_key": "VIRTUOSO_SECRET_KEY",
    "replica_id": "VIRTUOSO_REPLICA_ID",
    "bind": "VIRTUOSO_BIND",
    "seed": "VIRTUOSO_SEED",
    "trusted_proxy_hops": "VIRTUOSO_TRUSTED_PROXY_HOPS",
    "optimizations_off": "VIRTUOSO_OPTIMIZATIONS_OFF",
    "monitoring_bind": "VIRTUOSO_MONITORING_BIND",
    "collector_monitoring_bind": "VIRTUOSO_COLLECTOR_MONITORING_BIND",
    "allowed_origins": "VIRTUOSO_ALLOWED_ORIGINS",
    "webhook_allow": "VIRTUOSO_WEBHOOK_ALLOW",
    "public_details": "VIRTUOSO_PUBLIC_DETAILS",
    "collector": "VIRTUOSO_COLLECTOR",
    "collector_lease_seconds": "VIRTUOSO_COLLECTOR_LEASE_SECONDS",
    "collector_silence_seconds": "VIRTUOSO_COLLECTOR_SILENCE_SECONDS",
}

# Secrets: never shown in an error message, a log line or an endpoint.
SECRET_SETTINGS = frozenset({"admin_token", "api_token", "secret_key"})

# Tokens that are placeholders, not secrets: the examples' wording, and any value made
# of one repeated character. A value containing one of these words is refused.
PLACEHOLDER_WORDS = (
    "replace",
    "changeme",
    "change-me",
    "example",
    "placeholder",
    "your-",
    "password",
)
# What a bearer token can hold and still be sent: visible ASCII, no blanks (RFC 6750 §2.1
# b68token is narrower; this refuses only what could never authenticate).
_TOKEN_CHARACTERS = re.compile(r"[\x21-\x7e]+")
# userinfo in a URL-looking value: hidden when a configuration error shows the value.
_USERINFO = re.compile(r"(//)[^/@\s]*@")

# What the benchmark's ablation switches off, one at a time (all on in production):
# l1 the in-process tier; single_flight one computation per key however many ask;
# serialize_once views stored as bytes (off: decoded and re-encoded per request);
# compression zstd for the mobile view; refresh_ahead the scheduled pipeline refresh
# and early (XFetch) refresh of on-demand keys (off: views recomputed when read expired).
OPTIMIZATIONS = ("l1", "single_flight", "serialize_once", "compression", "refresh_ahead")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ConfluenceSettings(_Section):
    weights: dict[str, float]
    timeframes: dict[str, float]
    long_threshold: float
    short_threshold: float

    @model_validator(mode="after")
    def _valid_weights(self) -> ConfluenceSettings:
        self.as_weights()  # ConfluenceWeights holds the rules; its ValueError names the problem
        return self

    def as_weights(self) -> ConfluenceWeights:
        return ConfluenceWeights(
            components=self.weights,
            timeframes=self.timeframes,
            long_threshold=self.long_threshold,
            short_threshold=self.short_threshold,
        )


class MoversSettings(_Section):
    count: int = Field(ge=1, le=50)
    min_quote_volume: float = Field(ge=0)


class MobileSettings(_Section):
    symbols: int = Field(ge=1, le=50)


class Settings(_Section):
    exchange: str
    exchange_url: str | None
    exchange_timeout_seconds: float = Field(gt=0, le=120)
    # ccxt's rateLimit (ms per unit of request cost); None: ccxt's value for the exchange.
    exchange_rate_limit_ms: float | None = Field(default=None, ge=1, le=1000)
    # The exchange's public WebSocket base URL override, as exchange_url is for REST
    # (ws://127.0.0.1:9000 + the exchange's own paths such as /v5/public/spot).
    exchange_ws_url: str | None = None
    # Read the exchange's public streams (ccxt.pro) and poll REST only for history, the
    # markets and as the fallback; "off" polls REST on the refresh cadence alone.
    streams: Literal["on", "off"] = "on"
    # A stream that delivers nothing for this long is not live: REST takes over.
    stream_silence_seconds: float = Field(default=10, ge=0.5, le=600)
    # Live updates of one (channel, symbol) per second at most (ticks are coalesced).
    live_updates_per_second: float = Field(default=4, ge=0.1, le=50)
    # Derivatives (funding, open interest, long/short ratio) are read this often.
    derivatives_refresh_seconds: float = Field(default=60, ge=5, le=3600)
    seed: int
    bind: str
    refresh_seconds: float = Field(ge=1, le=3600)
    symbols: tuple[str, ...] = Field(min_length=1, max_length=200)
    candle_limits: dict[str, int]
    order_book_depth: int = Field(ge=1, le=200)
    confluence: ConfluenceSettings
    movers: MoversSettings
    mobile: MobileSettings
    memcached_url: str | None = None
    redis_url: str | None = None
    # A tier call slower than this counts as a failure (a miss, and toward its breaker).
    memcached_timeout_seconds: float = Field(ge=0.001, le=10)
    redis_timeout_seconds: float = Field(ge=0.001, le=10)
    cache_policy: str | None = None
    rate_limits: str | None = None
    l1_max_mb: float = Field(default=64, gt=0, le=4096)
    admin_token: str | None = None
    api_token: str | None = None
    data_dir: str = "data"
    secret_key: str | None = None
    replica_id: str | None = None
    # Behind this many proxies of our own, the client is the address the nearest one
    # appended to X-Forwarded-For (overrides the rate-limit file); None: the file says.
    trusted_proxy_hops: int | None = Field(default=None, ge=0, le=10)
    optimizations_off: tuple[str, ...] = ()
    # A second listener (host:port) for /metrics, the detailed /health and the cache
    # operator endpoints; when set, the public listener stops serving them.
    monitoring_bind: str | None = None
    # Where a server's collector child serves its /metrics (exchange calls, refreshes);
    # none by default (``virtuoso collect`` itself takes ``monitoring_bind``).
    collector_monitoring_bind: str | None = None
    # Origins allowed to open /ws besides the page's own (scheme://host[:port]).
    allowed_origins: tuple[str, ...] = ()
    # Internal webhook destinations an operator allows (host names, IP addresses or
    # CIDR networks); every other non-global address is refused.
    webhook_allow: tuple[str, ...] = ()
    # Backend addresses, versions and breaker details in /health for anyone (off: only
    # with the admin token or on the monitoring listener).
    public_details: bool = False
    # Where the collector runs for ``virtuoso serve``: in this process (embedded); as a
    # child process of each server (child: over Redis when configured, several servers'
    # children electing one leader, else over a local channel); or as a separate
    # ``virtuoso collect`` service (external, through Redis).
    collector: Literal["embedded", "child", "external"] = "child"
    # The collectors' leader lease in Redis: how long standbys wait for a leader that died
    # without resigning (it renews every third of it and stops acting a fifth before it
    # runs out, so a leader whose event loop stalls for about half of it loses the lead).
    collector_lease_seconds: float = Field(default=5, ge=1, le=300)
    # A server counts its collector gone (readiness degraded, views marked stale) when
    # its last status report is older than this. Reports come every second and a server
    # reads them every second: much below 3 s a busy machine's late report reads as gone.
    collector_silence_seconds: float = Field(default=5, ge=2, le=600)

    def optimized(self, name: str) -> bool:
        """Whether optimisation ``name`` (one of OPTIMIZATIONS) is on."""
        return name not in self.optimizations_off

    @field_validator("optimizations_off", mode="before")
    @classmethod
    def _optimization_list(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        names = tuple(str(item).strip() for item in items if str(item).strip())
        unknown = [name for name in names if name not in OPTIMIZATIONS]
        if unknown:
            raise ValueError(f"unknown {', '.join(unknown)}; known: {', '.join(OPTIMIZATIONS)}")
        return names

    @field_validator("memcached_url")
    @classmethod
    def _memcached_servers(cls, url: str | None) -> str | None:
        if not url:
            return None
        for server in url.split(","):
            try:
                parse_bind(server.strip().removeprefix("memcached://"))
            except ValueError:
                raise ValueError(
                    "must list memcached servers as host:port[,host:port…], e.g. 127.0.0.1:11211"
                ) from None
        return url

    @field_validator("redis_url")
    @classmethod
    def _redis(cls, url: str | None) -> str | None:
        if not url:
            return None
        if not url.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must be a redis://, rediss:// or unix:// URL")
        return url

    @field_validator("admin_token", "api_token", "secret_key")
    @classmethod
    def _long_secret(cls, secret: str | None) -> str | None:
        if not secret:
            return None
        if len(secret) < 16:
            raise ValueError("must be at least 16 characters")
        lowered = secret.lower()
        periodic = (secret + secret).find(secret, 1) < len(secret)  # "abcabcabc…"
        placeholder = any(word in lowered for word in PLACEHOLDER_WORDS)
        if len(set(secret)) < 6 or periodic or placeholder:
            raise ValueError(
                "is a placeholder, not a secret: set a random value "
                "(e.g. python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        return secret

    @field_validator("admin_token", "api_token")
    @classmethod
    def _sendable_token(cls, token: str | None) -> str | None:
        if token is not None and not _TOKEN_CHARACTERS.fullmatch(token):
            raise ValueError(
                "must be visible ASCII without blanks: a client could never send it "
                "in Authorization: Bearer <token>"
            )
        return token

    @model_validator(mode="after")
    def _distinct_tokens(self) -> Settings:
        if self.api_token is not None and self.api_token == self.admin_token:
            raise ValueError(
                "VIRTUOSO_API_TOKEN and VIRTUOSO_ADMIN_TOKEN must differ: an alert "
                "writer must not be an operator"
            )
        return self

    @model_validator(mode="after")
    def _external_collector_needs_redis(self) -> Settings:
        if self.collector == "external" and self.redis_url is None:
            raise ValueError(
                "VIRTUOSO_COLLECTOR=external needs VIRTUOSO_REDIS_URL: the servers and the "
                "collector meet in Redis"
            )
        return self

    @field_validator("monitoring_bind", "collector_monitoring_bind")
    @classmethod
    def _optional_bind(cls, bind: str | None) -> str | None:
        if not bind:
            return None
        parse_bind(bind)
        return bind

    @field_validator("allowed_origins", mode="before")
    @classmethod
    def _origins(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        origins = []
        for item in (str(i).strip() for i in items):
            if not item:
                continue
            parts = urlsplit(item)
            bare = parts.path in ("", "/") and not (parts.query or parts.fragment)
            try:
                port_ok = parts.port is None or parts.port > 0
            except ValueError:
                port_ok = False
            userinfo = parts.username is not None or parts.password is not None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                bare = False
            if not (bare and port_ok) or userinfo:
                shown = _USERINFO.sub(r"\1…@", item)
                raise ValueError(
                    f"{shown!r} is not an origin: give "
                    "scheme://host[:port] (no user, path or query), e.g. https://dash.example.com"
                )
            origins.append(item.lower().rstrip("/"))
        return tuple(origins)

    @field_validator("webhook_allow", mode="before")
    @classmethod
    def _allow_list(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value or ())
        entries = tuple(str(i).strip().lower() for i in items if str(i).strip())
        try:
            _, networks = parse_allow_list(entries)
        except ValueError as error:  # its message starts with the variable: named already
            raise ValueError(_USERINFO.sub(r"\1…@", str(error).partition(": ")[2])) from None
        for network in networks:
            if network.prefixlen < (8 if network.version == 4 else 7):
                raise ValueError(
                    f"{network} is too broad: list the internal hosts or networks to allow "
                    "(at most a /8, or a /7 for IPv6 such as fc00::/7)"
                )
        return entries

    @property
    def cache_policy_path(self) -> Path:
        return Path(self.cache_policy) if self.cache_policy else DEFAULT_CACHE_POLICY

    @property
    def memcached_servers(self) -> list[str]:
        if not self.memcached_url:
            return []
        return [s.strip().removeprefix("memcached://") for s in self.memcached_url.split(",")]

    @field_validator("exchange")
    @classmethod
    def _known_exchange(cls, exchange: str) -> str:
        exchange = exchange.strip().lower()
        if exchange == "simulated":
            return exchange
        import ccxt  # imported only when a real exchange is asked for

        if exchange not in ccxt.exchanges:
            raise ValueError(
                f"must be 'simulated' or a ccxt exchange id: {', '.join(ccxt.exchanges)}"
            )
        return exchange

    @field_validator("exchange_url")
    @classmethod
    def _http_url(cls, url: str | None) -> str | None:
        if url in (None, ""):
            return None
        if not url.startswith(("http://", "https://")):
            raise ValueError("must be an http:// or https:// URL")
        return url.rstrip("/")

    @field_validator("exchange_ws_url")
    @classmethod
    def _ws_url(cls, url: str | None) -> str | None:
        if url in (None, ""):
            return None
        if not url.startswith(("ws://", "wss://")):
            raise ValueError("must be a ws:// or wss:// URL")
        try:
            parts = urlsplit(url)
            port = parts.port  # ValueError for a port that is not 0–65535 digits
        except ValueError:
            raise ValueError("must be a ws:// or wss:// URL with a valid port") from None
        if not parts.hostname or port == 0:
            raise ValueError("must be a ws:// or wss:// URL naming a host (and port 1–65535)")
        return url.rstrip("/")

    @field_validator("streams", mode="before")
    @classmethod
    def _on_off(cls, value: Any) -> Any:
        if isinstance(value, bool):  # YAML reads a bare on/off as a boolean
            return "on" if value else "off"
        return value.strip().lower() if isinstance(value, str) else value

    @field_validator("bind")
    @classmethod
    def _host_port(cls, bind: str) -> str:
        parse_bind(bind)
        return bind

    @field_validator("symbols", mode="before")
    @classmethod
    def _symbol_list(cls, value: Any) -> tuple[str, ...]:
        items = value.split(",") if isinstance(value, str) else list(value)
        symbols = [canonical_symbol(str(item)) for item in items if str(item).strip()]
        if len(set(symbols)) != len(symbols):
            raise ValueError("lists a symbol twice")
        return tuple(symbols)

    @field_validator("candle_limits")
    @classmethod
    def _limits(cls, limits: dict[str, int]) -> dict[str, int]:
        missing = set(TIMEFRAME_SECONDS) - set(limits)
        unknown = set(limits) - set(TIMEFRAME_SECONDS)
        if missing or unknown:
            raise ValueError(f"needs exactly the timeframes {', '.join(TIMEFRAME_SECONDS)}")
        if any(not 2 <= n <= 1000 for n in limits.values()):
            raise ValueError("each limit must be between 2 and 1000 candles")
        return limits

    @field_validator("symbols")
    @classmethod
    def _simulated_symbols(cls, symbols: tuple[str, ...], info: ValidationInfo) -> tuple[str, ...]:
        if info.data.get("exchange") == "simulated":
            listed = [asset.symbol for asset in SIMULATED_UNIVERSE]
            unknown = [s for s in symbols if s not in listed]
            if unknown:
                raise ValueError(
                    f"{', '.join(unknown)} not in the simulated market; valid: {', '.join(listed)}"
                )
        return symbols

    @property
    def host(self) -> str:
        return parse_bind(self.bind)[0]

    @property
    def port(self) -> int:
        return parse_bind(self.bind)[1]


def parse_bind(bind: str) -> tuple[str, int]:
    """``host:port`` or ``[ipv6]:port`` → (host, port)."""
    host, sep, port = bind.strip().rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("must be host:port with a port from 1 to 65535, e.g. 127.0.0.1:8003")
    return host, int(port)


def load_settings(
    flags: Mapping[str, Any] | None = None, environ: Mapping[str, str] | None = None
) -> Settings:
    """Merge the layers and validate; raises ConfigError naming the bad setting."""
    environ = os.environ if environ is None else environ
    flags = {k: v for k, v in (flags or {}).items() if v is not None}
    values, origin = _read_yaml(DEFAULTS_FILE)
    config_path = flags.pop("config", None) or environ.get(CONFIG_ENV)
    if config_path:
        extra, extra_origin = _read_yaml(Path(config_path))
        values |= extra
        origin |= extra_origin
    for field, variable in ENVIRONMENT.items():
        if environ.get(variable, "") != "":
            values[field], origin[field] = environ[variable], variable
    for field, value in flags.items():
        values[field], origin[field] = value, f"--{field.replace('_', '-')}"
    try:
        return Settings.model_validate(values)
    except ValidationError as error:
        raise ConfigError(_describe(error, values, origin)) from None


def _read_yaml(path: Path) -> tuple[dict[str, Any], dict[str, str]]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as error:
        raise ConfigError(f"invalid configuration: cannot read {path}: {error.strerror}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"invalid configuration: {path} is not valid YAML: {error}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"invalid configuration: {path} must hold a mapping of settings")
    return data, {key: f"{path.name}: {key}" for key in data}


def _describe(error: ValidationError, values: Mapping[str, Any], origin: Mapping[str, str]) -> str:
    first = error.errors()[0]
    location = [str(part) for part in first["loc"]]
    top = location[0] if location else ""
    where = origin.get(top, top)
    if len(location) > 1:
        where += " → " + ".".join(location[1:])
    if first["type"] == "extra_forbidden":
        valid = ", ".join(Settings.model_fields)
        return f"invalid configuration: unknown setting {where}; valid: {valid}"
    message = str(first["msg"]).removeprefix("Value error, ")
    if not top:  # a rule across settings: its message names them
        return f"invalid configuration: {message}"
    shown = values.get(top, "")
    if isinstance(shown, str):  # a URL's userinfo may hold a password
        shown = _USERINFO.sub(r"\1…@", shown)
    if top in SECRET_SETTINGS:  # never echo a secret, not even a bad one
        return f"invalid configuration: {where} (value hidden): {message}"
    return f"invalid configuration: {where}={shown!r}: {message}"
