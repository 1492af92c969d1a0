"""The Prefect flow `rnnpipe-pipeline`: the four steps as tasks, each reproducing its DVC stage.

Running the stages through DVC (not beside it) is what keeps the two entry points in agreement:
after the flow, `dvc status` is clean, `dvc.lock` records what ran, and a step whose inputs did
not change is skipped, so a re-run with nothing changed takes seconds.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.runtime import flow_run

import rnnpipe  # noqa: F401  (telemetry off, quiet TensorFlow in the stage processes)
from rnnpipe.config import PARAMS_FILE, apply_overrides, load_params
from rnnpipe.io import atomic_open, read_json

STAGES = ("ingest", "vocab", "train", "evaluate")
USER_ERROR_EXIT = 2  # what `rnnpipe <step>` exits with on bad input: retrying cannot help


def _retry_unless_user_error(task, task_run, state) -> bool:
    try:
        state.result()
    except Exception as exc:
        return f"exited with {USER_ERROR_EXIT}" not in str(exc)
    return True


@task(task_run_name="{stage}", retries=2, retry_delay_seconds=[2, 8],
      retry_condition_fn=_retry_unless_user_error)
def reproduce_stage(stage: str, root: str, force: bool = False) -> list[str]:
    """Reproduce one DVC stage (and nothing else) if its deps or params changed; return what ran.

    Retried with backoff: ingest may read a URL and evaluate talks to MLflow.
    """
    from dvc.repo import Repo

    with Repo(root) as repo:
        ran = repo.reproduce(stage, single_item=True, force=force)
    return [s.addressing for s in ran]


def write_overrides(root: Path, overrides: dict[str, Any]) -> None:
    """Write dotted-key overrides into `params.yaml` (as `dvc exp run -S` does), keeping its
    comments and layout; validated first, so a bad override changes nothing."""
    import yaml
    from ruamel.yaml import YAML

    path = root / PARAMS_FILE
    apply_overrides(yaml.safe_load(path.read_text(encoding="utf-8")) or {}, overrides)
    round_trip = YAML()
    data = round_trip.load(path.read_text(encoding="utf-8"))
    for dotted, value in overrides.items():
        node = data
        *parents, leaf = dotted.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value) if isinstance(value, str) else value
    with atomic_open(path) as fh:
        round_trip.dump(data, fh)


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
             root: str = ".") -> dict:
    """ingest → vocab → train → evaluate. `overrides` are dotted keys (`{"train.epochs": 2}`)
    written to `params.yaml` first; `force` re-runs every stage. Returns the test metrics."""
    project = Path(root).resolve()
    if overrides:
        write_overrides(project, overrides)
    load_params(project / PARAMS_FILE)  # fail on invalid params before any work starts
    stage_environment()
    for stage in STAGES:
        ran = reproduce_stage(stage, str(project), force)
        print(f"{stage}: {'ran' if ran else 'up to date, skipped'}")
    metrics = read_json(project / "reports" / "metrics.json")
    print(f"test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f}; "
          f"reports in {project / 'reports'}; compare runs with `make ui`")
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


if __name__ == "__main__":
    pipeline()
