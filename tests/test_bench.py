"""The benchmark feed generator: a valid feed, and a next version with the asked churn."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from feedsync.csvfeed import CsvOptions, open_body, parse_csv
from feedsync.model import Record
from feedsync.normalize import normalize

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import generate


def values(path: Path) -> dict[str, tuple[tuple[str, str], ...]]:
    options = CsvOptions(indicator="indicator", context=(("status", "status"),), tags_field="tags")
    with open_body(path, "bench") as stream:
        records = [r for r in parse_csv(stream, options, "bench") if isinstance(r, Record)]
    assert all(not hasattr(normalize(r), "reason") for r in records), "every value is valid"
    return {r.value: r.context for r in records}


def test_generated_feed_and_churn(tmp_path: Path) -> None:
    first, second = tmp_path / "v1.csv", tmp_path / "v2.csv"
    generate.main(["3000", str(first), "--seed", "7"])
    generate.main(["0", str(second), "--previous", str(first), "--churn", "0.3", "--seed", "7"])
    old, new = values(first), values(second)
    assert len(old) == 3000
    removed = old.keys() - new.keys()
    added = new.keys() - old.keys()
    updated = {v for v in old.keys() & new.keys() if old[v] != new[v]}
    for part in (removed, added, updated):
        assert 200 < len(part) < 400, "each a third of the 30% churn"


async def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import run  # noqa: PLC0415 -- bench/ is on sys.path only for these tests

    assert await run.main(["2000", "--churn", "0.05"]) == 0
    out = capsys.readouterr().out
    for phase in (
        "parse-only baseline",
        "initial sync",
        "steady cycle",
        "unchanged cycle",
        "naive full re-upload",
    ):
        assert phase in out
    steady = next(line for line in out.splitlines() if line.startswith("steady cycle"))
    assert float(steady.split()[-1]) >= 1.0, "bytes sent cannot be below the minimal JSON"
