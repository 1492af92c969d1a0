"""Errors a user can fix, the exit codes that carry them between processes, and the one-line
format they are shown in.

One protocol, used everywhere a step runs in another process (DVC stages, the Prefect flow, sweep
trials, evaluate's scoring process):

- A step that fails calls `record_error`: when the entry point that started it set
  `RNNPIPE_ERROR_FILE`, the error's kind, exit code and message are written there as JSON. The
  CLI then prints `error_line(exc)` and exits with `exit_code(exc)`.
- The entry point reads the file back with `read_error_record` and raises `StepFailed` (or, for a
  user error, `StepUserError`): no parsing of anybody's output text.

Exit codes: 2 for bad input or params (`RnnpipeError`: retrying cannot help, so the flows do
not retry), 1 for an environment error (`OSError`: a full disk, a locked store; retrying may
help), 130 for Ctrl-C. Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

USER_ERROR_EXIT = 2
ENVIRONMENT_ERROR_EXIT = 1
INTERRUPTED_EXIT = 130
ERROR_PREFIX = "rnnpipe: error: "
DEBUG_HINT = " (rnnpipe --debug shows where)"
ERROR_FILE_ENV = "RNNPIPE_ERROR_FILE"  # where a step process records why it failed


class RnnpipeError(Exception):
    """A problem with the user's input, configuration or environment that they can fix."""


class ParamsError(RnnpipeError):
    """`params.yaml` (or an override) is invalid; the message names the dotted key."""


class DataError(RnnpipeError):
    """The corpus or a step's input data is unusable; the message names the file and line."""


class StepFailed(RuntimeError):
    """A step run in another process failed; the message names the step and its error."""

    def __init__(self, message: str, step: str = "", exit_code: int = 1) -> None:
        super().__init__(message)
        self.step = step
        self.exit_code = exit_code

    def __reduce__(self):  # pickled across Dask workers with its fields
        return (type(self), (str(self), self.step, self.exit_code))


class StepUserError(StepFailed, RnnpipeError):
    """A step failed on bad params or data: shown in one line, exit 2, never retried."""


def exit_code(exc: BaseException) -> int | None:
    """The exit status the CLI ends with for `exc`, or None for a bug (keep the traceback)."""
    if isinstance(exc, StepFailed):
        return exc.exit_code
    if isinstance(exc, RnnpipeError):
        return USER_ERROR_EXIT
    if isinstance(exc, OSError):
        return ENVIRONMENT_ERROR_EXIT
    if isinstance(exc, KeyboardInterrupt):
        return INTERRUPTED_EXIT
    return None


def is_user_error(exc: BaseException | None) -> bool:
    """Whether `exc` is a user error (retrying cannot help)."""
    return isinstance(exc, RnnpipeError)


def one_line(message: str) -> str:
    """A message as one line: multi-line texts (a YAML parser's, say) are joined with `; `."""
    return "; ".join(part.strip() for part in message.splitlines() if part.strip())


def error_line(exc: BaseException) -> str:
    """How the CLI shows `exc` on stderr; environment errors end with the `--debug` hint."""
    hint = DEBUG_HINT if exit_code(exc) == ENVIRONMENT_ERROR_EXIT else ""
    return f"{ERROR_PREFIX}{one_line(str(exc))}{hint}"


@dataclass(frozen=True)
class ErrorRecord:
    """Why a step process failed, as it writes it for the process that started it."""

    step: str
    exit_code: int
    kind: str  # the exception's class name
    message: str

    def exception(self) -> StepFailed:
        """The exception the starting process raises for this failure."""
        cls = StepUserError if self.exit_code == USER_ERROR_EXIT else StepFailed
        return cls(self.message, self.step, self.exit_code)


def record_error(exc: BaseException, step: str) -> bool:
    """Write `exc` to `$RNNPIPE_ERROR_FILE` when an entry point asked for it; whether it did
    (then that entry point reports it, and the step need not print it too)."""
    path = os.environ.get(ERROR_FILE_ENV)
    code = exit_code(exc)
    if not path:
        return False
    record = ErrorRecord(step, code if code is not None else 1, type(exc).__name__,
                         one_line(str(exc)) or type(exc).__name__)
    try:
        tmp = Path(f"{path}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(record), ensure_ascii=False), encoding="utf-8")
        tmp.replace(path)
    except OSError:
        return False  # the exit code still tells the caller it failed
    return True


def read_error_record(path: str | Path) -> ErrorRecord | None:
    """The record a failed step wrote to `path`, or None if it wrote none."""
    try:
        return ErrorRecord(**json.loads(Path(path).read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
