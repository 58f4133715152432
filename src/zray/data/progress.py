"""Minimal progress reporting on stderr for long data commands.

On a terminal one line is rewritten in place; in logs (not a tty) a line is
printed at most every ``interval`` seconds so CI output stays short.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, total: int, *, unit: str = "galaxies", enabled: bool = True,
                 stream=None, interval: float | None = None) -> None:
        self.label, self.total, self.unit, self.enabled = label, total, unit, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 10.0)
        self.done = 0
        self.start = time.perf_counter()
        self._last = 0.0

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def update(self, n: int) -> None:
        self.done += n
        now = time.perf_counter()
        if self.enabled and (now - self._last >= self.interval or self.done >= self.total):
            self._last = now
            self._emit(end="\r" if self.tty and self.done < self.total else "\n")

    def _emit(self, end: str) -> None:
        rate = self.done / max(self.elapsed, 1e-9)
        pct = 100.0 * self.done / max(self.total, 1)
        self.stream.write(
            f"{self.label}: {self.done}/{self.total} {self.unit} ({pct:.0f}%, {rate:.0f}/s)" + end
        )
        self.stream.flush()
