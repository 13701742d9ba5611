"""A full read of a CSV feed in one process, timed by stage: ``python bench/fullread.py FEED``.

What the store thread does with a body before SQLite: ``parse_csv`` through
``normalized_batches`` with the built-in exclusion screen, then ``encode``
of each indicator, in bench/generate.py's layout. Prints the CPU seconds of
fetch+parse, normalize and encode (the minimum of ``--repeat`` runs, each in
a fresh process) and, with ``--digest``, a SHA-256 over every record,
indicator, Invalid and encoded row: two versions of the code that print the
same digest read the feed identically, row for row.
"""

from __future__ import annotations

import argparse
import hashlib
import resource
import subprocess
import sys

from feedsync.model import Indicator
from feedsync.normalize import normalized_batches
from feedsync.phases import Phases
from feedsync.safety.exclusions import BUILTIN, DEFAULT_EXPAND, compose
from feedsync.sources.csvfeed import CsvOptions, parse_csv
from feedsync.store.snapshot import encode


def read(path: str, digest: bool) -> str:
    options = CsvOptions(
        indicator="indicator",
        context=(("status", "status"), ("threat", "threat")),
        tags_field="tags",
    )
    screen = compose(BUILTIN, [], DEFAULT_EXPAND, "")
    phases = Phases()
    summed = hashlib.sha256()
    encoding = 0.0
    with open(path, "rb") as stream:
        items = parse_csv(stream, options, "bench")
        for batch in normalized_batches(items, ("bench",), phases, 5000, screen.screened):
            start = _cpu()
            rows = [encode(i) if isinstance(i, Indicator) else i for i in batch]
            encoding += _cpu() - start
            if digest:
                for item in (*batch, *rows):
                    summed.update(repr(item).encode())
    cpu = phases.fields()
    return f"{cpu['fetch_cpu']:.3f} {cpu['normalize_cpu']:.3f} {encoding:.3f} {summed.hexdigest()}"


def _cpu() -> float:
    used = resource.getrusage(resource.RUSAGE_SELF)
    return used.ru_utime + used.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("feed")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--digest", action="store_true")
    parser.add_argument("--once", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.once:
        print(read(args.feed, args.digest))
        return
    runs = []
    for _ in range(args.repeat):
        argv = [sys.executable, __file__, args.feed, "--once"] + ["--digest"] * args.digest
        runs.append(subprocess.run(argv, check=True, capture_output=True, text=True).stdout.split())
    fetch, normalize, encoding = (min(float(run[at]) for run in runs) for at in range(3))
    print(f"fetch+parse {fetch:.2f} s, normalize {normalize:.2f} s, encode {encoding:.2f} s CPU")
    if args.digest:
        print(
            "digest", runs[0][3], "(every run the same)" if len({r[3] for r in runs}) == 1 else ""
        )


if __name__ == "__main__":
    main()
