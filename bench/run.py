"""Benchmark real ``feedsync sync`` cycles: ``python bench/run.py [ROWS] [--churn C]``.

Generates a feed of ROWS rows and its next version at the churn
(bench/generate.py), starts the CyberTrace emulator in its own process, and
runs ``feedsync sync`` as a separate process for each cycle: an initial sync,
a steady cycle at the churn, and an unchanged one. Each process is measured
on its own (wall time, CPU time and peak RSS from the kernel), and its
``cycle.finished`` log line gives the split by phase (fetch+parse, normalize,
store+diff, upload); "other" is the rest of the process (interpreter start,
imports, configuration, state database). Requests and bytes are what the
cycle sent; "÷min" divides the bytes by the minimal JSON of the changes, as
the emulator logged them.

Two baselines run on the same file, each in its own process: parse-only
(read and split the CSV in Python) and a naive full re-upload (send every
indicator, as whole-file refresh tools do).
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
import generate  # noqa: E402 -- bench/ is not a package

USER, PASSWORD = "bench", "bench"
# No canary: its requests are not the changes' cost, which "÷min" compares with.
CONFIG = """\
cybertrace: {{url: "{url}", username: {user}, password: {password}, max_batch_indicators: 20000,
  canary: false}}
state: {{path: "{state}"}}
suppliers: {{Bench: {{confidence: 50}}}}
feeds:
  - {{name: bench, type: csv, url: "{feed}", supplier: Bench, indicator: indicator,
      context: {{status: status, threat: threat}}, tags_field: tags, max_delete_ratio: 1.0}}
"""
PHASES = (("fetch", "fetch+parse"), ("normalize", "normalize"), ("store", "store+diff"))


@dataclass(slots=True)
class Measure:
    """One process: what the kernel says of it, and what it said of itself."""

    wall: float
    cpu: float
    peak_mb: float
    log: dict[str, object] = field(default_factory=dict)
    out: str = ""


def measured(argv: list[str]) -> Measure:
    """Run ``argv`` to completion, measuring it alone (its output goes to files,
    so that the kernel's accounting of it can be read when it is reaped)."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err)
        _pid, status, usage = os.wait4(process.pid, 0)
        wall = time.perf_counter() - started
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if process.returncode:
        raise SystemExit(f"{' '.join(argv)} failed ({process.returncode}):\n{stderr}")
    cpu = usage.ru_utime + usage.ru_stime
    finished = _last_event(stderr, "cycle.finished")
    return Measure(wall, cpu, usage.ru_maxrss / 1024, finished, stdout)


def _last_event(stderr: str, name: str) -> dict[str, object]:
    found: dict[str, object] = {}
    for line in stderr.splitlines():
        if line.startswith("{"):
            event = json.loads(line)
            if event.get("event") == name:
                found = event
    return found


class Emulator:
    """The emulator as a process of its own, and its debug endpoints."""

    def __init__(self, *, sink: bool) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "feedsync.cli",
                "emulator",
                "--listen",
                "127.0.0.1:0",
                "--user",
                USER,
                "--password",
                PASSWORD,
                *(["--sink"] if sink else []),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if "listening on" not in line:
            raise SystemExit(f"the emulator did not start: {line!r}")
        self.url = line.split("listening on ", 1)[1].split()[0]
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        self.auth = {"Authorization": f"Basic {token}"}

    def call(self, method: str, path: str) -> object:
        request = urllib.request.Request(self.url + path, method=method, headers=self.auth)
        with urllib.request.urlopen(request) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("rows", type=int, nargs="?", default=100_000)
    parser.add_argument("--churn", type=float, default=0.01)
    parser.add_argument(
        "--sink", action="store_true", help="the emulator keeps no indicator (10M rows and more)"
    )
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="feedsync-bench-"))
    emulator = Emulator(sink=args.sink)
    try:
        first, second, feed = work / "v1.csv", work / "v2.csv", work / "feed.csv"
        generate.main([str(args.rows), str(first)])
        generate.main(["0", str(second), "--previous", str(first), "--churn", str(args.churn)])
        config = work / "feedsync.yaml"
        config.write_text(
            CONFIG.format(
                url=emulator.url, user=USER, password=PASSWORD, state=work / "s.db", feed=feed
            )
        )
        print(f"{args.rows:,} rows, churn {args.churn:.1%}, {second.stat().st_size:,} bytes")
        print(_row("phase", "wall s", "CPU s", "peak MB", "requests", "bytes sent", "÷min"))
        parse = measured([sys.executable, str(BENCH / "baseline.py"), "parse", str(second)])
        _print("parse-only baseline", parse)
        cycles = {}
        for name, version in (
            ("initial sync", first),
            ("steady cycle", second),
            ("unchanged cycle", second),
        ):
            shutil.copy(version, feed)
            emulator.call("DELETE", "/emulator/requests")
            cycles[name] = measured(
                [
                    sys.executable,
                    "-m",
                    "feedsync.cli",
                    "--log-format",
                    "json",
                    "sync",
                    "--config",
                    str(config),
                ]
            )
            minimal = emulator.call("GET", "/emulator/minimal")
            assert isinstance(minimal, dict)
            _print_cycle(name, cycles[name], int(minimal["bytes"]))
        naive = measured(
            [
                sys.executable,
                str(BENCH / "baseline.py"),
                "naive",
                str(second),
                emulator.url,
                USER,
                PASSWORD,
            ]
        )
        sent = json.loads(naive.out)
        _print("naive full re-upload", naive, sent["requests"], sent["bytes"])
        steady, initial = cycles["steady cycle"], cycles["initial sync"]
        print(
            f"steady CPU ÷ parse-only CPU: {steady.cpu / parse.cpu:.2f};"
            f" initial CPU ÷ naive CPU: {initial.cpu / naive.cpu:.2f}"
        )
    finally:
        emulator.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


