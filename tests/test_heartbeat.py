"""A step's log never goes quiet: progress lines every 20 s, and a heartbeat line whenever a
block has written no line for a while; nothing of it on a terminal."""

from __future__ import annotations

import io
import sys
import time

from rnnpipe import heartbeat
from rnnpipe.heartbeat import Progress


class Log(io.StringIO):
    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_silent_block_gets_heartbeat_lines(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stdout", log)
    with heartbeat.heartbeat("train", silence_s=0.2, poll_s=0.02):
        time.sleep(0.7)
    lines = log.getvalue().splitlines()
    assert 2 <= len(lines) <= 4 and all(line.startswith("train: working, ") for line in lines)
    assert sys.stdout is log  # restored


def test_closing_what_the_block_saw_leaves_the_real_stream_open(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stdout", log)
    monkeypatch.setattr(sys, "stderr", log)
    with heartbeat.heartbeat("train", silence_s=60):
        seen = sys.stderr  # e.g. a logging handler made now, closed at exit
    seen.close()
    print("still open")
    assert not log.closed and log.getvalue() == "still open\n"


def test_writes_that_end_no_line_do_not_count(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stdout", log)
    with heartbeat.heartbeat("score", silence_s=0.2, poll_s=0.02):
        for _ in range(10):
            sys.stdout.write("")
            sys.stdout.write("half a line")
            time.sleep(0.05)
    assert "score: working, " in log.getvalue()


def test_output_keeps_the_heartbeat_quiet(monkeypatch):
    log = Log()
    monkeypatch.setattr(sys, "stdout", log)
    with heartbeat.heartbeat("vocab", silence_s=0.3, poll_s=0.02):
        for _ in range(10):
            print("vocab: segmenting: ...")
            time.sleep(0.05)
    assert "working" not in log.getvalue()


def test_no_heartbeat_on_a_terminal(monkeypatch):
    log = Log(tty=True)
    monkeypatch.setattr(sys, "stdout", log)
    with heartbeat.heartbeat("train", silence_s=0.05, poll_s=0.01):
        time.sleep(0.2)
        assert sys.stdout is log
    assert log.getvalue() == ""


def test_progress_lines_every_20_s_in_a_log(monkeypatch):
    clock = [100.0]
    monkeypatch.setattr(heartbeat.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr("rnnpipe.console.time.monotonic", lambda: clock[0])
    log = Log()
    progress = Progress("vocab: segmenting", total=100, stream=log)
    for _ in range(10):
        clock[0] += 6
        progress.update(10)
    assert log.getvalue().splitlines() == [
        "vocab: segmenting: 40 documents of 100 (40%), ~36 s left, 2 documents/s",
        "vocab: segmenting: 80 documents of 100 (80%), ~12 s left, 2 documents/s"]
    progress.finish()
    assert log.getvalue().splitlines()[-1].endswith("documents/s, 60.0 s in all")
    quiet = Progress("ingest: reading", stream=Log())
    quiet.update(5)
    quiet.finish()  # nothing shown, nothing to finish
    assert quiet.stream.getvalue() == ""
