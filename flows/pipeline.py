"""The Prefect flow `rnnpipe-pipeline`: the four steps as tasks, each reproducing its DVC stage.

Running the stages through DVC (not beside it) keeps the two entry points in agreement: after
the flow, `dvc status` is clean, `dvc.lock` records what ran, and a step whose inputs did not
change is skipped, so a re-run with nothing changed takes seconds.

The flow is the run's entry point: it creates the MLflow run (with the Prefect flow run's id and
name as tags), hands its id to every stage, logs `dvc.lock` when DVC has written it, and ends
the run: FINISHED, or FAILED with the failed step's own error. A step's user error (bad params
or data) is not retried and ends the flow with that one line, without a traceback.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow
from prefect.runtime import deployment, flow_run
from prefect.states import Failed

from flows.stages import STAGES, reproduce_stage
from rnnpipe.config import load_params, write_overrides
from rnnpipe.errors import RnnpipeError, StepFailed
from rnnpipe.io import read_json
from rnnpipe.paths import DVC_LOCK, METRICS_FILE, PARAMS_FILE, PER_CLASS_FILE, TRAIN_REPORT


@contextlib.contextmanager
def in_project(project: Path) -> Iterator[None]:
    """Run a block with the project as working directory (where the steps resolve the MLflow
    store, params and git tags); changed only when the flow was started elsewhere."""
    if Path.cwd().resolve() == project.resolve():
        yield
    else:
        with contextlib.chdir(project):
            yield


def up_to_date(project: Path) -> bool:
    """Whether `dvc status` finds every stage up to date (one check instead of four tasks that
    each open the repository to reach the same answer; without `dvc.lock` nothing ran yet)."""
    from dvc.repo import Repo

    if not (project / DVC_LOCK).exists():
        return False
    with Repo(str(project)) as repo:
        return not repo.status()


def flow_run_tags() -> dict[str, str]:
    """The Prefect flow run this pipeline run belongs to, as MLflow tags."""
    if not flow_run.id:
        return {}
    tags = {"prefect.flow_run_id": str(flow_run.id), "prefect.flow_run_name": str(flow_run.name)}
    if deployment.id:
        tags["prefect.deployment"] = str(deployment.name or deployment.id)
    return tags


@flow(name="rnnpipe-pipeline", log_prints=True)
def pipeline(overrides: dict[str, Any] | None = None, force: bool = False, root: str = ".",
             refresh: bool = False, push: bool = False) -> dict:
    """ingest → vocab → train → evaluate. `overrides` are dotted keys (`{"train.max_epochs": 2}`)
    written to `params.yaml` first; `force` re-runs every stage; `refresh` re-runs ingest (fresh
    data behind an unchanged `ingest.source`), after which DVC re-runs only the stages whose
    inputs changed; `push` sends the outputs to the DVC remote afterwards (a deployment's worker
    keeps nothing). Returns what ran and the MLflow run id."""
    from rnnpipe.tracking.runs import RunLog, create_run
    from rnnpipe.tracking.store import client

    project = Path(root).resolve()
    try:
        if overrides:
            write_overrides(project / PARAMS_FILE, overrides)
        params = load_params(project / PARAMS_FILE)
    except RnnpipeError as exc:
        return Failed(message=str(exc), data=exc)  # one line, no traceback
    if not (force or refresh) and up_to_date(project):
        print("every stage is up to date: nothing to run (--force re-runs them)")
        return {"ran": [], "run_id": None}
    with in_project(project):
        store = client(params)
        run = RunLog(store, create_run(store, params, "prefect", tags=flow_run_tags()))
    env = {"MLFLOW_RUN_ID": run.run_id, "MLFLOW_TRACKING_URI": store.tracking_uri}
    ran: list[str] = []
    try:
        for stage in STAGES:
            did = reproduce_stage(stage, str(project), force or (refresh and stage == "ingest"),
                                  env)
            ran += [stage] if did else []
            print(f"{stage}: {'ran' if did else 'up to date, skipped'}")
    except BaseException as exc:
        if isinstance(exc, Exception):
            # A step's failure names the step (`rnnpipe.failed_step`) beside its error.
            run.end("FAILED", exc if isinstance(exc, StepFailed)
                    else f"{type(exc).__name__}: {exc}")
        else:  # interrupted
            run.end("KILLED", f"interrupted ({type(exc).__name__})")
        if isinstance(exc, RnnpipeError):
            return Failed(message=str(exc), data=exc)
        raise
    if (project / DVC_LOCK).exists():
        run.log_artifact(project / DVC_LOCK)
    run.log_artifact(project / PARAMS_FILE)
    if push:
        push_outputs(project, run)
    if "evaluate" not in ran:
        run.set_tags({"rnnpipe.note": f"{', '.join(ran) or 'nothing'} ran; evaluate was up to "
                      f"date (the model did not change), so no model was logged"})
    run.end("FINISHED")
    return {"ran": ran, "run_id": run.run_id}


def push_outputs(project: Path, run: Any) -> None:
    """`dvc push`: the run's data and model to the project's default DVC remote."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        pushed = repo.push()
    run.set_tags({"rnnpipe.dvc_pushed": pushed})
    print(f"dvc push: {pushed} file(s) sent to the DVC remote")


