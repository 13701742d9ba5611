"""What an on-call engineer reads: metrics from the daemon's start, log levels
that mean something, one summary of a feed's invalid rows, journald priorities,
the log level from the environment or after the command."""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiohttp import web
from conftest import PASSWORD, ConfigFactory, FeedServer, free_port
from prometheus_client import generate_latest
from structlog.testing import capture_logs
from test_daemon import daemon_at, write_config  # noqa: F401 -- a fixture

from feedsync import metrics
from feedsync.emulator import Emulator
from feedsync.store import Store
from feedsync.sync import Cycle

# Public ranges wider than expand_cidr's default /24: refused, every one.
CIDRS = "".join(f"{i}.1.0.0/16\n" for i in range(11, 47))


def sample(name: str, **labels: str) -> float | None:
    return metrics.REGISTRY.get_sample_value(name, labels)


def feedsync(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "feedsync.cli", *argv],
        env={**os.environ, "CT_PASSWORD": PASSWORD, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def json_lines(text: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in text.splitlines() if line.startswith("{")]


# -- metrics -----------------------------------------------------------------------------


async def test_a_feed_whose_every_row_is_invalid_counts_them(
    tmp_path: Path,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[..., Store],
) -> None:
    (tmp_path / "cidr.txt").write_text(CIDRS)
    loaded = make_config(
        emulator.url, f"- {{name: ops_cidr, type: csv, url: {tmp_path}/cidr.txt, supplier: Ops}}\n"
    )
    store = open_store(loaded)
    with capture_logs() as logged:
        [feed], _ = await Cycle(loaded, store).run()
    assert feed.result == "failed" and feed.stage == "parse"
    assert feed.change.invalid == 36, "the report says how many rows were invalid"
    name = "feedsync_feed_invalid_indicators_total"
    assert sample(name, feed="ops_cidr", reason="cidr_too_wide") == 36
    [synced] = [e for e in logged if e["event"] == "feed.synced"]
    assert synced["invalid"] == 36 and synced["log_level"] == "error"
    [invalid] = [e for e in logged if e["event"] == "feed.invalid"]
    assert invalid["count"] == 36 and invalid["reason"] == "cidr_too_wide"
    assert invalid["log_level"] == "warning"
    assert [s["line"] for s in invalid["samples"]] == [1, 2, 3]
    assert invalid["samples"][0]["value"] == "11.1.0.0/16"


async def test_unchanged_fetches_are_timed_and_http_answers_counted_by_code(
    emulator: Emulator,
    feed_server: FeedServer,
    make_config: ConfigFactory,
    open_store: Callable[..., Store],
) -> None:
    url = feed_server.set("ops.txt", "a.example\n", ETag='"v1"')
    loaded = make_config(
        emulator.url, f"- {{name: ops_304, type: csv, url: {url}, supplier: Ops}}\n"
    )
    store = open_store(loaded)
    await Cycle(loaded, store).run()
    [feed], _ = await Cycle(loaded, store).run()
    assert feed.result == "unchanged"
    assert feed.seconds > 0, "the 304's round trip took time"
    assert sample("feedsync_feed_fetch_duration_seconds_count", feed="ops_304") == 2
    assert sample("feedsync_feed_fetch_duration_seconds_sum", feed="ops_304") > 0
    assert sample("feedsync_feed_http_responses_total", feed="ops_304", code="200") == 1
    assert sample("feedsync_feed_http_responses_total", feed="ops_304", code="304") == 1


async def test_requests_of_no_supplier_are_labelled_and_build_info_exported(
    emulator: Emulator, make_config: ConfigFactory, open_store: Callable[..., Store]
) -> None:
    loaded = make_config(
        emulator.url, "- {name: ops_none, type: csv, url: /nonexistent, supplier: Ops}\n"
    )
    await Cycle(loaded, open_store(loaded)).run()
    body = generate_latest(metrics.REGISTRY).decode()
    assert 'supplier=""' not in body
    assert sample("feedsync_requests_total", supplier="-", method="GET", code="200")
    assert "feedsync_build_info{" in body and 'version="' in body and 'python="' in body
    assert "process_resident_memory_bytes" in body and "python_info{" in body


async def test_supplier_series_exist_from_the_daemon_start(
    tmp_path: Path,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    # A sync that could not reach CyberTrace leaves its changes pending in the store.
    unreachable = f"http://127.0.0.1:{free_port()}"
    feeds = (
        f"  - {{name: ops_backlog, type: csv, url: {tmp_path}/backlog.txt, supplier: OpsBacklog}}\n"
    )
    path = write_config(tmp_path, unreachable, feeds, "  retry: {attempts: 1}\n")
    (tmp_path / "backlog.txt").write_text("a.example\nb.example\nc.example\n")
    assert feedsync("sync", "-c", str(path), "ops_backlog").returncode == 1
    assert sample("feedsync_pending_operations", supplier="OpsBacklog") is None

    metrics.CYBERTRACE_UP.set(1)  # what an earlier test's requests left in this process
    daemon = await daemon_at(path)
    assert sample("feedsync_cybertrace_up") == 0, "the last exchange, in the store, failed"
    await daemon._schedule()
    assert sample("feedsync_pending_operations", supplier="OpsBacklog") == 3
    assert sample("feedsync_rejected_indicators", supplier="OpsBacklog") == 0
    assert sample("feedsync_refresh_due_indicators", supplier="OpsBacklog") == 0
    assert sample("feedsync_changes_total", supplier="OpsBacklog", op="add") == 0


async def test_cybertrace_up_is_as_the_store_left_it_from_the_daemon_start(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    # Seen under systemd: restarted, with no feed due for hours, the gauge stayed at
    # 0, and FeedsyncCyberTraceDown would page while CyberTrace answered.
    path = write_config(tmp_path, emulator.url)
    # Another process syncs (asynchronously: the emulator answers on this loop).
    sync = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "feedsync.cli", "sync", "-c", str(path),
        env={**os.environ, "CT_PASSWORD": PASSWORD},
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    assert await asyncio.wait_for(sync.wait(), 60) == 0
    metrics.CYBERTRACE_UP.set(0)  # a new process's gauge
    await daemon_at(path)
    assert sample("feedsync_cybertrace_up") == 1


async def test_reload_outcome_is_a_gauge(
    tmp_path: Path,
    emulator: Emulator,
    daemon_at: Callable[..., Any],  # noqa: F811 -- the fixture imported above
) -> None:
    path = write_config(tmp_path, emulator.url)
    daemon = await daemon_at(path)
    await daemon.reload()
    assert metrics.CONFIG_RELOAD_OK._value.get() == 1
    taken = metrics.CONFIG_RELOAD_TIME._value.get()
    path.write_text("cybertrace: [broken\n")
    await daemon.reload()
    assert metrics.CONFIG_RELOAD_OK._value.get() == 0
    assert metrics.CONFIG_RELOAD_TIME._value.get() == taken, "the time of the one in use"
    write_config(tmp_path, emulator.url)
    await daemon.reload()
    assert metrics.CONFIG_RELOAD_OK._value.get() == 1


# -- logs --------------------------------------------------------------------------------


async def test_an_unreachable_cybertrace_and_its_retries_are_logged_as_failures(
    tmp_path: Path, make_config: ConfigFactory, open_store: Callable[..., Store]
) -> None:
    (tmp_path / "a.txt").write_text("a.example\n")
    unreachable = f"http://127.0.0.1:{free_port()}"
    loaded = make_config(
        unreachable,
        f"- {{name: ops_down, type: csv, url: {tmp_path}/a.txt, supplier: Ops}}\n",
        cybertrace="retry: {attempts: 3, initial_delay: 0.01, max_delay: 0.02}\n",
    )
    with capture_logs() as logged:
        await Cycle(loaded, open_store(loaded)).run()
    retries = [e for e in logged if e["event"] == "cybertrace.retry"]
    assert len(retries) == 2 and {e["log_level"] for e in retries} == {"warning"}
    assert "Connect" in retries[0]["error"] or "connect" in retries[0]["error"]
    [supplier] = [e for e in logged if e["event"] == "supplier.synced"]
    assert supplier["log_level"] == "error" and supplier["error"]


async def test_a_held_shrink_is_a_warning(
    tmp_path: Path,
    emulator: Emulator,
    make_config: ConfigFactory,
    open_store: Callable[..., Store],
) -> None:
    feed = tmp_path / "many.txt"
    feed.write_text("".join(f"h{i}.example\n" for i in range(100)))
    loaded = make_config(
        emulator.url, f"- {{name: ops_shrink, type: csv, url: {feed}, supplier: Ops}}\n"
    )
    store = open_store(loaded)
    await Cycle(loaded, store).run()
    feed.write_text("h1.example\n")
    with capture_logs() as logged:
        [report], _ = await Cycle(loaded, store).run()
    assert report.result == "held"
    [synced] = [e for e in logged if e["event"] == "feed.synced"]
    assert synced["log_level"] == "warning" and synced["held"] == 99


def test_no_failure_is_logged_at_info_or_debug() -> None:
    # Every info/debug call of the package, reviewed: none of them reports a failure,
    # a retry or a held change. A new one joins this list only after the same review.
    reviewed = {
        "feed.zip_member", "supplier.corrected", "supplier.created_elsewhere", "supplier.created",
        "tags.created_elsewhere", "tags.created", "cybertrace.version",
        "cybertrace.supplier_unreadable", "feed.expired", "daemon.started", "config.reloaded",
        "daemon.draining", "daemon.stopped", "state.checked", "daemon.exit", "server.listening",
        "cycle.finished", "supplier.refresh", "taxii.source_changed", "control.listening",
        "feed.on_hold", "feed.excluded", "allowlist.read", "canary.placed", "canary.skipped",
        "store.vacuumed", "store.released",
    }  # fmt: skip
    package = Path(__file__).resolve().parents[2] / "feedsync"
    found = set()
    for source in package.rglob("*.py"):
        if source.relative_to(package).parts[0] == "emulator":
            continue  # the test double's own log, not feedsync's
        for match in re.finditer(r"log\.(?:info|debug)\(\s*\"([a-z_.]+)\"", source.read_text()):
            found.add(match.group(1))
    assert found <= reviewed, f"not reviewed: {sorted(found - reviewed)}"


def test_a_bad_log_level_in_the_environment_is_a_usage_error(tmp_path: Path) -> None:
    bad = feedsync("check", "-c", str(tmp_path / "absent.yaml"), env={"FEEDSYNC_LOG_LEVEL": "loud"})
    assert bad.returncode == 2
    assert bad.stderr.strip() == (
        "feedsync: configuration error: FEEDSYNC_LOG_LEVEL: 'loud' is not one of"
        " debug, info, warning, error"
    )


def test_log_level_after_the_command_and_in_the_environment_filter(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a.example\n1.0.0.0/8\n")  # an info and a warning
    config = tmp_path / "feedsync.yaml"
    config.write_text(
        f"cybertrace: {{url: 'http://127.0.0.1:{free_port()}', username: u,"
        " password: '${CT_PASSWORD}', retry: {attempts: 1}}\n"
        f"state: {{path: {tmp_path}/s.db}}\n"
        f"feeds:\n  - {{name: a, type: csv, url: {tmp_path}/a.txt, supplier: S}}\n"
    )
    dry = ("sync", "-c", str(config), "--dry-run")
    default = json_lines(feedsync("--log-format", "json", *dry).stderr)
    assert any(e["level"] == "info" for e in default)
    for run in (
        feedsync("--log-format", "json", *dry, "--log-level", "warning"),
        feedsync(*dry, "--log-format", "json", env={"FEEDSYNC_LOG_LEVEL": "warning"}),
    ):
        lines = json_lines(run.stderr)
        assert lines and {e["level"] for e in lines} <= {"warning", "error"}, run.stderr
    debug = json_lines(feedsync(*dry, "--log-format", "json", "--log-level", "debug").stderr)
    assert len(debug) >= len(default)


def test_json_lines_carry_a_syslog_priority_and_the_journal_gets_the_prefix(
    tmp_path: Path,
) -> None:
    (tmp_path / "cidr.txt").write_text(CIDRS)
    config = tmp_path / "feedsync.yaml"
    config.write_text(
        f"cybertrace: {{url: 'http://127.0.0.1:{free_port()}', username: u,"
        " password: '${CT_PASSWORD}', retry: {attempts: 1}}\n"
        f"state: {{path: {tmp_path}/s.db}}\n"
        f"feeds:\n  - {{name: c, type: csv, url: {tmp_path}/cidr.txt, supplier: S}}\n"
    )
    argv = ("--log-format", "json", "sync", "-c", str(config))
    lines = json_lines(feedsync(*argv).stderr)
    priorities = {e["level"]: e["priority"] for e in lines}
    assert priorities == {"info": 6, "warning": 4, "error": 3}
    assert sum(e["event"] == "feed.invalid" for e in lines) == 1, "one line for 36 rows"

    # Under systemd stderr is the journal's stream, named by $JOURNAL_STREAM.
    read, write = os.pipe()
    stats = os.fstat(write)
    with os.fdopen(read) as journal:
        process = subprocess.Popen(
            [sys.executable, "-m", "feedsync.cli", *argv],
            env={**os.environ, "CT_PASSWORD": PASSWORD,
                 "JOURNAL_STREAM": f"{stats.st_dev}:{stats.st_ino}"},
            stderr=write,
        )  # fmt: skip
        os.close(write)
        text = journal.read()
        assert process.wait(60) == 1
    entries = [line for line in text.splitlines() if line.startswith("<")]
    assert entries and all(
        line.startswith(f"<{orjson.loads(line[3:])['priority']}>{{") for line in entries
    )
    assert any(line.startswith("<3>") for line in entries)


# -- the listen port ------------------------------------------------------------------------


async def test_a_taken_listen_port_is_one_clear_line(tmp_path: Path) -> None:
    runner = web.AppRunner(web.Application())
    await runner.setup()
    port = free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        path = write_config(tmp_path, "http://127.0.0.1:1")
        text = re.sub(r"listen: 127\.0\.0\.1:\d+", f"listen: 127.0.0.1:{port}", path.read_text())
        path.write_text(text)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "feedsync.cli", "--log-format", "json", "run", "-c", str(path),
            env={**os.environ, "CT_PASSWORD": PASSWORD},
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        _, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        await runner.cleanup()
    text = err.decode()
    assert process.returncode == 1
    assert "Traceback" not in text and "Unclosed" not in text, text
    assert text.splitlines()[-1] == (
        f"feedsync: server.listen 127.0.0.1:{port}: cannot listen (Address already in use):"
        " another feedsync or another program listens there; stop it or set server.listen"
        " to a free port"
    )
    [exit_line] = [e for e in json_lines(text) if e["event"] == "daemon.exit"]
    assert exit_line["level"] == "error"
