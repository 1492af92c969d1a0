"""Progress lines: every 30 s in a log (a line per item would flood it), rewritten in place on a
terminal, and always a last line; fixed-width tables."""

from __future__ import annotations

import io

import pytest

from rnnpipe import console
from rnnpipe.console import LOG_EVERY_S, Progress, table


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(console.time, "monotonic", fake)
    return fake


def test_a_line_every_30_seconds_in_a_log_and_a_last_line(clock):
    assert LOG_EVERY_S == 30
    out = io.StringIO()
    progress = Progress("vocab", unit="documents", total=1000, stream=out)
    for _ in range(10):  # ten updates in 25 s: nothing yet
        clock.now += 2.5
        progress.update(10)
    assert out.getvalue() == ""
    clock.now += 5  # 30 s since the start
    progress.update(100)
    lines = out.getvalue().splitlines()
    assert lines == ["vocab: 200 documents of 1,000 (20%), ~120 s left, 7 documents/s"]
    clock.now += 29
    progress.update(100)
    assert len(out.getvalue().splitlines()) == 1
    clock.now += 1
    progress.update(100)
    assert len(out.getvalue().splitlines()) == 2
    clock.now += 3
    progress.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    assert lines[-1].startswith("vocab: 400 documents of 1,000 (40%)")
    assert lines[-1].endswith(", 63.0 s in all")
    assert "\r" not in out.getvalue() and "\x1b" not in out.getvalue()


def test_without_a_total(clock):
    out = io.StringIO()
    progress = Progress("predict", stream=out)
    clock.now += 31
    progress.update(62)
    progress.close()
    assert out.getvalue().splitlines() == ["predict: 62 documents, 2 documents/s",
                                           "predict: 62 documents, 2 documents/s, 31.0 s in all"]


def test_a_short_job_prints_only_the_last_line(clock):
    out = io.StringIO()
    progress = Progress("ingest", unit="lines", stream=out)
    progress.update(5)
    clock.now += 0.5
    progress.close()
    assert out.getvalue() == "ingest: 5 lines, 10 lines/s, 0.5 s in all\n"


def test_on_a_terminal_one_line_is_rewritten_in_place(clock):
    out = Terminal()
    progress = Progress("vocab", total=10, stream=out)
    clock.now += 0.1
    progress.update()
    assert out.getvalue() == ""  # at most 5 times a second
    clock.now += 0.1
    progress.update()
    assert out.getvalue().endswith("\x1b[K\r") and "\n" not in out.getvalue()
    progress.close()
    assert out.getvalue().endswith(" s in all\x1b[K\n")


def test_progress_writes_to_stderr_by_default(capsys, clock):
    progress = Progress("x")
    progress.close()
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("x: 0 documents")


def test_table():
    text = table(["model", "version", "F1"], [["rnnpipe-news", "v3", "0.91"],
                                               ["x", "v12", "-"]])
    assert text.splitlines() == ["model         version  F1",
                                 "rnnpipe-news  v3       0.91",
                                 "x             v12      -"]
    assert table(["a", "b"], []) == "a  b"
    assert all(line == line.rstrip() for line in text.splitlines())
