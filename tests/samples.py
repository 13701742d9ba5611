"""The real feed samples in ../shared/samples (outside the repository)."""

from __future__ import annotations

from pathlib import Path

import pytest

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def sample(relative: str) -> Path:
    """A file from ../shared/samples, or skip the test where that folder is absent."""
    path = SAMPLES / relative
    if not path.exists():
        pytest.skip(f"{path} not present (../shared/samples is outside the repository)")
    return path
