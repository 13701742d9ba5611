"""The dashboard and the alert rules use only metrics a running feedsync exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest

from feedsync import metrics

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
NAME = re.compile(r"\bfeedsync_[a-z0-9_]+")


def exported() -> set[str]:
    """Every sample name the registry can export, from its # TYPE lines."""
    names: set[str] = set()
    for line in generate_latest(metrics.REGISTRY).decode().splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            suffixes = {
                "counter": ["_total", "_created"],
                "histogram": ["_bucket", "_sum", "_count", "_created"],
            }
            names.add(name)
            names.update(name + s for s in suffixes.get(kind, []))
    return names


def expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    exprs += [str(rule["expr"]) for group in rules["groups"] for rule in group["rules"]]
    return exprs


def test_every_metric_used_is_exported() -> None:
    known = exported()
    used = {name for expr in expressions() for name in NAME.findall(expr)}
    assert used, "the dashboard and rules use feedsync metrics"
    assert used <= known, f"not exported: {sorted(used - known)}"


def test_design_metric_names_are_exported() -> None:
    known = exported()
    for name in (
        "feedsync_feed_last_success_timestamp_seconds",
        "feedsync_feed_indicators",
        "feedsync_feed_fetch_total",
        "feedsync_changes_total",
        "feedsync_requests_total",
        "feedsync_pending_operations",
        "feedsync_rejected_indicators",
        "feedsync_feed_held",
        "feedsync_feed_never_succeeded",
        "feedsync_feed_interval_seconds",
        "feedsync_feed_next_run_timestamp_seconds",
        "feedsync_cybertrace_auth_failing",
    ):
        assert name in known


def promtool(*args: str) -> None:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    result = subprocess.run([found, *args], capture_output=True, text=True, check=False, cwd=DEPLOY)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_promtool() -> None:
    promtool("check", "rules", "alerts.yml")


def test_alert_rules_fire_and_stay_quiet_in_their_scenarios() -> None:
    promtool("test", "rules", "alerts.test.yml")


def alert_rules() -> list[dict[str, object]]:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    return [rule for group in rules["groups"] for rule in group["rules"] if "alert" in rule]


def test_every_alert_has_a_runbook_section_and_a_scenario() -> None:
    readme = (DEPLOY / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in readme.splitlines()
        if line.startswith("#")
    }
    scenarios = (DEPLOY / "alerts.test.yml").read_text()
    for rule in alert_rules():
        name = str(rule["alert"])
        annotations = rule["annotations"]
        assert isinstance(annotations, dict)
        url = str(annotations["runbook_url"])
        assert url == f"deploy/README.md#{name.lower()}", name
        assert name.lower() in anchors, f"deploy/README.md has no section {name}"
        assert f"alertname: {name}" in scenarios, f"alerts.test.yml never evaluates {name}"
        assert {"summary", "description"} <= annotations.keys(), name


def test_every_metric_is_documented_for_users() -> None:
    documented = set(NAME.findall((DEPLOY.parent / "docs" / "metrics.md").read_text()))
    families = {
        line.split()[2]
        for line in generate_latest(metrics.REGISTRY).decode().splitlines()
        if line.startswith("# TYPE ") and not line.endswith("_created gauge")
    }
    missing = {n for n in families if n not in documented and n + "_total" not in documented}
    assert not missing, f"docs/metrics.md does not list {sorted(missing)}"
    assert documented <= exported(), "docs/metrics.md names a metric that is gone"
