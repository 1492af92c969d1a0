"""What rnnpipe prints besides one-line results: progress of long work, and tables.

Progress on a terminal: one line rewritten in place (at most 5 times a second). In a log
(output not a terminal): a line every 30 s, so a long step never goes silent for minutes, and not
a line per item. Always a last line with the total and the rate.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

LOG_EVERY_S = 30.0
TERMINAL_EVERY_S = 0.2


class Progress:
    """Counts `unit`s of `what`; `total` (if known) gives a percentage and time left."""

    def __init__(self, what: str, unit: str = "documents", total: int | None = None,
                 stream: TextIO | None = None) -> None:
        self.what, self.unit, self.total = what, unit, total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.done = 0
        self.started = self.shown = time.monotonic()

    def _line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / elapsed
        text = f"{self.what}: {self.done:,} {self.unit}"
        if self.total:
            left = (self.total - self.done) / rate if rate else float("inf")
            text += f" of {self.total:,} ({self.done / self.total:.0%}), ~{left:.0f} s left"
        return f"{text}, {rate:,.0f} {self.unit}/s"

    def update(self, n: int = 1) -> None:
        """Count `n` more; show a line when it is time to."""
        self.done += n
        now = time.monotonic()
        if now - self.shown >= (TERMINAL_EVERY_S if self.tty else LOG_EVERY_S):
            self.shown = now
            end = "\r" if self.tty else "\n"
            self.stream.write(f"{self._line()}\x1b[K{end}" if self.tty else self._line() + end)
            self.stream.flush()

    def close(self) -> None:
        """The last line: what was done, how fast."""
        elapsed = time.monotonic() - self.started
        line = f"{self._line()}, {elapsed:.1f} s in all"
        self.stream.write(f"{line}\x1b[K\n" if self.tty else line + "\n")
        self.stream.flush()


def table(header: list[str], rows: list[list[str]]) -> str:
    """Fixed-width columns, two spaces apart, no trailing spaces."""
    widths = [max(len(line[i]) for line in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in
                               zip(line, widths, strict=True)).rstrip()
                     for line in [header, *rows])
