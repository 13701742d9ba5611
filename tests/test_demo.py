"""The README's first command: the demo, and the emulator command it relies on."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import pytest
from conftest import free_port

from feedsync import demo

ROOT = Path(__file__).resolve().parents[1]


async def test_demo_syncs_the_bundled_feeds(capsys: pytest.CaptureFixture[str]) -> None:
    assert await demo.demo(ROOT / "config" / "demo.yaml") == 0
    out = capsys.readouterr().out
    assert "supplier URLhaus: 9 indicators" in out
    assert "supplier Botnet_C2: 8 indicators" in out
    # One URL goes offline upstream between the two syncs: only it is sent again...
    assert "indicator requests sent: 1" in out
    assert "supplier Botnet_C2        sent       added      0  updated      0" in out
    # ... and the demo ends with its story.
    story = out[out.index("== feedsync why 198.51.100.23/i") :]
    assert "  urlhaus (supplier URLhaus): context reference=" in story
    assert "status=offline" in story
    journal = story[story.index("Journal (newest first):") :].splitlines()[1:]
    assert [line.split("UTC  ")[1] for line in journal] == [
        "sent to URLhaus as updated (listed by feed urlhaus)",
        "updated by feed urlhaus: context.status",
        "sent to URLhaus as new (listed by feed urlhaus)",
        "added by feed urlhaus",
    ]


async def test_emulator_command_serves_until_sigterm() -> None:
    port = free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        "emulator",
        "--listen",
        f"127.0.0.1:{port}",
        "--user",
        "u",
        "--password",
        "p",
        "--api-versions",
        "1.1,1.2",
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert process.stdout is not None
    line = await asyncio.wait_for(process.stdout.readline(), 20)
    assert line.decode().strip() == f"emulator listening on http://127.0.0.1:{port} (API 1.1,1.2)"
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /api/1.0/suppliers HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert b" 401 " in await reader.readline()
    writer.close()
    process.send_signal(signal.SIGTERM)
    assert await asyncio.wait_for(process.wait(), 20) == 0
