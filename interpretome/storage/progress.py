"""Chunk progress that fits its sink: a live line on a terminal, sparse lines in a log file.

On a TTY the line ``group: 12/36 chunks (33%), 3.1 chunks/s, ETA 8 s`` is redrawn in place at
most every 0.2 s. Elsewhere (a log file, a batch job's output) a line is written only when at
least 10% more chunks are done *and* at least 5 s have passed since the last line, or after 60 s
of silence, plus the final line — so an hours-long job writes a few dozen lines, not thousands.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

MIN_LOG_SECONDS = 5.0
MAX_LOG_SILENCE = 60.0
LOG_STEP = 0.10
TTY_REDRAW = 0.2


def _eta(seconds: float) -> str:
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ChunkProgress:
    """Report ``done`` of ``total`` chunks of ``label`` to ``stream`` (stderr by default)."""

    def __init__(self, label: str, total: int, stream: TextIO | None = None, enabled: bool = True):
        self.label, self.total = label, total
        self.stream = stream or sys.stderr
        self.enabled = enabled and total > 0
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.t0 = self.last_t = time.monotonic()
        self.done = 0
        self.last_done = 0
        self.lines = 0

    def text(self) -> str:
        """Return the current progress line."""
        elapsed = max(time.monotonic() - self.t0, 1e-9)
        rate = self.done / elapsed
        eta = _eta((self.total - self.done) / rate) if rate > 0 and self.done < self.total else "-"
        pct = 100 * self.done / self.total if self.total else 100
        return f"{self.label}: {self.done}/{self.total} chunks ({pct:.0f}%), {rate:.1f} chunks/s, ETA {eta}"

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more finished chunks and write a line when the sink wants one."""
        self.done += n
        if not self.enabled:
            return
        now = time.monotonic()
        finished = self.done >= self.total
        if self.tty:
            if finished or now - self.last_t >= TTY_REDRAW:
                self.stream.write("\r\x1b[2K" + self.text() + ("\n" if finished else ""))
                self.stream.flush()
                self.last_t = now
            return
        step = (self.done - self.last_done) / self.total >= LOG_STEP
        if finished or (step and now - self.last_t >= MIN_LOG_SECONDS) or now - self.last_t >= MAX_LOG_SILENCE:
            self.stream.write(self.text() + "\n")
            self.stream.flush()
            self.lines += 1
            self.last_t, self.last_done = now, self.done

    def close(self) -> None:
        """End a live line that did not reach 100% (an interrupted or failed run)."""
        if self.enabled and self.tty and self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()
