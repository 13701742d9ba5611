"""Where a cycle's time goes: wall and CPU seconds per phase.

The phases are the steps of a cycle a user can act on: ``fetch`` (download
and read the body), ``normalize`` (canonical values of the rows read),
``store`` (stage, diff, apply), ``plan`` (the changed values of each supplier
into its pending operations) and ``upload`` (the supplier's settings and
canary, a refresh or resync planned there, send and acknowledge).
CPU is the process's, so with feeds fetched concurrently a phase may carry
some of another's; for one feed at a time it is exact.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

PhaseName = Literal["fetch", "normalize", "store", "plan", "upload"]
NAMES: tuple[PhaseName, ...] = ("fetch", "normalize", "store", "plan", "upload")


@dataclass(slots=True)
class Phases:
    """Seconds spent per phase, added up over a cycle (thread-safe)."""

    wall: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAMES, 0.0))
    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(NAMES, 0.0))
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _open: threading.local = field(default_factory=threading.local)

    @contextlib.contextmanager
    def timed(self, phase: PhaseName) -> Iterator[None]:
        """Count the time inside as ``phase``; a nested phase counts only once,
        in the innermost one."""
        outer = getattr(self._open, "phase", None)
        wall, cpu = time.perf_counter(), time.process_time()
        self._open.phase = phase
        try:
            yield
        finally:
            self._open.phase = outer
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            with self._lock:
                self.wall[phase] += wall
                self.cpu[phase] += cpu
                if outer is not None:
                    self.wall[outer] -= wall
                    self.cpu[outer] -= cpu

    def add(self, phase: PhaseName, wall: float, cpu: float) -> None:
        """Count time measured by hand (on the event loop, where work interleaves)."""
        with self._lock:
            self.wall[phase] += wall
            self.cpu[phase] += cpu

    def fields(self) -> dict[str, float]:
        """The figures as log fields: ``fetch_cpu``, ``fetch_wall``, ..."""
        out = {}
        for name in NAMES:
            out[f"{name}_cpu"] = round(self.cpu[name], 3)
            out[f"{name}_wall"] = round(self.wall[name], 3)
        return out
