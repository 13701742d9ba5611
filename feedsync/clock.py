"""The one clock feedsync reads: wall seconds for what is stored and compared
across runs, monotonic seconds for durations.

Passed to the store and the cycle (a ``Clock`` seam) so that a test moves time
by moving a fake clock, not by patching ``time.time`` for the whole process.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float:
        """Wall-clock seconds since the epoch (stamps, retention, refresh)."""
        ...

    def monotonic(self) -> float:
        """Seconds that only go forward (how long something took)."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The machine's clocks."""

    def now(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM: Clock = SystemClock()
