"""A step's log never goes quiet for more than 30 s, whatever it is doing.

Two tools, for output that is not a terminal (on a terminal, progress is redrawn in place):

- `Progress`: `console.Progress` with a line every 20 s, so that with items that take a few
  seconds each (a chunk of documents, a batch) lines still come well within 30 s.
- `heartbeat(what)`: while its block runs, a line whenever no line has been written for 25 s
  (TensorFlow starting, a model being saved or logged, a fit that reports nothing), saying how
  long the step has been at it. It watches the lines this process writes to stdout and stderr
  (a write that ends no line, such as an empty one, does not count).
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import TextIO

from rnnpipe import console

LINE_EVERY_S = 20.0
SILENCE_S = 25.0


class Progress(console.Progress):
    """`console.Progress`, with a log line every `LINE_EVERY_S`."""

    def update(self, n: int = 1) -> None:
        if self.tty:
            super().update(n)
            return
        self.done += n
        now = time.monotonic()
        if now - self.shown >= LINE_EVERY_S:
            self.shown = now
            self.stream.write(self._line() + "\n")
            self.stream.flush()

    def finish(self) -> None:
        """The last line, if any line was shown (small inputs stay quiet)."""
        if self.shown != self.started:
            self.close()


class _Watched:
    """A stream that notes when it was last written to."""

    def __init__(self, stream: TextIO, seen: list[float]) -> None:
        self._stream, self._seen = stream, seen

    def write(self, text: str) -> int:
        if "\n" in text:
            self._seen[0] = time.monotonic()
        return self._stream.write(text)

    def close(self) -> None:
        """Never close the real stream: a logging handler made while the block ran holds this
        proxy, and absl's closes any stream that is not `sys.stderr` itself at exit."""

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


@contextlib.contextmanager
def heartbeat(what: str, silence_s: float = SILENCE_S, poll_s: float = 0.5) -> Iterator[None]:
    """Write `<what>: working, <n> s in` whenever the block has been silent for `silence_s`
    (only when stdout is not a terminal)."""
    if sys.stdout.isatty():
        yield
        return
    started = time.monotonic()
    seen = [started]
    stop = threading.Event()
    out, err = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = _Watched(out, seen), _Watched(err, seen)

    def beat() -> None:
        while not stop.wait(poll_s):
            now = time.monotonic()
            if now - seen[0] >= silence_s:
                seen[0] = now
                out.write(f"{what}: working, {now - started:.0f} s in\n")
                out.flush()

    thread = threading.Thread(target=beat, name="rnnpipe-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        sys.stdout, sys.stderr = out, err
