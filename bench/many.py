"""Benchmark a cycle of many feeds: ``python bench/many.py [--feeds 200] [--scale 1.0]``.

A configuration of FEEDS CSV feeds of mixed sizes (by default 4 of 150,000
rows, 16 of 20,000 and 180 small ones of 100 to 5,000: about 1.2M rows), served
over HTTP by bench/feedserver.py (``ETag``, ``Last-Modified``, 304s) to the
strict emulator; each feed numbers its rows apart from the others'. Three
feeds in four have a supplier of their own; the last quarter shares ten
suppliers between them, large feeds among both. ``--scale`` multiplies every
size (``--scale 0.05`` is a smoke test).

``feedsync sync`` runs as a process of its own (through bench/launch.py, so
that its peak RSS is its own) for each cycle:

- full cycle: every feed new (the first sync of every supplier);
- changed cycle: every feed at 1% churn;
- all-unchanged cycle: the server answers every feed with 304;
- all-unchanged, same bodies: every file touched (new validators, a 200 and
  the whole body each), the client finds every SHA-256 unchanged;
- the cycle after: every feed a 304 again (the new validators were kept).

Printed per cycle: wall and CPU seconds, peak RSS, the indicator requests
and bytes sent to CyberTrace (÷min: over the minimal JSON of the changes),
what the feed server answered, the most feed requests it answered at once
(the client's bound on concurrent fetches) and every call the emulator
logged ("API calls": suppliers, tags and indicators). No split by phase:
with feeds fetched concurrently, each feed's phases count the CPU of the
whole process, so their sums overlap (feedsync/phases.py). The target of issue 18 item 5:
the all-unchanged cycle under 5 s of CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile
from collections import Counter
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import generate  # noqa: E402 -- bench/ is not a package
import run  # noqa: E402

HEADER = """\
cybertrace: {{url: "{url}", username: {user}, password: {password}, max_batch_indicators: 20000}}
state: {{path: "{state}"}}
"""
FEED = """\
  - {{name: {name}, type: csv, url: "{url}", supplier: {supplier}, indicator: indicator,
      context: {{status: status, threat: threat}}, tags_field: tags, max_delete_ratio: 1.0}}
