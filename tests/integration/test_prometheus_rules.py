"""Prometheus configuration and rules (prometheus/): promtool validates them and runs their
unit tests (prometheus/tests/*.yml); the conventions every rule follows are checked here.

promtool comes from Debian's ``prometheus`` package (``make test`` installs it); set
``PROMTOOL`` to use another binary.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULE_FILES = sorted((PROMETHEUS / "rules").glob("*.yml"))
TEST_FILES = sorted((PROMETHEUS / "tests").glob("*.yml"))
RUNBOOKS = PROMETHEUS.parent / "docs" / "runbooks.md"

PROMTOOL_TIMEOUT = 120  # seconds; the whole suite of rule tests takes about one

RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")
RUNBOOK_URL = re.compile(r"^docs/runbooks\.md#(runbook-[a-z0-9]+(?:-[a-z0-9]+)*)$")
SEVERITIES = {"page", "ticket"}
ANNOTATIONS = ("summary", "description", "runbook_url")


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules(kind: str) -> Iterator[dict[str, Any]]:
    """Every rule of the rule files that has the key ``kind`` ("alert" or "record")."""
    for path in RULE_FILES:
        for group in load(path)["groups"]:
            yield from (rule for rule in group["rules"] if kind in rule)


def alert_cases() -> Iterator[tuple[str, dict[str, Any]]]:
    """(test file name, alert_rule_test case) for every case of every promtool test file."""
    for path in TEST_FILES:
        for test in load(path).get("tests") or []:
            for case in test.get("alert_rule_test") or []:
                yield path.name, case


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a Markdown heading: lower case, punctuation dropped, spaces
    turned into hyphens ("Runbook: cache hit ratio low" -> "runbook-cache-hit-ratio-low")."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def find_promtool() -> str:
    """promtool's path; a missing promtool fails the test (it is never a reason to skip)."""
    path = shutil.which(os.environ.get("PROMTOOL", "promtool"))
    if path is None:
        pytest.fail(
            "promtool not found: install Debian's prometheus package "
            "(`apt-get install prometheus`; `make test` does it) or set PROMTOOL",
            pytrace=False,
        )
    return path


def run_promtool(*args: str | Path) -> None:
    command = [find_promtool(), *map(str, args)]
    shown = " ".join(["promtool", *map(str, args[:-1]), str(Path(args[-1]).relative_to(ROOT))])
    try:
        result = subprocess.run(
            command, cwd=ROOT, capture_output=True, text=True, timeout=PROMTOOL_TIMEOUT
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"`{shown}` did not finish within {PROMTOOL_TIMEOUT}s", pytrace=False)
    if result.returncode != 0:
        pytest.fail(
            f"`{shown}` exited {result.returncode}:\n{result.stdout}{result.stderr}",
            pytrace=False,
        )


def test_the_files_are_there() -> None:
    assert CONFIG.is_file()
    assert {path.name for path in RULE_FILES} >= {"recording.yml", "alerts.yml"}
    assert TEST_FILES, "no promtool test files in prometheus/tests"


def test_config_is_valid() -> None:
    run_promtool("check", "config", CONFIG)


def test_config_scrapes_the_stack() -> None:
    config = load(CONFIG)
    assert config["rule_files"] == ["rules/*.yml"]
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"virtuoso", "virtuoso-collector", "memcached", "redis", "prometheus"}
    # Each replica's and each collector's monitoring listener (VIRTUOSO_MONITORING_BIND in
    # compose), found through Docker's DNS by the service's name.
    for job, service in (("virtuoso", "app"), ("virtuoso-collector", "collector")):
        (dns,) = jobs[job]["dns_sd_configs"]
        assert (dns["names"], dns["type"], dns["port"]) == ([service], "A", 8001)
        assert jobs[job]["metrics_path"] == "/metrics"
    (alertmanagers,) = config["alerting"]["alertmanagers"]
    assert alertmanagers["static_configs"] == [{"targets": ["alertmanager:9093"]}]


@pytest.mark.parametrize("path", RULE_FILES, ids=lambda path: path.name)
def test_rules_are_valid(path: Path) -> None:
    run_promtool("check", "rules", path)


@pytest.mark.parametrize("path", TEST_FILES, ids=lambda path: path.name)
def test_rule_unit_tests_pass(path: Path) -> None:
    run_promtool("test", "rules", path)


