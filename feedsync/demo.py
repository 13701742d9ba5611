"""The demo: sync the bundled example feeds into the bundled emulator, twice.

``python -m feedsync.demo [CONFIG]`` starts the CyberTrace emulator on a free
port, runs one cycle of ``config/demo.yaml`` (shows what was sent), shows what
the emulator now holds, has one URL of the first local CSV feed go offline
upstream (a copy of the file, in the temporary directory), runs a second cycle
(shows that only that change is sent: the unchanged feeds send nothing), prints
``feedsync status`` and ends with ``feedsync why`` of the changed indicator.
State lives in a temporary directory, so every run starts from an empty CyberTrace.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

from feedsync import config, logs, status, why
from feedsync import render as report
from feedsync.emulator import Emulator
from feedsync.store import Store, journal
from feedsync.store.story import last_changed
from feedsync.sync import Cycle

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "config" / "demo.yaml"


async def demo(config_path: Path) -> int:
    emulator = Emulator(user="feedsync", password="feedsync")  # noqa: S106 -- the demo's own emulator
    url = await emulator.start()
    with tempfile.TemporaryDirectory(prefix="feedsync-demo-") as state_dir:
        env = {
            **os.environ,
            "FEEDSYNC_DEMO_URL": url,
            "FEEDSYNC_DEMO_STATE": str(Path(state_dir) / "state.db"),
        }
        loaded = config.load(config_path, env=env)
        store = Store.open(loaded.state.path)
        try:
            print(f"== CyberTrace emulator at {url}; first sync of {config_path.name}")
            feeds, suppliers = await Cycle(loaded, store).run()
            print(report.cycle(feeds, suppliers, dry_run=False))
            print("\n== What the emulator holds now")
            for supplier in dict.fromkeys(f.supplier for f in loaded.feeds):
                held = emulator.indicators(supplier)
                print(f"supplier {supplier}: {len(held)} indicators")
                for value in sorted(held)[:3]:
                    item = held[value]
                    tags = sorted(item.tags)
                    print(f"  {item.type:<6} {value}  context={item.context}  tags={tags}")
            changed = _go_offline(loaded, Path(state_dir))
            if changed is None:
                print("\n== Second sync: the feeds did not change, so nothing is sent")
            else:
                loaded = changed
                print("\n== Second sync: one URL went offline upstream; only that is sent")
            emulator.clear_log()
            feeds, suppliers = await Cycle(loaded, store).run()
            print(report.cycle(feeds, suppliers, dry_run=False))
            print(f"indicator requests sent: {len(emulator.indicator_requests())}")
            print("\n== feedsync status")
            print(status.as_text(status.snapshot(loaded, store)))
            changed_value = last_changed(store)
            if changed_value is not None:
                print(f"\n== feedsync why {changed_value}")
                print(why.as_text(why.read(store, changed_value, journal.SHOWN)[1]))
        finally:
            store.close()
            await emulator.stop()
    failed = any(f.result == "failed" for f in feeds) or any(s.error for s in suppliers)
    return 1 if failed else 0


def _go_offline(loaded: config.Config, directory: Path) -> config.Config | None:
    """The configuration with its first local CSV feed read from a copy in which
    the first URL that was online is offline; None when no feed has one."""
    for feed in loaded.feeds:
        path = Path(feed.url)
        if feed.type != "csv" or not path.is_file():
            continue
        text = path.read_text()
        if '"online"' not in text:
            continue
        copy = directory / path.name
        copy.write_text(text.replace('"online"', '"offline"', 1))
        moved = [dataclasses.replace(f, url=str(copy)) if f is feed else f for f in loaded.feeds]
        return dataclasses.replace(loaded, feeds=tuple(moved))
    return None


def main() -> int:
    logs.configure(level="warning", json=False)
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_CONFIG
    return asyncio.run(demo(path))


if __name__ == "__main__":
    raise SystemExit(main())