def _print_cycle(name: str, cycle: Measure, minimal: int) -> None:
    log = cycle.log
    sent = int(str(log.get("bytes_sent", 0)))
    requests = int(str(log.get("requests", 0)))
    accounted = 0.0
    for key, label in PHASES:
        cpu = float(str(log.get(f"{key}_cpu", 0.0)))
        accounted += cpu
        print(_row(f"  {label}", f"{float(str(log.get(f'{key}_wall', 0.0))):.2f}", f"{cpu:.2f}"))
    upload = float(str(log.get("upload_cpu", 0.0)))
    accounted += upload
    print(
        _row(
            "  upload",
            f"{float(str(log.get('upload_wall', 0.0))):.2f}",
            f"{upload:.2f}",
            "",
            str(requests),
            f"{sent:,}",
            _ratio(sent, minimal),
        )
    )
    print(_row("  other (start-up)", "", f"{cycle.cpu - accounted:.2f}"))
    _print(name, cycle, requests, sent, minimal)


def _print(name: str, measure: Measure, requests: int = 0, sent: int = 0, minimal: int = 0) -> None:
    print(
        _row(
            name,
            f"{measure.wall:.2f}",
            f"{measure.cpu:.2f}",
            f"{measure.peak_mb:.0f}",
            str(requests),
            f"{sent:,}",
            _ratio(sent, minimal),
        ),
        flush=True,
    )


def _ratio(sent: int, minimal: int) -> str:
    """Bytes sent over the minimal JSON of the changes ("-" when nothing changed)."""
    return f"{sent / minimal:.2f}" if minimal else "-"


def _row(*cells: str) -> str:
    name, *rest = cells
    widths = (8, 8, 8, 9, 14, 6)
    return f"{name:<22}" + "".join(
        f" {cell:>{width}}" for cell, width in zip(rest, widths, strict=False)
    )


if __name__ == "__main__":
    raise SystemExit(main())
