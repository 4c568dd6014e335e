"""The cache policy: the shipped file loads, and every unusable policy is refused by name."""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from app.cache.keys import FAMILIES
from app.cache.policy import POLICY_FILE, CachePolicy, load_policy
from app.errors import ConfigError

SHIPPED: dict[str, Any] = yaml.safe_load(POLICY_FILE.read_text())
DASHBOARDS = ["dash:desktop", "dash:mobile", "dash:overview"]


def write(tmp_path: Path, data: dict[str, Any]) -> Path:
    path = tmp_path / "cache.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def changed(**families: dict[str, Any] | None) -> dict[str, Any]:
    """The shipped policy with some families' fields replaced (None removes the family)."""
    data = copy.deepcopy(SHIPPED)
    for name, fields in families.items():
        name = name.replace("_", ":") if name.startswith("dash_") else name
        if fields is None:
            del data["families"][name]
        else:
            data["families"].setdefault(name, {}).update(fields)
    return data


def refused(tmp_path: Path, data: dict[str, Any], message: str) -> str:
    with pytest.raises(ConfigError, match=re.escape(message)) as raised:
        load_policy(write(tmp_path, data))
    return str(raised.value)


@pytest.fixture(scope="module")
def policy() -> CachePolicy:
    return load_policy()


def test_shipped_policy_loads(policy: CachePolicy) -> None:
    assert set(policy.families) == set(FAMILIES)
    assert policy.namespace == "virtuoso"
    market = policy.family("market")
    assert (market.ttl, market.grace, market.max_stale) == (30, 30, 900)
    assert market.ttl_ms == 30_000 and market.grace_ms == 30_000 and market.max_stale_ms == 900_000
    assert policy.family("dash:mobile").compress
    assert not policy.family("dash:desktop").compress
    assert policy.family("dash:mobile").ttl > policy.family("dash:desktop").ttl
    assert policy.family("session").owner == "on_demand"
    assert policy.family("signals").owner == "pipeline"
    assert policy.family("candles").owner == "on_demand"


def test_shipped_policy_keeps_the_rule_on_every_edge(policy: CachePolicy) -> None:
    for name in policy.families:
        derived = policy.family(name)
        assert derived.min_ttl <= derived.ttl <= derived.max_ttl
        assert derived.max_stale >= derived.max_ttl + derived.grace
        assert derived.backup_ttl >= derived.max_stale
        for dep in map(policy.family, policy.upstream(name)[:-1]):  # [-1] is itself
            assert derived.max_ttl <= dep.min_ttl
            assert derived.max_ttl + derived.grace <= dep.min_ttl + dep.grace
            assert derived.max_stale <= dep.max_stale


def test_families_are_topologically_ordered(policy: CachePolicy) -> None:
    position = {name: i for i, name in enumerate(policy.families)}
    for name in policy.families:
        for dependency in policy.family(name).depends_on:
            assert position[dependency] < position[name]


def test_downstream_of_market_is_every_view_but_session(policy: CachePolicy) -> None:
    downstream = policy.downstream("market")
    assert downstream[0] == "market"
    assert set(downstream) == set(FAMILIES) - {"session"}
    assert downstream.index("confluence") < downstream.index("signals")
    assert all(downstream.index("signals") < downstream.index(d) for d in DASHBOARDS)


def test_downstream_of_alerts_is_the_dashboards_showing_them(policy: CachePolicy) -> None:
    assert policy.downstream("alerts") == ["alerts", "dash:desktop", "dash:mobile"]
    assert policy.downstream("session") == ["session"]
    assert policy.downstream("dash:mobile") == ["dash:mobile"]


def test_upstream(policy: CachePolicy) -> None:
    assert policy.upstream("signals") == ["market", "confluence", "signals"]
    assert policy.upstream("market") == ["market"]
    assert "session" not in policy.upstream("dash:desktop")
    assert policy.upstream("dash:desktop")[-1] == "dash:desktop"


def test_unknown_family_lookup(policy: CachePolicy) -> None:
    with pytest.raises(KeyError, match="unknown cache family 'dash'"):
        policy.family("dash")
    with pytest.raises(KeyError):
        policy.downstream("nope")


def test_the_audits_hierarchy_is_refused(tmp_path: Path) -> None:
    audit = {"ttl": 60, "grace": 0, "max_stale": 600, "backup_ttl": 600}
    data = changed(
        market={"ttl": 120, "grace": 0, "max_stale": 900},
        confluence=audit,
        signals=audit | {"ttl": 90},
    )
    refused(tmp_path, data, "signals ttl 90 s outlives confluence ttl 60 s it is computed from")


def test_a_dashboard_outliving_signals_is_refused(tmp_path: Path) -> None:
    data = changed(dash_overview={"ttl": 45, "min_ttl": 45, "max_ttl": 45})
    refused(tmp_path, data, "dash:overview ttl 45 s outlives signals ttl 30 s it is computed from")


