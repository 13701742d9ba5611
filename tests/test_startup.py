"""A `feedsync sync` (cron's, a timer's) loads only what a sync uses: its start-up is its cost."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from conftest import PASSWORD, ConfigFactory

from feedsync.emulator import Emulator

# What `feedsync run`, `feedsync emulator` or a configured warninglist needs, and a sync
# without them does not: each of these costs milliseconds to tens of them to import.
NOT_FOR_A_SYNC = (
    "apscheduler",
    "feedsync.emulator",
    "aiohttp.web",
    "importlib.metadata",
    "feedsync.daemon.service",
    "feedsync.daemon.server",
    "pymispwarninglists",
    "jsonschema",
)
DUMP = """\
import atexit, sys
atexit.register(lambda: open(sys.argv[1], "w").write("\\n".join(sorted(sys.modules))))
from feedsync.cli import main
sys.exit(main(sys.argv[2:]))
"""


async def test_a_sync_does_not_import_the_daemon_the_emulator_or_warninglists(
    emulator: Emulator, make_config: ConfigFactory, tmp_path: Path
) -> None:
    feed = tmp_path / "list.txt"
    feed.write_text("20.1.2.3\nbad.example\n")
    make_config(emulator.url, f"- {{name: plain, type: csv, url: '{feed}', supplier: S}}\n")
    out = tmp_path / "modules.txt"
    argv = [
        sys.executable,
        "-c",
        DUMP,
        str(out),
        "sync",
        "--config",
        str(tmp_path / "feedsync.yaml"),
    ]
    env = {**os.environ, "CT_PASSWORD": PASSWORD}
    # A process of its own, on this loop: the emulator answers from it meanwhile.
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 120)
    assert process.returncode == 0, (stdout[-1500:] + stderr[-3000:]).decode()
    modules = set(out.read_text().split())
    assert "feedsync.sync" in modules and "aiohttp" in modules, "the sync ran"
    loaded = [name for name in NOT_FOR_A_SYNC if name in modules]
    assert loaded == [], f"a sync imported {loaded}"
