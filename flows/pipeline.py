"""The Prefect flow `rnnpipe-pipeline`: the four steps as tasks, each reproducing its DVC stage.

Running the stages through DVC (not beside it) is what keeps the two entry points in agreement:
after the flow, `dvc status` is clean, `dvc.lock` records what ran, and a step whose inputs did
not change is skipped, so a re-run with nothing changed takes seconds.

Failures: a stage that fails for a reason retrying can fix (a network blip, a locked MLflow store,
a killed process) is retried with backoff; one that exits with the CLI's user-error status (bad
params or data) is not. The flow then fails with the step's own error message (read back from the
MLflow run it marked FAILED), and any MLflow run of this flow run still left RUNNING is ended.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

import rnnpipe  # noqa: F401  (telemetry off, quiet TensorFlow in the stage processes)
from rnnpipe.config import PARAMS_FILE, apply_overrides, load_params
from rnnpipe.errors import RnnpipeError
from rnnpipe.io import atomic_open, read_json

STAGES = ("ingest", "vocab", "train", "evaluate")
USER_ERROR_EXIT = 2  # what `rnnpipe <step>` exits with on bad input: retrying cannot help
_USER_ERROR = re.compile(rf"exited with {USER_ERROR_EXIT}(?!\d)")  # DVC: "..., exited with 2"
FLOW_RUN_TAG = "prefect.flow_run_id"  # set by tracking.run_tags from RNNPIPE_PREFECT_FLOW_RUN_ID


class StageFailed(RuntimeError):
    """A DVC stage failed; the message names the stage and what the step reported."""


class StageUserError(StageFailed, RnnpipeError):
    """A stage failed on bad params or data: `rnnpipe run` prints the message in one line and
    exits 2, as the step itself does."""


def is_user_error(exc: BaseException | None) -> bool:
    """Whether `exc`, or an exception it was raised from, is a step that exited with the CLI's
    user-error status. The text is checked, not the type: it must survive pickling (Dask)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if _USER_ERROR.search(str(exc)):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry transient failures, never bad params or data."""
    return not is_user_error(state.result(raise_on_failure=False))


@contextlib.contextmanager
def in_project(project: Path) -> Iterator[None]:
    """Run a block with the project as working directory.

    `rnnpipe.tracking` resolves the MLflow store (and git tags) against the working directory,
    as the stage processes DVC starts in the project do. The flow usually runs there already; the
    directory is only changed, briefly, when `root` points elsewhere.
    """
    if Path.cwd().resolve() == project.resolve():
        yield
    else:
        with contextlib.chdir(project):
            yield


def mlflow_client(project: Path) -> tuple[Any, str]:
    """An MLflow client for the project's store (as its steps see it) and the experiment id."""
    from rnnpipe import tracking

    with in_project(project):
        params = load_params()
        client = tracking.client(params)
        experiment = tracking.retry_locked(lambda: tracking.experiment_id(client, params))
    return client, experiment


def flow_run_mlflow_runs(project: Path, flow_run_id: str, extra_filter: str = "") -> list[Any]:
    """The MLflow runs tagged with a Prefect flow run id, newest first."""
    from rnnpipe.tracking import retry_locked

    client, experiment = mlflow_client(project)
    query = f"tags.`{FLOW_RUN_TAG}` = '{flow_run_id}'" + (f" and {extra_filter}"
                                                          if extra_filter else "")
    return retry_locked(lambda: client.search_runs(
        [experiment], query, order_by=["attributes.start_time DESC"], max_results=50))


def _step_error(project: Path, stage: str, env: dict[str, str]) -> str | None:
    """The `error` tag the failed step left on its MLflow run (`tracking.step_run` sets it).

    Best effort: without it the failure message is still correct, only less specific.
    """
    try:
        if env.get("MLFLOW_RUN_ID"):
            client, _ = mlflow_client(project)
            tags = client.get_run(env["MLFLOW_RUN_ID"]).data.tags
            return tags.get("error") if tags.get("rnnpipe.failed_step") == stage else None
        flow_run_id = env.get("RNNPIPE_PREFECT_FLOW_RUN_ID") or os.environ.get(
            "RNNPIPE_PREFECT_FLOW_RUN_ID")
        if not flow_run_id:
            return None
        runs = flow_run_mlflow_runs(project, flow_run_id,
                                    f"tags.`rnnpipe.failed_step` = '{stage}'")
        return runs[0].data.tags.get("error") if runs else None
    except Exception:
        return None


@task(task_run_name="{stage}", retries=2, retry_delay_seconds=[2, 8],
      retry_condition_fn=retry_unless_user_error,
      cache_policy=NO_CACHE)  # DVC decides what re-runs, never Prefect's cache
