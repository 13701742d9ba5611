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
# feedsync's own names and those of the standard process/platform collectors.
NAME = re.compile(r"\b(?:feedsync|process|python)_[a-z0-9_]+")


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


def dashboard_targets() -> list[tuple[str, str]]:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    return [(panel["title"], t["expr"]) for panel in dashboard["panels"] for t in panel["targets"]]


SELECTOR = re.compile(r"\b((?:feedsync|process|python)_[a-z0-9_]+)(\{[^}]*\})?")


def test_every_dashboard_query_follows_the_instance_variable() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert "feedsync_build_info" in str(variables["instance"]["query"])
    for title, expr in dashboard_targets():
        for name, labels in SELECTOR.findall(expr):
            assert 'instance=~"$instance"' in labels, f"{title}: {name} ignores $instance"
        for window in re.findall(r"\b(?:rate|increase|irate|delta)\([^\[]*\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"{title}: [{window}], not [$__rate_interval]"


def test_dashboard_has_the_current_state_table_and_thresholds() -> None:
    dashboard = json.loads((DEPLOY / "grafana-dashboard.json").read_text())
    [table] = [p for p in dashboard["panels"] if p["type"] == "table"]
    renamed = table["transformations"][1]["options"]["renameByName"].values()
    assert {"state", "age", "indicators", "held"} <= set(renamed)
    assert all(t.get("instant") and t.get("format") == "table" for t in table["targets"])
    stepped = [
        p["title"]
        for p in dashboard["panels"]
        if len(p["fieldConfig"]["defaults"]["thresholds"]["steps"]) > 1
    ]
    assert "Feed age (in schedule intervals)" in stepped


def test_dashboard_queries_parse(tmp_path: Path) -> None:
    # promtool checks PromQL in rule files: every query, Grafana's variables filled in.
    rules = [
        {"record": f"dashboard:query{i}", "expr": expr.replace("$__rate_interval", "5m")}
        for i, (_title, expr) in enumerate(dashboard_targets())
    ]
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    promtool("check", "rules", str(path))
