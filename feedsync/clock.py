"""The one wall clock feedsync reads for what it stores and compares across runs.

It stamps acknowledgements, plans and holds, and times retention, refresh
deadlines, the run history and status's ages.

Passed to the store, whose cycle and connection read it (a ``Clock`` seam), so
that a test moves time by moving a fake clock, not by patching ``time.time``
for the whole process. Durations (how long a fetch or a cycle took) are not
its: they read ``time.monotonic``, which a moved wall clock must not bend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (stamps, retention, refresh)."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The machine's clock."""

    def now(self) -> float:
        return time.time()


SYSTEM: Clock = SystemClock()
