"""Generate realistic CSV feeds for benchmarks: ``python bench/generate.py N OUT [--seed S]``.

``--first K`` numbers the rows from K (default 0), so that feeds generated
with ranges apart share no indicator.

Rows mix URLs, domains, IPv4 addresses, MD5 and SHA256 hashes, with context
columns and comma-separated tags, in URLhaus's layout (commented header,
quoted fields). ``--churn C --previous FILE`` writes the next version of a feed:
a fraction C of its rows changed, split evenly between removals, updates (a
context field changed) and additions.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import random
import sys
from collections.abc import Iterator
from pathlib import Path

HEADER = "# id,dateadded,indicator,status,threat,tags,reporter\n"
THREATS = ("malware_download", "phishing", "botnet_cc", "exploit")
TAGS = ("elf", "mips", "Mozi", "exe", "AgentTesla", "js", "msi", "tlp:white", "32-bit", "arm")


def indicator(rng: random.Random, n: int) -> str:
    kind = n % 5
    if kind == 0:
        return f"http://host{n}.example/path/{rng.randrange(10**6)}/payload.bin"
    if kind == 1:
        return f"bad-{n}.example"
    if kind == 2:
        return f"{10 + n % 200}.{(n >> 8) % 256}.{(n >> 16) % 256}.{n % 251 + 1}"
    if kind == 3:
        return hashlib.md5(str(n).encode()).hexdigest()
    return hashlib.sha256(str(n).encode()).hexdigest()


def row(rng: random.Random, n: int, status: str | None = None) -> list[str]:
    tags = ",".join(rng.sample(TAGS, rng.randrange(0, 4))) or "None"
    return [
        str(n),
        "2026-11-20 12:00:00",
        indicator(rng, n),
        status or rng.choice(("online", "offline")),
        rng.choice(THREATS),
        tags,
        "bench",
    ]


def first_version(count: int, seed: int, first: int = 0) -> Iterator[list[str]]:
    rng = random.Random(seed)
    for n in range(first, first + count):
        yield row(rng, n)


def next_version(previous: Path, churn: float, seed: int) -> Iterator[list[str]]:
    rng = random.Random(seed + 1)
    with previous.open(newline="") as handle:
        rows = csv.reader(line for line in handle if not line.startswith("#"))
        top = count = 0
        for fields in rows:
            top = max(top, int(fields[0]))
            count += 1
            roll = rng.random()
            if roll < churn / 3:
                continue
            if roll < 2 * churn / 3:
                fields[3] = "offline" if fields[3] == "online" else "online"
            yield fields
    added = 0
    target = max(1, int(count * churn / 3)) if churn else 0
    while added < target:
        added += 1
        yield row(rng, top + added)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int)
    parser.add_argument("out", type=Path)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--churn", type=float, default=0.0)
    parser.add_argument("--previous", type=Path)
    parser.add_argument("--first", type=int, default=0, help="the first row's number")
    args = parser.parse_args(argv)
    rows = (
        next_version(args.previous, args.churn, args.seed)
        if args.previous
        else first_version(args.rows, args.seed, args.first)
    )
    with args.out.open("w", newline="") as out:
        out.write(HEADER)
        csv.writer(out, quoting=csv.QUOTE_ALL, lineterminator="\n").writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