"""
SMALL = (100, 500, 1_000, 2_000, 5_000)
SHARED = 10  # suppliers shared by the last quarter of the feeds
TARGET_UNCHANGED_CPU = 5.0
LOG_LIMIT = 200  # feedsync.emulator.serving.SERVE_LOG_LIMIT: the requests a served emulator logs


def layout(count: int, scale: float) -> list[tuple[str, int, str]]:
    """(feed name, rows, supplier) of each feed: mixed sizes, the large and
    medium ones spread over both the own and the shared suppliers."""
    large, medium = max(1, count // 50), max(1, count // 12)
    sizes = [SMALL[index % len(SMALL)] for index in range(count)]
    for index in range(0, count, max(1, count // large))[:large]:
        sizes[index] = 150_000
    spread = [i for i in range(3, count, max(1, count // medium)) if sizes[i] != 150_000]
    for index in spread[:medium]:
        sizes[index] = 20_000
    own = count - count // 4
    return [
        (
            f"feed{index:03d}",
            max(10, int(size * scale)),
            f"S{index:03d}" if index < own else f"Shared{(index - own) % SHARED}",
        )
        for index, size in enumerate(sizes)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every feed's rows")
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument(
        "--calls", action="store_true", help="the API calls of each cycle by kind (the last 200)"
    )
    args = parser.parse_args(argv)
    run.compiled()
    work = Path(tempfile.mkdtemp(prefix="feedsync-many-"))
    servers: list[run.Server] = []
    try:
        feeds = layout(args.feeds, args.scale)
        served, second = work / "feeds", work / "v2"
        served.mkdir()
        second.mkdir()
        first_row = 0
        for name, rows, _supplier in feeds:
            v1 = served / f"{name}.csv"
            generate.main([str(rows), str(v1), "--first", str(first_row), "--seed", name[4:]])
            generate.main(
                ["0", str(second / v1.name), "--previous", str(v1), "--churn", str(args.churn)]
            )
            first_row += rows * 2
        emulator = run.Emulator(sink=False)
        servers.append(emulator)
        http = run.FeedServer(served)
        servers.append(http)
        config = work / "feedsync.yaml"
        text = HEADER.format(
            url=emulator.url, user=run.USER, password=run.PASSWORD, state=work / "s.db"
        )
        suppliers = list(dict.fromkeys(supplier for _, _, supplier in feeds))
        text += "suppliers:\n" + "".join(f"  {s}: {{confidence: 50}}\n" for s in suppliers)
        text += "feeds:\n" + "".join(
            FEED.format(name=name, url=f"{http.url}/{name}.csv", supplier=supplier)
            for name, _rows, supplier in feeds
        )
        config.write_text(text)
        total = sum(rows for _, rows, _ in feeds)
        size = sum(f.stat().st_size for f in served.iterdir())
        largest = max(rows for _, rows, _ in feeds)
        print(
            f"{len(feeds)} feeds ({total:,} rows, {size:,} bytes; the largest {largest:,} rows),"
            f" {len(suppliers)} suppliers ({SHARED} shared), churn {args.churn:.1%}"
        )
        print("at the start: " + run.load())
        print(
            run.row(
                "cycle", "wall s", "CPU s", "peak MB", "requests", "bytes sent", "÷min", "feed",
                "most", "API calls",
            )
        )  # fmt: skip
        argv = [*run.CLI, "--log-format", "json", "sync", "--config", str(config)]

        def cycle(name: str) -> run.Measure:
            emulator.call("DELETE", "/emulator/requests")
            http.stats("DELETE")
            measure = run.measured(argv)
            stats = http.stats()
            measure.feed = run.answered(stats)
            minimal = emulator.call("GET", "/emulator/minimal")
            calls = emulator.call("GET", "/emulator/requests")
            assert isinstance(minimal, dict) and isinstance(calls, list)
            log = measure.log
            sent, requests = int(str(log.get("bytes_sent", 0))), int(str(log.get("requests", 0)))
            print(
                run.row(
                    name,
                    f"{measure.wall:.2f}",
                    f"{measure.cpu:.2f}",
                    f"{measure.peak_mb:.0f}",
                    str(requests),
                    f"{sent:,}",
                    run.ratio(sent, int(minimal["bytes"])),
                    measure.feed,
                    str(stats.get("most", 0)),
                    # The emulator keeps the last LOG_LIMIT calls.
                    f"≥{len(calls)}" if len(calls) >= LOG_LIMIT else str(len(calls)),
                ),
                flush=True,
            )
            if args.calls:
                kinds = Counter(
                    f"{c['method']} {re.sub(r'/suppliers/[^/]+', '/suppliers/{s}', c['path'])}"
                    f" {c['status']}"
                    for c in calls
                )
                print("    " + ", ".join(f"{kind} x{n}" for kind, n in kinds.most_common()))
            return measure

        cycle("full cycle (all new)")
        for path in second.iterdir():
            os.replace(path, served / path.name)
        cycle("changed cycle (all 1%)")
        unchanged = cycle("all-unchanged (304)")
        for path in served.iterdir():
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 2_000_000_000))
        same = cycle("all-unchanged (bodies)")
        # The new validators were kept: every feed is a 304 again, not a download.
        cycle("the cycle after (304)")
        print("at the end: " + run.load())
        print()
        for label, measure in (("304", unchanged), ("same bodies", same)):
            met = "yes" if measure.cpu < TARGET_UNCHANGED_CPU else "NO"
            print(
                f"all-unchanged cycle of {len(feeds)} feeds ({label}), CPU:"
                f" {measure.cpu:.2f} s (target < {TARGET_UNCHANGED_CPU:g} s): {met}"
            )
    finally:
        for server in reversed(servers):
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
