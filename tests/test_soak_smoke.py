"""bench/soak.py at CI size: the daemon under short schedules keeps its RSS and descriptors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SOAK = Path(__file__).resolve().parents[1] / "bench" / "soak.py"


@pytest.mark.slow
def test_soak_smoke(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--duration", "12", "--rows", "5000", "--keep", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "soak: rss start" in out and "soak: fds start" in out and "soak: ok" in out
    log = (tmp_path / "daemon.log").read_text()
    assert '"feed": "flapping"' in log and '"result": "failed"' in log
    assert "Traceback" not in log, "nothing crashed"
