"""The view catalogue: every view the service stores and serves, named once.

Each entry says what a view is called, which cache family holds it, which route
serves it, whether it is hot (computed and stored before the replica is ready, and
by ``POST /api/cache/warm``) and which model documents its response. The routes
(``app.web.api``), readiness (``app.web.health``), warming (``app.services.warming``),
the snapshot-age metric and the view → key mapping (``app.services.view_cache``)
all read this table; none repeats a view name.

A parametrised view (``confluence``, ``candles``) has one name per symbol and
timeframe: ``confluence:<SYMBOL>:<timeframe>``, its parts ``(SYMBOL, timeframe)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from app.backends.keyspace import DEFAULT_NAMESPACE
from app.cache.keys import make_key
from app.cache.policy import CachePolicy
from app.errors import ConfigError
from app.services import view_models


@dataclass(frozen=True, slots=True)
class ViewSpec:
    """One view. ``name``: the view name (a parametrised view's prefix); ``family``: its
    cache family (``config/cache.yaml``); ``route``: the Quart rule that serves it
    (``<symbol>`` for a parametrised one); ``hot``: warmed before readiness and on
    demand; ``model``: its response model; ``parametrised``: one view per
    ``(SYMBOL, timeframe)``; ``on_demand``: computed for its key alone when read and
    missing (candles), else published by every snapshot (a miss runs a refresh). The
    cache policy's ``owner`` of its family must agree (``on_demand`` / ``pipeline``)."""

    name: str
    family: str
    route: str
    hot: bool
    model: type[BaseModel]
    parametrised: bool = False
    on_demand: bool = False

    @property
    def owner(self) -> str:
        """The cache policy ``owner`` its family must have."""
        return "on_demand" if self.on_demand else "pipeline"

    def named(self, symbol: str, timeframe: str) -> str:
        """The name of a parametrised view's instance: ``confluence:BTCUSDT:5m``."""
        if not self.parametrised:
            raise ValueError(f"view {self.name!r} takes no parts")
        return f"{self.name}:{symbol}:{timeframe}"


DESKTOP = ViewSpec(
    "dashboard:desktop", "dash:desktop", "/api/dashboard/data", True, view_models.DesktopDashboard
)
MOBILE = ViewSpec(
    "dashboard:mobile", "dash:mobile", "/api/dashboard/mobile", True, view_models.MobileDashboard
)
DASHBOARD_OVERVIEW = ViewSpec(
    "dashboard:overview",
    "dash:overview",
    "/api/dashboard/overview",
    True,
    view_models.DashboardOverview,
)
SIGNALS = ViewSpec(
    "dashboard:signals", "signals", "/api/dashboard/signals", True, view_models.SignalsResponse
)
MARKET_OVERVIEW = ViewSpec(
    "market:overview",
    "overview",
    "/api/market/overview",
    True,
    view_models.MarketOverviewResponse,
)
MOVERS = ViewSpec("market:movers", "movers", "/api/market/movers", True, view_models.MoversResponse)
DERIVATIVES = ViewSpec(
    "market:derivatives",
    "derivatives",
    "/api/market/derivatives",
    True,
    view_models.DerivativesResponse,
)
BETA = ViewSpec("beta", "beta", "/api/bitcoin-beta", True, view_models.BetaResponse)
SYMBOLS = ViewSpec("symbols", "symbols", "/api/symbols", True, view_models.SymbolsResponse)
CONFLUENCE = ViewSpec(
    "confluence",
    "confluence",
    "/api/confluence/<symbol>",
    False,
    view_models.ConfluenceResponse,
    parametrised=True,
)
CANDLES = ViewSpec(
    "candles",
    "candles",
    "/api/market/candles/<symbol>",
    False,
    view_models.CandlesResponse,
    parametrised=True,
    on_demand=True,
)

CATALOGUE: tuple[ViewSpec, ...] = (
    DESKTOP,
    MOBILE,
    DASHBOARD_OVERVIEW,
    SIGNALS,
    MARKET_OVERVIEW,
    MOVERS,
    DERIVATIVES,
    BETA,
    SYMBOLS,
    CONFLUENCE,
    CANDLES,
)
FIXED_VIEWS: tuple[ViewSpec, ...] = tuple(v for v in CATALOGUE if not v.parametrised)
PARAMETRISED_VIEWS: tuple[ViewSpec, ...] = tuple(v for v in CATALOGUE if v.parametrised)
HOT_VIEWS: tuple[str, ...] = tuple(v.name for v in CATALOGUE if v.hot)
VIEW_FAMILIES: dict[str, str] = {v.name: v.family for v in FIXED_VIEWS}

# Readiness and the snapshot-age metric read this view: every snapshot publishes it
# (a dashboard comes even with a section missing, where e.g. market:overview is left
# out and goes stale), so its age is the age of the newest snapshot.
READINESS_VIEW = DESKTOP.name
# On-demand views warmed before any reader asked for them.
DEFAULT_HOT_ON_DEMAND = (CANDLES.named("BTCUSDT", "1h"), CANDLES.named("ETHUSDT", "1h"))

_BY_NAME = {v.name: v for v in CATALOGUE}


def view_parts(view_name: str) -> tuple[str, tuple[str, ...]]:
    """``(family, parts)`` of a view name: ``("dash:desktop", ())``,
    ``("confluence", ("BTCUSDT", "5m"))``. Raises ValueError for an unknown view."""
    spec = spec_of(view_name)
    if not spec.parametrised:
        return spec.family, ()
    _, symbol, timeframe = view_name.split(":", 2)
    return spec.family, (symbol, timeframe)


def spec_of(view_name: str) -> ViewSpec:
    """The catalogue entry of a view name (fixed or parametrised); ValueError if unknown."""
    spec = _BY_NAME.get(view_name)
    if spec is not None and not spec.parametrised:
        return spec
    prefix, _, rest = view_name.partition(":")
    symbol, sep, timeframe = rest.partition(":")
    spec = _BY_NAME.get(prefix)
    if spec is not None and spec.parametrised and sep and symbol and timeframe:
        return spec
    patterns = [f"{v.name}:<SYMBOL>:<timeframe>" for v in PARAMETRISED_VIEWS]
    raise ValueError(f"unknown view {view_name!r}; valid: {', '.join([*VIEW_FAMILIES, *patterns])}")


def family_of(view_name: str) -> str:
    """The cache family of a view name; ValueError if unknown."""
    return view_parts(view_name)[0]


def view_key(view_name: str, namespace: str = DEFAULT_NAMESPACE) -> str:
    """The cache key of a view name (``virtuoso:v1:dash:desktop``); ValueError if unknown."""
    family, parts = view_parts(view_name)
    return make_key(family, *parts, namespace=namespace)


def check_policy_fits_refresh(policy: CachePolicy, refresh_seconds: float) -> None:
    """Each view's family is in the policy with the owner the catalogue gives it (a
    snapshot view's family ``pipeline``, an on-demand one's ``on_demand``); and views
    the pipeline owns are rewritten every refresh: a TTL that can drop below 1.5
    refresh intervals would mark them stale between two on-time refreshes. Raises
    ConfigError naming the family."""
    for spec in CATALOGUE:  # the policy has every family: load_policy checks that
        if policy.family(spec.family).owner != spec.owner:
            raise ConfigError(
                f"invalid configuration: cache family {spec.family} must have owner "
                f"{spec.owner} (view {spec.name}), not {policy.family(spec.family).owner}"
            )
    floor = 1.5 * refresh_seconds
    for name in policy.families:
        rules = policy.family(name)
        if rules.owner == "pipeline" and rules.min_ttl < floor:
            raise ConfigError(
                f"invalid configuration: cache family {name} min_ttl {rules.min_ttl} s is "
                f"under 1.5 × refresh_seconds ({floor:g} s); raise it or refresh more often"
            )