def run_pipeline(overrides: dict[str, Any] | None = None, force: bool = False, root: str = ".",
                 refresh: bool = False) -> dict:
    """`rnnpipe run`: the flow, then the end-of-run summary; a failed flow raises its error
    (a user error as `RnnpipeError`: one line, exit 2)."""
    state = pipeline(overrides=overrides, force=force, root=root, refresh=refresh,
                     return_state=True)
    result = state.result(raise_on_failure=False)
    if state.is_failed():
        raise result if isinstance(result, BaseException) else StepFailed(state.message or
                                                                         "the pipeline failed")
    if result["run_id"]:
        print(summary(Path(root).resolve(), result["run_id"]))
    return result


def summary(project: Path, run_id: str) -> str:
    """The end-of-run block: scores against the baseline, the registry's decision, where to
    look."""
    from rnnpipe.tracking.store import client, run_url

    with in_project(project):
        params = load_params()
        store = client(params)
    run = store.get_run(run_id)
    tags = run.data.tags
    lines = ["", "── rnnpipe run summary " + "─" * 50]
    if (project / METRICS_FILE).exists() and "rnnpipe.model_uri" in tags:
        metrics = read_json(project / METRICS_FILE)
        test, baseline = metrics["test"], metrics["baseline"]
        gap = 100 * (test["accuracy"] - baseline["test_accuracy"])
        lines.append(f"test accuracy   {test['accuracy']:.4f}   macro-F1 {test['macro_f1']:.4f}"
                     f"   (validation {metrics['val']['accuracy']:.4f} / "
                     f"{metrics['val']['macro_f1']:.4f})")
        lines.append(f"baseline        {baseline['test_accuracy']:.4f}   macro-F1 "
                     f"{baseline['test_macro_f1']:.4f}   (TF-IDF + logistic regression; LSTM "
                     f"{gap:+.1f} points)")
        per_class = read_json(project / PER_CLASS_FILE)["per_class"]
        lines.append("recall per class  " + "  ".join(
            f"{label} {row['recall']:.3f}" for label, row in per_class.items()))
        train = read_json(project / TRAIN_REPORT)
        lines.append(f"training        best epoch {train['best_epoch']} of {train['epochs_run']}"
                     f", max_len {train['max_len']}")
        if train["still_improving"]:
            lines.append(f"warning         {train['still_improving']}")
    else:
        lines.append(tags.get("rnnpipe.note", "no model was evaluated in this run"))
    if "rnnpipe.promotion" in tags:
        version = tags.get("rnnpipe.registered_version")
        lines.append(f"registry        {tags['rnnpipe.registered_model']}"
                     f"{' v' + version if version else ''}: {tags['rnnpipe.promotion']} — "
                     f"{tags['rnnpipe.promotion_reason']}")
    lines.append(f"reports         {project / METRICS_FILE.parent}/ (plots in "
                 f"{project / METRICS_FILE.parent / 'plots'}/)")
    url = run_url(store, run.info.experiment_id, run_id)
    lines.append(f"MLflow run      {run.info.run_name} ({run_id})"
                 + (f"\n                {url}" if url else "; `make ui` to browse"))
    return "\n".join(lines)


if __name__ == "__main__":
    pipeline()

