"""Benchmark real sync cycles against the emulator: ``python bench/run.py [ROWS] [--churn C]``.

Generates a feed of ROWS rows (bench/generate.py), then measures, in one
process: an initial sync, a steady cycle at the given churn, an unchanged
cycle, and two baselines on the same file: parse-only (read and split the CSV)
and a naive full re-upload (PUT every indicator, as whole-file refresh tools
do). For each it prints wall time, CPU time, peak RSS so far, requests, bytes
sent, and bytes sent divided by the minimal JSON of the changes.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
import generate

from feedsync import config, logs
from feedsync.emulator import Emulator
from feedsync.store import Store
from feedsync.sync import Cycle

CONFIG = """\
cybertrace: {{url: "{url}", username: u, password: p, max_batch_indicators: 20000}}
state: {{path: "{state}"}}
suppliers: {{Bench: {{confidence: 50}}}}
feeds:
  - {{name: bench, type: csv, url: "{feed}", supplier: Bench, indicator: indicator,
      context: {{status: status, threat: threat}}, tags_field: tags, max_delete_ratio: 1.0}}
"""


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def measure(name: str, work: Callable[[], Awaitable[tuple[int, int, int]]]) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    requests, sent, minimal = await work()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ratio = f"{sent / minimal:6.2f}" if minimal else "     -"
    print(
        f"{name:<22} {wall:8.2f} {cpu:8.2f} {rss_mb():9.0f} {requests:9d} {sent:13d} {ratio}",
        flush=True,
    )


def parse_only(path: Path) -> int:
    with path.open(newline="") as handle:
        return sum(1 for _ in csv.reader(line for line in handle if not line.startswith("#")))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    parser.add_argument("--churn", type=float, default=0.01)
    args = parser.parse_args(argv)
    logs.configure(level="warning", json=True)
    work = Path(tempfile.mkdtemp(prefix="feedsync-bench-"))
    try:
        first, second, feed = work / "v1.csv", work / "v2.csv", work / "feed.csv"
        generate.main([str(args.rows), str(first)])
        generate.main(["0", str(second), "--previous", str(first), "--churn", str(args.churn)])
        emulator = Emulator(user="u", password="p")
        url = await emulator.start()
        loaded = config.parse(CONFIG.format(url=url, state=work / "s.db", feed=feed))
        store = Store.open(loaded.state.path)
        print(f"{args.rows} rows, churn {args.churn:.1%}")
        print(
            f"{'phase':<22} {'wall s':>8} {'cpu s':>8} {'peak MB':>9} {'requests':>9}"
            f" {'bytes sent':>13} {'÷min':>6}"
        )

        async def cycle(version: Path) -> tuple[int, int, int]:
            shutil.copy(version, feed)
            emulator.clear_log()
            _, suppliers = await Cycle(loaded, store).run()
            sent = suppliers[0].sent
            return sent.requests, sent.bytes, _minimal(emulator)

        async def parse() -> tuple[int, int, int]:
            parse_only(second)
            return 0, 0, 0

        async def naive() -> tuple[int, int, int]:
            body = (
                b"["
                + b",".join(
                    orjson.dumps(
                        {"indicator": row[2], "context": {"status": row[3], "threat": row[4]}}
                    )
                    for row in csv.reader(
                        line for line in second.open(newline="") if not line.startswith("#")
                    )
                )
                + b"]"
            )
            return 1, len(body), 0

        await measure("parse-only baseline", parse)
        await measure("initial sync", lambda: cycle(first))
        await measure("steady cycle", lambda: cycle(second))
        await measure("unchanged cycle", lambda: cycle(second))
        await measure("naive full re-upload", naive)
        store.close()
        await emulator.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _minimal(emulator: Emulator) -> int:
    """The minimal JSON of the changes: each changed indicator's body once, in
    one array per method, as logged by the emulator."""
    items: dict[tuple[str, str], int] = {}
    for request in emulator.indicator_requests():
        for item in request.json if isinstance(request.json, list) else []:
            items[(request.method, str(item["indicator"]))] = len(orjson.dumps(item))
    if not items:
        return 0
    methods = {method for method, _value in items}
    return sum(items.values()) + len(items) - len(methods) + 2 * len(methods)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
