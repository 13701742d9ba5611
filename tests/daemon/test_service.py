"""feedsync as the README installs it under systemd: the unit's promises (exit 2
not restarted, the venv's ExecStart, credentials), secrets from
$CREDENTIALS_DIRECTORY, and a reload systemd can see."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import PASSWORD
from test_daemon import daemon_at, write_config  # noqa: F401 -- a fixture

from feedsync import config as configuration
from feedsync.emulator import Emulator

ROOT = Path(__file__).resolve().parents[2]
UNIT = (ROOT / "systemd" / "feedsync.service").read_text()
README = (ROOT / "README.md").read_text()


def directives(name: str) -> list[str]:
    return re.findall(rf"^{name}=(.*)$", UNIT, re.MULTILINE)


def test_the_unit_runs_what_the_readme_installs() -> None:
    [start] = directives("ExecStart")
    assert start.startswith("/opt/feedsync/bin/feedsync run ")
    assert "python3 -m venv /opt/feedsync\n" in README
    assert "/opt/feedsync/bin/pip install ." in README
    assert "install -m 0644 systemd/feedsync.service /etc/systemd/system/" in README
    assert directives("RestartPreventExitStatus") == ["2"], "a config error is not retried"
    assert not directives("Documentation"), "no page nothing installs"


def test_reload_needs_no_binary_a_minimal_debian_lacks() -> None:
    # Seen under systemd 252 in a debootstrap minbase Debian 12: ExecReload=/bin/kill
    # failed with 203/EXEC (procps is not installed), so `systemctl reload` failed.
    [reload] = directives("ExecReload")
    assert reload == """/bin/sh -c 'kill -HUP "$MAINPID"'""", "the shell's own kill"


def test_every_credential_the_unit_loads_is_a_file_the_readme_creates() -> None:
    loads = directives("LoadCredential")
    assert loads
    for line in loads:
        name, _, source = line.partition(":")
        assert source == f"/etc/feedsync/credentials/{name}"
        assert f"/etc/feedsync/credentials/{name}" in README
        assert f"${{CREDENTIALS_DIRECTORY}}/{name}" in README
    assert "install -d -m 0700 /etc/feedsync/credentials" in README


def test_the_example_environment_file_is_what_systemd_reads() -> None:
    [env] = directives("EnvironmentFile")
    assert env == "-/etc/feedsync/feedsync.env"
    text = (ROOT / "systemd" / "feedsync.env").read_text()
    assert "install -m 0600 systemd/feedsync.env /etc/feedsync/feedsync.env" in README
    settings = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert settings and all(re.fullmatch(r"[A-Z_]+=\S*", line) for line in settings)
    assert "FEEDSYNC_LOG_LEVEL=info" in settings


CREDENTIAL_CONFIG = """\
cybertrace:
  url: http://127.0.0.1:1
  username: feedsync
  password_file: ${CREDENTIALS_DIRECTORY}/cybertrace-password
feeds:
  - {name: a, type: csv, url: /nonexistent, supplier: S}
"""


def test_a_secret_is_read_from_the_credentials_directory(tmp_path: Path) -> None:
    # What systemd makes of LoadCredential=: a directory only the service reads.
    credentials = tmp_path / "credentials"
    credentials.mkdir(mode=0o700)
    secret = credentials / "cybertrace-password"
    secret.write_text(PASSWORD + "\n")
    secret.chmod(0o400)
    config = tmp_path / "feedsync.yaml"
    config.write_text(CREDENTIAL_CONFIG)
    loaded = configuration.load(config, env={"CREDENTIALS_DIRECTORY": str(credentials)})
    assert loaded.cybertrace.password.reveal() == PASSWORD
    assert loaded.warnings == ()


def test_the_credentials_directory_unset_says_where_it_comes_from(tmp_path: Path) -> None:
    config = tmp_path / "feedsync.yaml"
    config.write_text(CREDENTIAL_CONFIG)
    env = {k: v for k, v in os.environ.items() if k != "CREDENTIALS_DIRECTORY"}
    result = subprocess.run(
        [sys.executable, "-m", "feedsync.cli", "check", "-c", str(config)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "feedsync: configuration error: cybertrace.password_file: environment variable"
        " CREDENTIALS_DIRECTORY is not set (systemd sets it in a unit with LoadCredential=;"
        " outside the unit, set it to the directory of the credential files, as in"
        " CREDENTIALS_DIRECTORY=/etc/feedsync/credentials feedsync check)"
    )


def test_a_bad_configuration_exits_2_for_restart_prevent_exit_status(tmp_path: Path) -> None:
    config = tmp_path / "feedsync.yaml"
    config.write_text("cybertrace: [broken\n")
    result = subprocess.run(
        [sys.executable, "-m", "feedsync.cli", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture
def notify_socket(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> socket.socket:
    path = tmp_path / "notify.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(str(path))
    listener.setblocking(False)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield listener  # type: ignore[misc]
    listener.close()


def received(listener: socket.socket) -> list[dict[str, str]]:
    messages = []
    while True:
        try:
            data = listener.recv(4096).decode()
        except BlockingIOError:
            return messages
        messages.append(dict(line.split("=", 1) for line in data.splitlines()))


async def test_a_reload_is_reloading_then_ready_for_systemd(
    tmp_path: Path,
    emulator: Emulator,
    notify_socket: socket.socket,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    path = write_config(tmp_path, emulator.url)
    daemon = await daemon_at(path)
    for content in (path.read_text(), "cybertrace: [broken\n"):
        path.write_text(content)
        before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        await daemon.reload()
        after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        await asyncio.sleep(0)
        reloading, ready = received(notify_socket)
        assert reloading["RELOADING"] == "1"
        assert before <= int(reloading["MONOTONIC_USEC"]) <= after
        assert ready["READY"] == "1" and "feeds" in ready["STATUS"], "refused or not: ready"


async def test_systemd_status_counts_no_cycle_once_the_last_has_ended(
    tmp_path: Path,
    emulator: Emulator,
    notify_socket: socket.socket,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    # Seen under systemd: STATUS= was sent while the ending cycle still counted,
    # and `systemctl status` said "1 running" until the next cycle.
    daemon = await daemon_at(write_config(tmp_path, emulator.url))
    await daemon.launch("first")
    await asyncio.wait(list(daemon.running.values()))
    await asyncio.sleep(0)
    *_, last = received(notify_socket)
    assert last["STATUS"].startswith("1 feeds, 0 running, 1 cycles, 0 failed"), last

