"""The benchmark's baselines, each run as a process of its own.

``baseline.py parse FILE``: read and split the CSV in Python, nothing else.
``baseline.py naive FEED URL USER PASSWORD``: a whole-file refresh tool: the
feed (a path, or an http(s):// URL it downloads) read row by row, every row as
JSON (indicator and context), PUT to CyberTrace once, in batches of 20,000.
Prints the requests and bytes it sent as JSON.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import sys
import urllib.request
from collections.abc import Iterable, Iterator
from itertools import islice
from pathlib import Path

BATCH = 20_000
SUPPLIER = "Naive"


def rows(path: Path) -> Iterator[list[str]]:
    with path.open(newline="") as handle:
        yield from _csv(handle)


def downloaded(url: str) -> Iterator[list[str]]:
    with urllib.request.urlopen(url) as response:
        yield from _csv(io.TextIOWrapper(response, encoding="utf-8", newline=""))


def _csv(lines: Iterable[str]) -> Iterator[list[str]]:
    return csv.reader(line for line in lines if not line.startswith("#"))


def parse(path: Path) -> int:
    return sum(1 for _ in rows(path))


def naive(feed: str, url: str, user: str, password: str) -> dict[str, int]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    headers = {
        "Authorization": f"Basic {token}",
        "Accept": "application/json",
        "Content-Type": "application/json",
    }
    api = f"{url}/api/1.2/suppliers"
    _send("POST", api, [{"name": SUPPLIER, "confidence": 50, "retention": 10080}], headers)
    source = downloaded(feed) if feed.startswith(("http://", "https://")) else rows(Path(feed))
    items = (
        {"indicator": row[2], "context": {"status": row[3], "threat": row[4]}} for row in source
    )
    requests = sent = 0
    while batch := list(islice(items, BATCH)):
        sent += _send("PUT", f"{api}/{SUPPLIER}/indicators", batch, headers)
        requests += 1
    return {"requests": requests, "bytes": sent}


def _send(method: str, url: str, body: object, headers: dict[str, str]) -> int:
    data = json.dumps(body, separators=(",", ":")).encode()
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request) as response:
        response.read()
    return len(data)


def main(argv: list[str]) -> int:
    if argv[:1] == ["parse"] and len(argv) == 2:
        print(json.dumps({"rows": parse(Path(argv[1]))}))
        return 0
    if argv[:1] == ["naive"] and len(argv) == 5:
        print(json.dumps(naive(*argv[1:])))
        return 0
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
