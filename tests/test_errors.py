"""The error protocol: exit codes per kind of error, the one-line format, and the record a step
process leaves for the entry point that started it."""

from __future__ import annotations

import json
import pickle

import pytest

from rnnpipe.errors import (
    DEBUG_HINT,
    ENVIRONMENT_ERROR_EXIT,
    ERROR_FILE_ENV,
    ERROR_PREFIX,
    INTERRUPTED_EXIT,
    USER_ERROR_EXIT,
    DataError,
    ErrorRecord,
    ParamsError,
    RnnpipeError,
    StepFailed,
    StepUserError,
    error_line,
    exit_code,
    is_user_error,
    one_line,
    read_error_record,
    record_error,
)


@pytest.mark.parametrize(
    ("exc", "code"),
    [
        (ParamsError("train.max_epochs: must be >= 1"), USER_ERROR_EXIT),
        (DataError("c.tsv:3: malformed"), USER_ERROR_EXIT),
        (RnnpipeError("x"), USER_ERROR_EXIT),
        (OSError(28, "No space left on device"), ENVIRONMENT_ERROR_EXIT),
        (PermissionError(13, "Permission denied"), ENVIRONMENT_ERROR_EXIT),
        (KeyboardInterrupt(), INTERRUPTED_EXIT),
        (StepFailed("train: killed", "train", 137), 137),
        (StepFailed("train: failed", "train"), 1),
        (StepUserError("ingest: bad", "ingest", USER_ERROR_EXIT), USER_ERROR_EXIT),
        (ValueError("a bug"), None),
        (KeyError("a bug"), None),
    ],
)
def test_exit_codes(exc, code):
    assert exit_code(exc) == code


def test_codes_are_distinct_and_conventional():
    assert (USER_ERROR_EXIT, ENVIRONMENT_ERROR_EXIT, INTERRUPTED_EXIT) == (2, 1, 130)


def test_user_errors_are_the_ones_not_worth_retrying():
    assert is_user_error(ParamsError("x")) and is_user_error(DataError("x"))
    assert is_user_error(StepUserError("x", "train", 2))
    assert not is_user_error(StepFailed("x", "train", 1))
    assert not is_user_error(OSError("x")) and not is_user_error(None)


def test_one_line():
    assert one_line("a") == "a"
    assert one_line("while parsing\n  in line 3\n\n   ^\n") == "while parsing; in line 3; ^"
    assert one_line("") == ""


def test_error_line():
    assert error_line(DataError("c.tsv:3: malformed\nline")) == \
        f"{ERROR_PREFIX}c.tsv:3: malformed; line"
    assert ERROR_PREFIX == "rnnpipe: error: "
    line = error_line(OSError(28, "No space left on device"))
    assert line.startswith(f"{ERROR_PREFIX}[Errno 28] No space left on device")
    assert line.endswith(DEBUG_HINT) and "--debug" in DEBUG_HINT
    assert not error_line(ParamsError("x")).endswith(DEBUG_HINT)


def test_error_record_round_trip(tmp_path, monkeypatch):
    path = tmp_path / "error.json"
    monkeypatch.setenv(ERROR_FILE_ENV, str(path))
    assert record_error(DataError("c.tsv:3: malformed\nsecond line"), "ingest") is True
    record = read_error_record(path)
    assert record == ErrorRecord("ingest", USER_ERROR_EXIT, "DataError",
                                 "c.tsv:3: malformed; second line")
    assert json.loads(path.read_text(encoding="utf-8"))["kind"] == "DataError"
    raised = record.exception()
    assert isinstance(raised, StepUserError) and isinstance(raised, RnnpipeError)
    assert (str(raised), raised.step, raised.exit_code) == (record.message, "ingest", 2)
    assert exit_code(raised) == USER_ERROR_EXIT
    assert not list(tmp_path.glob("*.tmp"))


def test_environment_errors_and_bugs_are_recorded_as_step_failures(tmp_path, monkeypatch):
    path = tmp_path / "error.json"
    monkeypatch.setenv(ERROR_FILE_ENV, str(path))
    record_error(OSError(28, "No space left on device"), "train")
    raised = read_error_record(path).exception()
    assert type(raised) is StepFailed and raised.exit_code == ENVIRONMENT_ERROR_EXIT
    assert not is_user_error(raised)
    record_error(ValueError(""), "evaluate")  # a bug: exit 1, and a message even when empty
    assert read_error_record(path) == ErrorRecord("evaluate", 1, "ValueError", "ValueError")


def test_nothing_is_recorded_unless_asked(tmp_path, monkeypatch):
    monkeypatch.delenv(ERROR_FILE_ENV, raising=False)
    assert record_error(DataError("x"), "ingest") is False
    assert not list(tmp_path.iterdir())


def test_an_unwritable_error_file_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv(ERROR_FILE_ENV, str(tmp_path / "missing" / "error.json"))
    assert record_error(DataError("x"), "ingest") is False


def test_reading_a_missing_or_garbled_record(tmp_path):
    assert read_error_record(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{not json")
    assert read_error_record(tmp_path / "bad.json") is None
    (tmp_path / "other.json").write_text('{"step": "x"}')
    assert read_error_record(tmp_path / "other.json") is None


@pytest.mark.parametrize("cls", [StepFailed, StepUserError])
def test_step_failures_pickle_with_their_fields(cls):
    """Sweep trials raise them on Dask workers; the scheduler unpickles them."""
    exc = cls("train: epoch 3: out of memory", "train", 137)
    copy = pickle.loads(pickle.dumps(exc))
    assert type(copy) is cls
    assert (str(copy), copy.step, copy.exit_code) == (str(exc), "train", 137)