def test_grace_outliving_the_dependency_is_refused(tmp_path: Path) -> None:
    data = changed(confluence={"grace": 40})
    refused(
        tmp_path, data, "confluence ttl+grace 70 s outlives market ttl+grace 60 s it is computed"
    )


def test_max_stale_outliving_the_dependency_is_refused(tmp_path: Path) -> None:
    data = changed(signals={"max_stale": 1200, "backup_ttl": 3600})
    refused(tmp_path, data, "signals max_stale 1200 s outlives confluence max_stale 900 s")


def test_adaptive_bounds_must_keep_the_rule_at_every_setting(tmp_path: Path) -> None:
    # ttl 25 ≤ market 30 as configured, but tuning could raise the dashboard to 35 s.
    data = changed(dash_desktop={"ttl": 25, "min_ttl": 10, "max_ttl": 35, "grace": 0})
    refused(tmp_path, data, "dash:desktop max_ttl 35 s outlives market min_ttl 30 s")
    # ... or lower market to 20 s beneath a 25 s dashboard.
    data = changed(market={"min_ttl": 20, "max_ttl": 30})
    refused(tmp_path, data, "confluence max_ttl 30 s outlives market min_ttl 20 s")


def test_adaptive_grace_window_is_checked_at_the_dependency_minimum(tmp_path: Path) -> None:
    data = changed(
        market={"min_ttl": 20, "max_ttl": 40, "grace": 20},
        confluence={"ttl": 20, "grace": 25},  # 45 s ≤ market's 30 + 20 as configured
    )
    refused(tmp_path, data, "confluence max_ttl+grace 45 s outlives market min_ttl+grace 40 s")


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ttl": 0}, "families → market → ttl: Input should be greater than 0"),
        ({"grace": -1}, "families → market → grace: Input should be greater than or equal to 0"),
        ({"max_stale": 50}, "market max_stale 50 s is shorter than max_ttl + grace 30 + 30 = 60"),
        ({"backup_ttl": 600}, "market backup_ttl 600 s is shorter than max_stale 900 s"),
        ({"min_ttl": 40}, "market needs min_ttl ≤ ttl ≤ max_ttl, got 40 s, 30 s, 30 s"),
        ({"max_ttl": 20}, "market needs min_ttl ≤ ttl ≤ max_ttl, got 30 s, 30 s, 20 s"),
        ({"owner": "cron"}, "families → market → owner: Input should be 'pipeline' or"),
        ({"colour": "red"}, "families → market → colour: Extra inputs are not permitted"),
        ({"depends_on": ["session", "session"]}, "market lists a dependency twice"),
    ],
)
def test_bad_family_values_are_refused(
    tmp_path: Path, fields: dict[str, Any], message: str
) -> None:
    text = refused(tmp_path, changed(market=fields), message)
    assert text.startswith("invalid cache policy cache.yaml: ")


def test_max_stale_covers_the_largest_adaptive_ttl(tmp_path: Path) -> None:
    data = changed(session={"min_ttl": 600, "max_ttl": 1200})
    refused(tmp_path, data, "session max_stale 900 s is shorter than max_ttl + grace 1200 + 0")


def test_unknown_family_is_refused(tmp_path: Path) -> None:
    data = changed(indicators={"ttl": 60, "grace": 0, "max_stale": 60, "backup_ttl": 60})
    refused(tmp_path, data, "unknown family indicators; valid: market, confluence")


def test_missing_family_is_refused(tmp_path: Path) -> None:
    refused(tmp_path, changed(beta=None), "no policy for family beta")


def test_dependency_on_unknown_family_is_refused(tmp_path: Path) -> None:
    data = changed(signals={"depends_on": ["confluense"]})
    refused(tmp_path, data, "signals depends on unknown family 'confluense'")


def test_cycles_are_refused(tmp_path: Path) -> None:
    data = changed(market={"depends_on": ["signals"]})
    refused(tmp_path, data, "dependency cycle: market → signals → confluence → market")


def test_self_dependency_is_a_cycle(tmp_path: Path) -> None:
    refused(tmp_path, changed(session={"depends_on": ["session"]}), "cycle: session → session")


def test_bad_namespace_is_refused(tmp_path: Path) -> None:
    data = changed() | {"namespace": "two words"}
    refused(tmp_path, data, "cache namespace 'two words' must match")


def test_unreadable_and_malformed_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_policy(tmp_path / "absent.yaml")
    path = tmp_path / "cache.yaml"
    path.write_text("families: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_policy(path)
    path.write_text("- a list")
    with pytest.raises(ConfigError, match=r"invalid cache policy cache\.yaml: top level"):
        load_policy(path)


def test_adaptive_ttl_is_clamped(policy: CachePolicy) -> None:
    desktop = policy.family("dash:desktop")
    assert desktop.adaptive and not policy.family("market").adaptive
    assert desktop.clamp_ttl(1) == desktop.min_ttl
    assert desktop.clamp_ttl(999) == desktop.max_ttl
    assert desktop.clamp_ttl(14.6) == 15
