"""The cost of exclusions: loading MISP warninglists into feedsync's tables, and
screening canonical indicators against them and every built-in.

``exclusions.py [N] [--lists all]`` loads the lists (``all``: every list the
installed pymispwarninglists ships), then looks up N generated values (IPv4,
IPv6, domains, URLs, MD5 and SHA256, a few of them on the lists) and prints one
JSON line: load seconds (wall and CPU), the resident memory the tables added,
the lookup CPU seconds and how many values were excluded.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import time
from pathlib import Path

from feedsync.model import Kind
from feedsync.safety.exclusions import BUILTIN
from feedsync.safety.warninglists import chosen, screen_for


def rss_bytes() -> int:
    """The process's resident memory now (not its peak)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def values(count: int, seed: int) -> list[tuple[Kind, str]]:
    rng = random.Random(seed)
    words = ["evil", "cdn", "login", "update", "secure", "mail", "api", "files", "bit", "google"]
    tlds = ["com", "net", "org", "ru", "cn", "io", "ly", "xyz"]
    out: list[tuple[Kind, str]] = []
    for number in range(count):
        pick = number % 20
        if pick < 8:
            address = ".".join(str(rng.randrange(1, 255)) for _ in range(4))
            out.append((Kind.IPV4, address))
        elif pick < 9:
            out.append((Kind.IPV6, f"2001:{rng.randrange(1, 65535):x}::{rng.randrange(65535):x}"))
        elif pick < 14:
            host = f"{rng.choice(words)}{rng.randrange(10000)}.{rng.choice(tlds)}"
            if pick == 13:
                host = f"www{rng.randrange(100)}.{rng.choice(words)}.{rng.choice(tlds)}"
            out.append((Kind.DOMAIN, host))
        elif pick < 18:
            host = f"{rng.choice(words)}{rng.randrange(1000)}.{rng.choice(tlds)}"
            out.append((Kind.URL, f"{host}/{rng.choice(words)}/{rng.randrange(10**6)}.php"))
        elif pick < 19:
            out.append((Kind.MD5, f"{rng.getrandbits(128):032X}"))
        else:
            out.append((Kind.SHA256, f"{rng.getrandbits(256):064X}"))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("count", type=int, nargs="?", default=1_000_000)
    parser.add_argument("--lists", default="all", help="warninglist selectors, comma-separated")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    selectors = tuple(s for s in args.lists.split(",") if s)

    before = rss_bytes()
    wall, cpu = time.perf_counter(), time.process_time()
    screen = screen_for(BUILTIN, selectors, 24)
    load_wall, load_cpu = time.perf_counter() - wall, time.process_time() - cpu
    tables = rss_bytes() - before

    sample = values(args.count, args.seed)
    reason = screen.reason
    cpu = time.process_time()
    excluded = sum(1 for kind, value in sample if reason(kind, value) is not None)
    lookup_cpu = time.process_time() - cpu

    result = {
        "lists": len(chosen(selectors)),
        "ipv4_intervals": len(screen.v4),
        "ipv6_intervals": len(screen.v6),
        "names": len(screen.names),
        "patterns": sum(map(len, screen.patterns.values())),
        "load_wall_s": round(load_wall, 2),
        "load_cpu_s": round(load_cpu, 2),
        "tables_rss_mb": round(tables / 2**20, 1),
        "values": args.count,
        "lookup_cpu_s": round(lookup_cpu, 3),
        "lookup_ns_per_value": round(lookup_cpu / max(args.count, 1) * 1e9),
        "excluded": excluded,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
