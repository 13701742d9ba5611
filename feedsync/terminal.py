"""A progress line on the terminal while ``feedsync sync`` works.

Drawn on stderr with ``\\r`` (no dependency), from a thread of its own: a
terminal that stops reading (Ctrl-S, a stalled ssh) then stops only the line,
never the event loop. Redrawn at most ``1 / interval`` times a second, cut to
the terminal's width (a wrapped line cannot be redrawn in place), and cleared
at the end. Log lines go to the same stderr: while the line is shown, stderr is
a wrapper that clears it before anything else is written, and the next tick
draws it again below.
"""

from __future__ import annotations

import os
import sys
import threading
from types import TracebackType
from typing import Any, TextIO

from feedsync.progress import Lined

INTERVAL = 0.2
CLEAR = "\r\x1b[K"


class Terminal:
    """``with Terminal(board):`` shows ``board``'s line on stderr meanwhile."""

    def __init__(self, board: Lined, stream: TextIO | None = None, interval: float = INTERVAL):
        self.board = board
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._shown = ""
        self._at_start = True  # whether stderr's cursor is at the start of a line
        self._thread = threading.Thread(target=self._draw, name="feedsync-progress", daemon=True)
        self._saved: TextIO | None = None

    def __enter__(self) -> Terminal:
        self._saved = sys.stderr
        sys.stderr = _Clearing(self)
        self._thread.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self._stop.set()
        self._thread.join()
        with self._lock:
            self._clear()
        if self._saved is not None:
            sys.stderr = self._saved

    def _draw(self) -> None:
        while not self._stop.wait(self.interval):
            line = self.board.line()[: self._width()]
            with self._lock:
                # Not in the middle of a log line (print writes it, then its newline).
                if line == self._shown or not self._at_start:
                    continue
                try:
                    self.stream.write(CLEAR + line)
                    self.stream.flush()
                except (OSError, ValueError):
                    return  # the terminal went away: nothing left to show it on
                self._shown = line

    def _width(self) -> int:
        try:
            columns = os.get_terminal_size(self.stream.fileno()).columns
        except (OSError, ValueError):
            columns = 0
        if columns <= 0:  # a terminal that does not say (a fresh pty): $COLUMNS, else 80
            fallback = os.environ.get("COLUMNS", "")
            columns = int(fallback) if fallback.isdigit() else 80
        return max(10, columns - 1)

    def _clear(self) -> None:
        if self._shown:
            self.stream.write(CLEAR)
            self.stream.flush()
            self._shown = ""

    def write(self, text: str) -> int:
        with self._lock:
            self._clear()
            if text:
                self._at_start = text.endswith("\n")
            return self.stream.write(text)


class _Clearing:
    """stderr while the line is shown: writes clear it first."""

    def __init__(self, terminal: Terminal) -> None:
        self._terminal = terminal

    def write(self, text: str) -> int:
        return self._terminal.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._terminal.stream, name)


def wanted(log_format: str, stream: TextIO | None = None) -> bool:
    """Whether to show progress: on a terminal, unless the logs there are JSON
    (a machine reads them, and ``\\r`` would garble its lines)."""
    stream = stream if stream is not None else sys.stderr
    try:
        return log_format != "json" and stream.isatty()
    except (OSError, ValueError):
        return False