def reproduce_stage(stage: str, root: str, force: bool = False,
                    env: dict[str, str] | None = None) -> list[str]:
    """Reproduce one DVC stage (and nothing else) if its deps or params changed; return what ran.

    `env` is added to the stage command's environment (a sweep passes `MLFLOW_RUN_ID`). Retried
    with backoff unless the step reported a user error: ingest may read a URL and every step
    talks to MLflow.
    """
    from dvc.exceptions import ReproductionError
    from dvc.repo import Repo

    try:
        with Repo(root) as repo:
            ran = repo.reproduce(stage, single_item=True, force=force, run_env=env or None)
    except ReproductionError as exc:
        cause = exc.__cause__ or exc  # e.g. "failed to run: rnnpipe train, exited with 1"
        message = f"stage {stage!r} failed: {cause}"
        error = _step_error(Path(root), stage, env or {})
        if error:
            message += f"; the step reported: {error}"
        raise (StageUserError if is_user_error(cause) else StageFailed)(message) from exc
    return [s.addressing for s in ran]


def end_open_runs(project: Path, flow_run_id: str | None, status: str, note: str) -> list[str]:
    """Record this flow run's MLflow run where no step ended it; return the ids ended.

    A step ends the run itself (evaluate: FINISHED, a failing step: FAILED), but not when the
    evaluate stage was skipped (only earlier stages ran, e.g. a data refresh that changed nothing)
    or when a step's process was killed. Then the run is still RUNNING, or, if only ingest and
    vocab ran, still pending in `.rnnpipe/pending/` (`tracking.record_pending`). One execution is
    one run, and nothing of it may be left for the next flow run (under `rnnpipe serve` all flow
    runs share one process group, which `tracking` takes for the execution), so the flow ends it.
    """
    from mlflow.entities import RunTag

    from rnnpipe import tracking

    with in_project(project):
        pending = tracking.record_pending(load_params(), status, note)
    ended = [pending] if pending else []
    if not flow_run_id:
        return ended
    client, _ = mlflow_client(project)
    tags = [RunTag("error" if status == "FAILED" else "rnnpipe.note", note[:5000])]
    for run in flow_run_mlflow_runs(project, flow_run_id, "attributes.status = 'RUNNING'"):
        run_id = run.info.run_id
        tracking.retry_locked(lambda r=run_id: client.log_batch(r, tags=tags))
        tracking.retry_locked(lambda r=run_id: client.set_terminated(r, status))
        ended.append(run_id)
    return ended


def write_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Write dotted-key overrides into `params.yaml` (as `dvc exp run -S` does), keeping its
    comments and layout; validated first, so a bad override changes nothing."""
    import yaml
    from ruamel.yaml import YAML

    path = root / PARAMS_FILE
    apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, overrides)
    round_trip = YAML()
    round_trip.representer.add_representer(  # keep `null` as written, not an empty value
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    data = round_trip.load(path.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    with atomic_open(path) as fh:
        round_trip.dump(data, fh)


def up_to_date(project: Path) -> bool:
    """Whether `dvc status` finds every stage up to date.

    One status check answers for all four stages at once; a no-change run then starts no task,
    each of which would open the repository again to reach the same answer (about 1 s in all).
    Without `dvc.lock` nothing has run yet: no need to ask.
    """
    from dvc.repo import Repo

    if not (project / "dvc.lock").exists():
        return False
    with Repo(str(project)) as repo:
        return not repo.status()


def stage_environment() -> None:
    """Make the stage commands run with this interpreter and know which flow run they serve."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if flow_run.id:
        os.environ["RNNPIPE_PREFECT_FLOW_RUN_ID"] = str(flow_run.id)
        os.environ["RNNPIPE_PREFECT_FLOW_RUN_NAME"] = str(flow_run.name)


@flow(name="rnnpipe-pipeline", log_prints=True)
def pipeline(overrides: dict[str, Any] | None = None, force: bool = False,
             root: str = ".", refresh: bool = False) -> dict:
    """ingest → vocab → train → evaluate. `overrides` are dotted keys (`{"train.epochs": 2}`)
    written to `params.yaml` first; `force` re-runs every stage; `refresh` re-runs ingest (fresh
    data behind an unchanged `ingest.source`), after which DVC re-runs only the stages whose
    inputs changed. Returns the test metrics."""
    project = Path(root).resolve()
    if overrides:
        write_overrides(project, overrides)
    load_params(project / PARAMS_FILE)  # fail on invalid params before any work starts
    stage_environment()
    ran_stages = []
    nothing_changed = not (force or refresh) and up_to_date(project)
    try:
        for stage in STAGES:
            ran = [] if nothing_changed else reproduce_stage(
                stage, str(project), force or (refresh and stage == "ingest"))
            ran_stages += [stage] if ran else []
            print(f"{stage}: {'ran' if ran else 'up to date, skipped'}")
    except BaseException as exc:
        try:
            end_open_runs(project, flow_run.id and str(flow_run.id), "FAILED",
                          f"{type(exc).__name__}: {exc}")
        except Exception as mlflow_exc:  # keep the stage's error, not the bookkeeping's
            print(f"could not end this flow run's MLflow run: {mlflow_exc}")
        raise
    if ran_stages and "evaluate" not in ran_stages:  # else evaluate ended the run
        end_open_runs(project, flow_run.id and str(flow_run.id), "FINISHED",
                      f"{', '.join(ran_stages)} ran; evaluate was up to date (the model did "
                      f"not change)")
    metrics = read_json(project / "reports" / "metrics.json")
    print(f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; "
          f"reports in {project / 'reports'}; compare runs with `make ui`")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


if __name__ == "__main__":
    pipeline()