def test_recording_rule_names_follow_the_convention() -> None:
    names = [rule["record"] for rule in rules("record")]
    assert names
    bad = [name for name in names if not RECORD_NAME.match(name)]
    assert not bad, f"not level:metric:operations ({RECORD_NAME.pattern}): {bad}"
    assert len(names) == len(set(names)), "a recording rule name is used twice"


def test_every_alert_has_severity_summary_description_and_runbook() -> None:
    problems = []
    for rule in rules("alert"):
        name = rule["alert"]
        severity = (rule.get("labels") or {}).get("severity")
        if severity not in SEVERITIES:
            problems.append(f"{name}: severity {severity!r} is not one of {sorted(SEVERITIES)}")
        annotations = rule.get("annotations") or {}
        problems += [f"{name}: no {key}" for key in ANNOTATIONS if not annotations.get(key)]
        if "{{" not in annotations.get("description", ""):
            problems.append(f"{name}: the description does not show the value or labels")
        url = annotations.get("runbook_url", "")
        if not RUNBOOK_URL.match(url):
            problems.append(f"{name}: runbook_url {url!r} is not docs/runbooks.md#runbook-<name>")
    assert not problems, "\n".join(problems)


def test_alert_names_and_runbooks_are_unique() -> None:
    names = [rule["alert"] for rule in rules("alert")]
    urls = [rule["annotations"]["runbook_url"] for rule in rules("alert")]
    assert len(names) == len(set(names))
    assert len(urls) == len(set(urls)), "two alerts share a runbook"


def test_every_alert_is_tested_firing_and_not_firing() -> None:
    firing: set[str] = set()
    silent: set[str] = set()
    problems = []
    for file, case in alert_cases():
        name = case["alertname"]
        expected = case.get("exp_alerts") or []
        (firing if expected else silent).add(name)
        for alert in expected:
            if "severity" not in (alert.get("exp_labels") or {}):
                problems.append(f"{file}: {name} at {case['eval_time']}: no severity label")
            missing = set(ANNOTATIONS) - set(alert.get("exp_annotations") or {})
            if missing:
                problems.append(f"{file}: {name} at {case['eval_time']}: no {sorted(missing)}")
    for name in sorted(rule["alert"] for rule in rules("alert")):
        if name not in firing:
            problems.append(f"{name}: no test shows it firing")
        if name not in silent:
            problems.append(f"{name}: no test shows it not firing (exp_alerts: [])")
    unknown = (firing | silent) - {rule["alert"] for rule in rules("alert")}
    problems += [f"{name}: tested but not defined" for name in sorted(unknown)]
    assert not problems, "\n".join(problems)


def test_every_recording_rule_is_checked_by_a_promql_test() -> None:
    exprs = [
        case["expr"]
        for path in TEST_FILES
        for test in load(path).get("tests") or []
        for case in test.get("promql_expr_test") or []
    ]
    names = [rule["record"] for rule in rules("record")]
    unchecked = [
        name
        for name in names
        if not any(re.search(rf"(?<![\w:]){re.escape(name)}(?![\w:])", e) for e in exprs)
    ]
    assert not unchecked, f"no promql_expr_test reads {unchecked}"


def test_every_runbook_url_has_a_section_in_the_runbooks() -> None:
    headings = re.findall(r"^#+ +(.+?) *$", RUNBOOKS.read_text(encoding="utf-8"), re.MULTILINE)
    anchors = {github_anchor(heading) for heading in headings}
    urls = [(rule.get("annotations") or {}).get("runbook_url", "") for rule in rules("alert")]
    wanted = {match.group(1) for match in map(RUNBOOK_URL.match, urls) if match}
    missing = sorted(wanted - anchors)
    assert not missing, f"no heading in {RUNBOOKS.name} gives the anchors {missing}"
    orphans = sorted({anchor for anchor in anchors if anchor.startswith("runbook-")} - wanted)
    assert not orphans, f"runbook sections for alerts that do not exist: {orphans}"


def test_github_anchor() -> None:
    assert github_anchor("Runbook: cache hit ratio low") == "runbook-cache-hit-ratio-low"
    assert github_anchor("Runbook: API latency p99 high") == "runbook-api-latency-p99-high"
