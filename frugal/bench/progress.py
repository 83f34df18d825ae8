"""A progress bar on stderr while a benchmark level runs (I/O layer).

On a terminal it redraws one line in place (at most 10 times a second); in a log (CI, a
pipe) it prints a line at most every 5 s, and always the last one.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from frugal.bench.stats import RequestSample

WIDTH = 30


def bar_line(label: str, done: int, total: int, errors: int, elapsed_s: float) -> str:
    """`label [#####.....]  45/100 requests, 2 errors, 12 s` (pure, for tests)."""
    filled = WIDTH * done // total if total > 0 else WIDTH
    bar = "#" * filled + "." * (WIDTH - filled)
    shown_total = str(total) if total > 0 else "?"
    error_text = f", {errors} errors" if errors else ""
    return f"{label} [{bar}] {done:>5}/{shown_total} requests{error_text}, {elapsed_s:.0f} s"


class ProgressBar:
    def __init__(self, label: str, total: int, stream: TextIO | None = None) -> None:
        self._label = label
        self._total = total
        self._stream = stream if stream is not None else sys.stderr
        self._tty = self._stream.isatty()
        self._interval_s = 0.1 if self._tty else 5.0
        self._done = 0
        self._errors = 0
        self._started = time.monotonic()
        self._last = 0.0

    def advance(self, sample: RequestSample) -> None:
        self._done += 1
        self._errors += not sample.ok
        now = time.monotonic()
        last = self._done == self._total
        if now - self._last < self._interval_s and not last:
            return
        self._last = now
        line = bar_line(self._label, self._done, self._total, self._errors, now - self._started)
        end = "\n" if last or not self._tty else ""
        self._stream.write(("\r" if self._tty else "") + line + end)
        self._stream.flush()

    def close(self) -> None:
        """End the bar's line if the level stopped early (a duration-bound level)."""
        if self._tty and self._done != self._total:
            self._stream.write("\n")
            self._stream.flush()
