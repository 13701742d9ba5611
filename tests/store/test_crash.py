"""SIGKILL `feedsync sync` at seeded random moments: the next run always converges."""

from __future__ import annotations

import asyncio
import os
import random
import sys
from pathlib import Path

import pytest
from conftest import PASSWORD, FeedServer

from feedsync.emulator import Emulator
from feedsync.emulator.faults import Faults

CONFIG = """\
cybertrace:
  url: {url}
  username: feedsync
  password: ${{CT_PASSWORD}}
  max_batch_indicators: 50
  concurrency: 2
  retry: {{attempts: 3, initial_delay: 0.01, max_delay: 0.05}}
state:
  path: {state}
suppliers:
  Demo: {{confidence: 50}}
feeds:
  - {{name: big, type: csv, url: "{feed}", supplier: Demo, tags: [crash]}}
"""
KILLS_PER_PHASE = 14


async def sync_once(config: Path, *args: str, kill_after: float | None) -> int | None:
    """Run `feedsync sync`; SIGKILL it after ``kill_after`` seconds. None when killed."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "feedsync.cli",
        "sync",
        "-c",
        str(config),
        *args,
        env={**os.environ, "CT_PASSWORD": PASSWORD},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        return await asyncio.wait_for(process.wait(), kill_after)
    except TimeoutError:
        process.kill()
        await process.wait()
        return None


async def phase(config: Path, rng: random.Random, *args: str) -> int:
    kills = 0
    for _ in range(KILLS_PER_PHASE):
        if await sync_once(config, *args, kill_after=rng.uniform(0.3, 2.2)) is None:
            kills += 1
    assert await sync_once(config, *args, kill_after=120) == 0
    return kills


@pytest.mark.slow
async def test_kills_at_random_moments_lose_nothing(
    tmp_path: Path, emulator: Emulator, feed_server: FeedServer
) -> None:
    rng = random.Random(20261123)
    first = [f"host-{i:05d}.example" for i in range(30000)]
    url = feed_server.set("big.txt", "".join(f"{v}\n" for v in first))
    config = tmp_path / "feedsync.yaml"
    config.write_text(CONFIG.format(url=emulator.url, state=tmp_path / "s.db", feed=url))
    emulator.faults = Faults(latency=0.05)

    kills = await phase(config, rng)
    assert emulator.indicators("Demo").keys() == set(first)

    second = first[12000:] + [f"new-{i:04d}.example" for i in range(6000)]
    feed_server.set("big.txt", "".join(f"{v}\n" for v in second))
    kills += await phase(config, rng, "--force")
    held = emulator.indicators("Demo")
    assert held.keys() == set(second)
    assert all(indicator.tags == {"CRASH"} for indicator in held.values())
    assert kills >= 20

    emulator.clear_log()
    assert await sync_once(config, kill_after=60) == 0
    assert emulator.indicator_requests() == [], "the store agrees with CyberTrace"
