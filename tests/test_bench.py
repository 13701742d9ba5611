"""The benchmark feed generator: a valid feed, and a next version with the asked churn."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from feedsync.body import open_body
from feedsync.csvfeed import CsvOptions, parse_csv
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


def test_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import run  # noqa: PLC0415 -- bench/ is on sys.path only for these tests

    assert run.main(["2000", "--churn", "0.05"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    for phase in (
        "parse-only baseline",
        "initial sync",
        "steady cycle",
        "unchanged cycle",
        "naive full re-upload",
        "  fetch+parse",
        "  normalize",
        "  store+diff",
        "  upload",
    ):
        assert any(line.startswith(phase) for line in lines), phase
    steady = next(line for line in lines if line.startswith("steady cycle"))
    cells = steady.split()
    assert int(cells[-3]) == 2, "one PUT and one DELETE for the churn"
    assert 1.0 <= float(cells[-1]) <= 1.05, "bytes sent against the minimal JSON of the changes"
    unchanged = next(line for line in lines if line.startswith("unchanged cycle"))
    assert unchanged.split()[-3] == "0", "an unchanged feed sends nothing"


def test_exclusions_benchmark_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    import exclusions  # noqa: PLC0415 -- bench/exclusions.py, not feedsync.exclusions

    assert exclusions.main(["2000", "--lists", "public-dns-v4,url-shortener"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["lists"] == 2 and result["values"] == 2000
    assert result["ipv4_intervals"] > 10_000, "public-dns-v4 loaded"
    assert 0 < result["excluded"] < 2000
