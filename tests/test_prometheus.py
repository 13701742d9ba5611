"""A real Prometheus scrapes a running ``feedsync run`` and fires deploy/alerts.yml.

What deploy/README.md tells an operator to do (its scrape job, the rules file
next to prometheus.yml), done with Debian's prometheus server and feedsync
started as the unit starts it, its secret in $CREDENTIALS_DIRECTORY. Each rule's
``for:`` is shortened to 0s, so an alert fires at the first evaluation that
finds its condition true: the test checks the rules meet the series a live
daemon exports, under the labels the scrape gives them (``job="feedsync"``).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from conftest import PASSWORD, free_port

from feedsync.emulator import Emulator

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
# A bound on every wait: Prometheus starts in about a second and evaluates each
# second; on a loaded CI machine a condition may take several of its rounds.
PATIENCE = 60.0

pytestmark = pytest.mark.slow

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password_file: ${{CREDENTIALS_DIRECTORY}}/cybertrace-password
  timeout: 5
  retry: {{attempts: 1}}
state:
  path: {dir}/state/state.db
server:
  listen: 127.0.0.1:{port}
  shutdown_grace: 1
suppliers:
  Local: {{confidence: 50}}
feeds:
  - {{name: good, type: csv, url: {dir}/good.txt, supplier: Local, header: false,
      schedule: 1s, schedule_min_override: true}}
  - {{name: broken, type: csv, url: {dir}/missing.txt, supplier: Local, header: false,
      schedule: 1h}}
"""


def readme_scrape_config() -> dict[str, Any]:
    """The prometheus.yml fragment deploy/README.md gives, as it is written there."""
    text = (DEPLOY / "README.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)
    [fragment] = [b for b in blocks if "job_name: feedsync" in b]
    loaded = yaml.safe_load(fragment)
    assert isinstance(loaded, dict)
    return loaded


def prometheus_config(directory: Path, target: str) -> Path:
    """prometheus.yml: the README's fragment, its target this daemon, every second;
    beside it the rules file it names, deploy/alerts.yml with each ``for:`` 0s."""
    config = readme_scrape_config()
    [rules_file] = config["rule_files"]
    rules = (DEPLOY / "alerts.yml").read_text()
    shortened, count = re.subn(r"(?m)^(\s+for: )\S+$", r"\g<1>0s", rules)
    assert count, "alerts.yml has for: clauses to shorten"
    (directory / rules_file).write_text(shortened)
    [job] = config["scrape_configs"]
    job["static_configs"] = [{"targets": [target]}]
    config["global"] = {
        "scrape_interval": "1s",
        "scrape_timeout": "1s",
        "evaluation_interval": "1s",
    }
    path = directory / "prometheus.yml"
    path.write_text(yaml.safe_dump(config))
    return path


class Process:
    """A child process whose output goes to a file the failure message shows."""

    def __init__(self, name: str, args: list[str], log: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log = log
        with log.open("wb") as out:
            self.popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, env=env)

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()

    def tail(self) -> str:
        return f"--- {self.name} ---\n" + self.log.read_text(errors="replace")[-3000:]


@pytest.fixture
async def processes() -> AsyncIterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


async def eventually(what: str, check: Callable[[], Any], processes: list[Process]) -> Any:
    """Poll ``check`` (a coroutine function) until it returns something true."""
    deadline = time.monotonic() + PATIENCE
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            logs = "\n".join(p.tail() for p in processes)
            raise AssertionError(f"{what}: not seen within {PATIENCE:.0f} s\n{logs}")
        await asyncio.sleep(0.25)


async def api(session: aiohttp.ClientSession, base: str, path: str) -> Any:
    try:
        async with session.get(base + path) as response:
            if response.status != 200:
                return None
            return (await response.json())["data"]
    except aiohttp.ClientError:
        return None


def firing(alerts: Any, name: str, **labels: str) -> list[dict[str, Any]]:
    return [
        a
        for a in (alerts or {}).get("alerts", [])
        if a["labels"]["alertname"] == name
        and a["state"] == "firing"
        and all(a["labels"].get(k) == v for k, v in labels.items())
    ]


def start_daemon(tmp_path: Path, url: str, processes: list[Process]) -> str:
    """``feedsync run`` as the unit runs it: its secret a file in $CREDENTIALS_DIRECTORY."""
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    (credentials / "cybertrace-password").write_text(PASSWORD + "\n")
    (tmp_path / "good.txt").write_text("20.1.2.3\n20.1.2.4\n")
    port = free_port()
    config = tmp_path / "feedsync.yaml"
    config.write_text(CONFIG.format(url=url, dir=tmp_path, port=port))
    env = {**os.environ, "CREDENTIALS_DIRECTORY": str(credentials)}
    args = [sys.executable, "-m", "feedsync.cli", "run", "-c", str(config)]
    processes.append(Process("feedsync", args, tmp_path / "feedsync.log", env))
    return f"127.0.0.1:{port}"


def start_prometheus(tmp_path: Path, target: str, processes: list[Process]) -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.skip("prometheus not installed (.ci/run installs Debian's prometheus package)")
    directory = tmp_path / "prometheus"
    directory.mkdir()
    config = prometheus_config(directory, target)
    promtool = shutil.which("promtool")
    if promtool is not None:  # the README's check of the edited file
        check = subprocess.run(
            [promtool, "check", "config", str(config)], capture_output=True, text=True, check=False
        )
        assert check.returncode == 0, check.stdout + check.stderr
    listen = f"127.0.0.1:{free_port()}"
    args = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={directory / 'data'}",
        f"--web.listen-address={listen}",
        "--log.level=warn",
    ]
    processes.append(Process("prometheus", args, tmp_path / "prometheus.log", dict(os.environ)))
    return f"http://{listen}"


