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
    ):
        assert name in known


def test_alert_rules_pass_promtool() -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (.ci/run installs Debian's prometheus package)")
    result = subprocess.run(
        [promtool, "check", "rules", str(DEPLOY / "alerts.yml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
