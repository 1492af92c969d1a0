"""One DVC stage as a Prefect task, shared by the pipeline and sweep flows.

The task runs the stage through DVC (`Repo.reproduce(stage, single_item=True)`), so DVC decides
what re-runs and `dvc.lock` records it. The step process reports why it failed in a file
(`RNNPIPE_ERROR_FILE`, see `rnnpipe.errors`); the task raises that as `StepUserError` (bad params
or data: never retried) or `StepFailed` (retried with backoff: a network blip, a locked store, a
killed process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import NO_CACHE

from rnnpipe.errors import ERROR_FILE_ENV, StepFailed, is_user_error, read_error_record

STAGES = ("ingest", "vocab", "train", "evaluate")


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures, never bad params or data."""
    return not is_user_error(state.result(raise_on_failure=False))


def stage_environment(env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a stage command: this interpreter's scripts first on PATH (DVC runs
    `python -m rnnpipe <step>`), plus `env`."""
    bin_dir = str(Path(sys.executable).parent)
    path = os.environ.get("PATH", "")
    if bin_dir not in path.split(os.pathsep):
        path = bin_dir + os.pathsep + path
    return {"PATH": path, **(env or {})}


@contextlib.contextmanager
def quiet_dvc_logging() -> Iterator[None]:
    """DVC's log lines once, not twice: DVC's logger has its own console handler, and under
    Prefect (`log_prints`, its root handler) the same records also propagated to the root."""
    dvc_logger = logging.getLogger("dvc")
    propagate = dvc_logger.propagate
    dvc_logger.propagate = False
    try:
        yield
    finally:
        dvc_logger.propagate = propagate


def reproduce(stage: str, root: str, force: bool = False,
              env: dict[str, str] | None = None) -> list[str]:
    """Reproduce one DVC stage (and nothing else) if its deps or params changed; return what ran.
    A failed step raises `StepFailed`/`StepUserError` with the step's own error."""
    from dvc.exceptions import ReproductionError
    from dvc.repo import Repo

    with tempfile.TemporaryDirectory(prefix="rnnpipe-stage-") as tmp:
        error_file = os.path.join(tmp, "error.json")
        run_env = stage_environment({**(env or {}), ERROR_FILE_ENV: error_file})
        try:
            with quiet_dvc_logging(), Repo(root) as repo:
                repo.scm_context.quiet = True  # no "To track the changes with git" per stage
                ran = repo.reproduce(stage, single_item=True, force=force, run_env=run_env)
        except ReproductionError as exc:
            record = read_error_record(error_file)
            if record is not None:
                raise record.exception() from exc
            raise StepFailed(f"stage {stage!r} failed: {exc.__cause__ or exc}", stage) from exc
    return [s.addressing for s in ran]


@task(task_run_name="{stage}", retries=2, retry_delay_seconds=[2, 8],
      retry_condition_fn=retry_unless_user_error,
      cache_policy=NO_CACHE)  # DVC decides what re-runs, never Prefect's cache
def reproduce_stage(stage: str, root: str, force: bool = False,
                    env: dict[str, str] | None = None) -> list[str]:
    """`reproduce` as a Prefect task: retried with backoff unless the step reported a user
    error (ingest may read a URL, and every step may talk to MLflow)."""
    return reproduce(stage, root, force, env)