async def test_prometheus_scrapes_feedsync_and_its_alerts_fire(
    tmp_path: Path, emulator: Emulator, processes: list[Process]
) -> None:
    target = start_daemon(tmp_path, emulator.url, processes)
    base = start_prometheus(tmp_path, target, processes)
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:

        async def target_up() -> bool:
            data = await api(session, base, "/api/v1/targets")
            active = (data or {}).get("activeTargets", [])
            return any(t["labels"]["job"] == "feedsync" and t["health"] == "up" for t in active)

        async def alerts() -> Any:
            return await api(session, base, "/api/v1/alerts")

        await eventually("the feedsync target up", target_up, processes)

        async def broken_failing() -> list[dict[str, Any]]:
            return firing(await alerts(), "FeedsyncFeedFailing", job="feedsync", feed="broken")

        [alert] = await eventually("FeedsyncFeedFailing for broken", broken_failing, processes)
        assert alert["annotations"]["description"].startswith("failing = 1 for 30 minutes")
        assert alert["annotations"]["runbook_url"] == "deploy/README.md#feedsyncfeedfailing"
        now = await alerts()
        assert not firing(now, "FeedsyncFeedFailing", feed="good"), "the good feed syncs"
        assert not firing(now, "FeedsyncCyberTraceDown"), "the emulator answers"
        assert not firing(now, "FeedsyncDown")

        # CyberTrace goes away: the good feed's next cycle (each second) finds it gone.
        await emulator.stop()

        async def cybertrace_down() -> list[dict[str, Any]]:
            return firing(await alerts(), "FeedsyncCyberTraceDown", job="feedsync")

        await eventually("FeedsyncCyberTraceDown", cybertrace_down, processes)

        # feedsync itself goes away: only the scrape's own `up` can say so.
        processes[0].stop()

        async def feedsync_down() -> list[dict[str, Any]]:
            return firing(await alerts(), "FeedsyncDown", job="feedsync", instance=target)

        await eventually("FeedsyncDown", feedsync_down, processes)
