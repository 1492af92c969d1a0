"""The Prefect flow `rnnpipe-sweep` (`rnnpipe sweep`): a grid or random search, ranked on
validation data, that leaves the project as it found it.

- `params.yaml`'s `sweep:` section names dotted keys (vocab, train or evaluate) and the values to
  try (`grid`), how to search them (`grid`: every combination; `random`: `trials` of them drawn
  with `seed`), the validation metric that ranks trials (`metric`) and how many local Dask
  workers run them (`workers`). `-S` overrides apply to this sweep only.
- Nothing in the project changes: the shared steps (ingest, vocab) run once in a throwaway copy
  of the project (`flows.trials`), and each trial in a copy of that, on the project's DVC cache.
  Trials are ranked by validation accuracy or macro-F1; the winner's test score is reported
  beside it, never used to choose. The sweep then prints how to apply the winner, and
  `--apply-best` does it: its params go into `params.yaml`, its outputs are checked out from
  the cache and its reports (which DVC does not cache) written, so `dvc status` is clean without
  training again.
- MLflow: one parent run and one nested run per trial (`mlflow.parentRunId`), created here and
  handed to the trial's steps as `MLFLOW_RUN_ID`. Trials do not register their models; the best
  one goes through the same promotion gate as a pipeline run's.
"""

from __future__ import annotations

import itertools
import json
import logging
import random
import shutil
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Failed

from flows.pipeline import flow_run_tags, in_project
from flows.stages import retry_unless_user_error
from flows.trials import (
    bundle,
    make_workspace,
    project_cache,
    remote_config,
    repro,
    restore_outputs,
    stage_outputs,
    unbundle,
    uncached_outputs,
)
from rnnpipe.config import (
    Params,
    SweepParams,
    apply_overrides,
    params_from_dict,
    read_params_file,
    write_overrides,
)
from rnnpipe.console import table
from rnnpipe.errors import ParamsError, RnnpipeError, StepFailed
from rnnpipe.io import read_json
from rnnpipe.paths import DVC_LOCK, METRICS_FILE, PARAMS_FILE

SHARED_STAGES = ("ingest", "vocab")
TRIAL_TARGET = "evaluate"  # `dvc repro evaluate` in a trial workspace: whatever it needs re-runs
POLL_S = 2.0


def plan_trials(spec: SweepParams) -> list[dict[str, Any]]:
    """The overrides of every trial: each combination of `spec.grid` (`grid`), or `spec.trials`
    distinct combinations drawn with `spec.seed` (`random`)."""
    keys = list(spec.grid)
    combos = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(spec.grid[k] for k in keys))]
    if spec.method == "random":
        combos = random.Random(spec.seed).sample(combos, min(spec.trials, len(combos)))
    return combos


def trial_params(base: dict[str, Any], overrides: dict[str, Any]) -> Params:
    """A trial's params, or `ParamsError` naming the trial and the key if one of its values is
    invalid."""
    try:
        return params_from_dict(apply_overrides(base, overrides))
    except ParamsError as exc:
        raise ParamsError(f"sweep.grid: the trial {describe(overrides)} is invalid: "
                          f"{exc}") from None


def describe(overrides: dict[str, Any]) -> str:
    """`train.learning_rate=0.01 train.lstm_units=[32]`, for names and tables."""
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in overrides.items())


@task(task_run_name="trial-{number}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error, cache_policy=NO_CACHE)
def run_trial(number: int, overrides: dict[str, Any], run_id: str, base: str, cache_dir: str,
              env: dict[str, str], bundle_run: str | None = None) -> dict[str, Any]:
    """One trial in its own copy of the base workspace: its params written, `dvc repro
    evaluate`; returns its metrics, its `dvc.lock` and its outputs DVC does not cache (what
    `--apply-best` checks out and writes).

    A worker that sees the base workspace and the project's cache (a local cluster, or one
    sharing the file system) copies it and adds its outputs to that cache. One that does not (a
    cluster on other machines) downloads the base as a bundle from the parent run `bundle_run`
    on the MLflow server, works on a private cache, and pushes its outputs to the project's DVC
    remote for `--apply-best`.
    """
    workdir = Path(tempfile.mkdtemp(prefix=f"rnnpipe-trial-{number}-"))
    shared = Path(base).is_dir() and Path(cache_dir).is_dir()
    try:
        if shared or bundle_run is None:
            make_workspace(Path(base), workdir, cache_dir)
        else:
            unbundle(download_bundle(bundle_run, env, workdir.parent), workdir)
        write_overrides(workdir / PARAMS_FILE, {**overrides, "register.enabled": False})
        repro(workdir, TRIAL_TARGET, {**env, "MLFLOW_RUN_ID": run_id})
        if not shared:
            push(workdir)
        return {"metrics": read_json(workdir / METRICS_FILE),
                "dvc_lock": (workdir / DVC_LOCK).read_text(encoding="utf-8"),
                "uncached": uncached_outputs(workdir)}
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


BUNDLE_ARTIFACT = "sweep/workspace.tar.gz"


def download_bundle(run_id: str, env: dict[str, str], folder: Path) -> Path:
    """The base workspace's bundle, from the sweep's parent run."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(
        run_id=run_id, artifact_path=BUNDLE_ARTIFACT, dst_path=str(folder),
        tracking_uri=env["MLFLOW_TRACKING_URI"]))


def push(workdir: Path) -> None:
    """`dvc push` a trial's outputs to the project's default remote, if it has one."""
    from dvc.repo import Repo

    with Repo(str(workdir)) as repo:
        if repo.config["core"].get("remote"):
            repo.push()


def watch(trials: list[dict[str, Any]], futures: list[Any]) -> None:
    """Print when each trial starts and ends (the trials run on Dask workers, whose logs go
    to the Prefect API, not to this terminal)."""
    shown: dict[int, str] = {}
    started: dict[int, float] = {}
    while True:
        for trial, future in zip(trials, futures, strict=True):
            state = future.state
            number = trial["trial"]
            if state.is_running() and number not in shown:
                started[number] = time.monotonic()
                shown[number] = "running"
                print(f"sweep: trial {number} started ({describe(trial['overrides'])})",
                      flush=True)
            if state.is_final() and shown.get(number) != "done":
                shown[number] = "done"
                took = time.monotonic() - started.get(number, time.monotonic())
                print(f"sweep: trial {number} {'finished' if state.is_completed() else 'failed'}"
                      f" after {took:.0f} s", flush=True)
        if all(shown.get(t["trial"]) == "done" for t in trials):
            return
        time.sleep(POLL_S)


def format_trials(rows: list[dict[str, Any]], keys: list[str], metric: str) -> str:
    """The trials as a table, best first: validation scores rank, test scores are reported."""
    header = ["rank", "trial", *keys, "val_accuracy", "val_macro_f1", "test_accuracy",
              "test_macro_f1", "status", "mlflow run"]
    body = []
    for rank, row in enumerate(rows, start=1):
        m = row.get("metrics")
        cells = [f"{m[split][k]:.4f}" if m else "-" for split in ("val", "test")
                 for k in ("accuracy", "macro_f1")]
        body.append([str(rank) if m else "-", str(row["trial"]),
                     *(json.dumps(row["overrides"][k], ensure_ascii=False) for k in keys),
                     *cells, row["status"], row["run_id"]])
    return f"trials ranked by {metric} (validation; test is reported, not used to choose):\n" \
        + table(header, body)


def ranking_key(metric: str):
    """Sort key: finished trials by the validation metric, best first, then failed ones."""
    split, name = metric.split("_", 1)

    def key(row: dict[str, Any]) -> tuple[bool, float]:
        m = row.get("metrics")
        return (m is None, -(m[split][name] if m else 0.0))

    return key


@flow(name="rnnpipe-sweep", log_prints=True)
def sweep_flow(overrides: dict[str, Any] | None = None, root: str = ".",
               apply_best: bool = False, ship_bundle: bool = False) -> dict[str, Any]:
    """Shared steps once, then every trial in parallel on the flow's task runner, then the
    table, the gate for the best trial, and (`apply_best`) its params and outputs in the
    project. `ship_bundle` (an external cluster) logs the base workspace on the parent run for
    workers that cannot see this machine's folders. Returns the parent run id and the ranked
    trials."""
    from rnnpipe.tracking.runs import RunLog, create_run
    from rnnpipe.tracking.store import client

    project = Path(root).resolve()
    try:
        base_dict = apply_overrides(read_params_file(project / PARAMS_FILE), overrides or {})
        params = params_from_dict(base_dict)
        plans = plan_trials(params.sweep)
        per_trial = [trial_params(base_dict, plan) for plan in plans]  # all valid first
    except RnnpipeError as exc:
        return Failed(message=str(exc), data=exc)
    spec = params.sweep
    with in_project(project):
        store = client(params)
    parent = RunLog(store, create_run(store, params, "sweep", name=f"sweep {describe(spec.grid)}",
                                      tags={**flow_run_tags(), "rnnpipe.sweep": "parent",
                                            "rnnpipe.sweep.metric": spec.metric}))
    print(f"sweep: {len(plans)} trial(s), {spec.method} search over {', '.join(spec.grid)}, "
          f"ranked by {spec.metric}; MLflow parent run {parent.run_id}")
    scratch = Path(tempfile.mkdtemp(prefix="rnnpipe-sweep-"))
    rows: list[dict[str, Any]] = []
    try:
        cache_dir = project_cache(project)
        base = make_workspace(project, scratch / "base", cache_dir,
                              stage_outputs(project, ("ingest", "vocab", "train", "evaluate")),
                              remote_config(project))
        if overrides:
            write_overrides(base / PARAMS_FILE, overrides)
        print("sweep: shared steps (ingest, vocab) in a scratch copy of the project", flush=True)
        repro(base, SHARED_STAGES[-1])
        if ship_bundle:
            parent.log_artifact(bundle(base, scratch / Path(BUNDLE_ARTIFACT).name),
                                str(Path(BUNDLE_ARTIFACT).parent))
        for number, (plan, trial) in enumerate(zip(plans, per_trial, strict=True), start=1):
            # What the trial runs with: it leaves registration to the sweep.
            unregistered = replace(trial, register=replace(trial.register, enabled=False))
            run_id = create_run(store, unregistered, "sweep",
                                name=f"trial-{number} {describe(plan)}",
                                tags={"mlflow.parentRunId": parent.run_id,
                                      "rnnpipe.sweep": "trial", "rnnpipe.sweep.trial": number})
            rows.append({"trial": number, "overrides": plan, "run_id": run_id})
        env = {"MLFLOW_TRACKING_URI": store.tracking_uri}
        futures = [run_trial.submit(r["trial"], r["overrides"], r["run_id"], str(base),
                                    cache_dir, env, parent.run_id if ship_bundle else None)
                   for r in rows]
        watch(rows, futures)
        for row, future in zip(rows, futures, strict=True):
            trial_run = RunLog(store, row["run_id"])
            if future.state.is_completed():
                row.update(status="FINISHED", **future.result())
                trial_run.end("FINISHED")
            else:
                error = future.state.result(raise_on_failure=False)
                row.update(status="FAILED", metrics=None, error=str(error))
                trial_run.end("FAILED", error if isinstance(error, StepFailed) else str(error))
        rows.sort(key=ranking_key(spec.metric))
        text = format_trials(rows, list(spec.grid), spec.metric)
        print(text)
        store.log_text(parent.run_id, text + "\n", "sweep/trials.txt")
        done = [row for row in rows if row["metrics"]]
        if not done:
            raise StepFailed("sweep: every trial failed: " + "; ".join(
                f"trial {row['trial']}: {row.get('error')}" for row in rows))
        best = done[0]
        report_best(parent, best, spec.metric, len(done), len(rows))
        if params.register.enabled:
            print(register_best(store, base, per_trial[best["trial"] - 1], best, parent))
        if apply_best:
            apply(project, {**(overrides or {}), **best["overrides"]}, best["dvc_lock"],
                  best["uncached"])
        else:
            print(f"sweep: to apply the best trial: rnnpipe run -S "
                  f"{' -S '.join(f'{k}={json.dumps(v)}' for k, v in best['overrides'].items())}"
                  f" (retrains), or rnnpipe sweep --apply-best next time (no retraining)")
    except BaseException as exc:
        for row in rows:
            if row.get("status") is None:
                RunLog(store, row["run_id"]).end("FAILED", f"the sweep stopped: {exc}")
        parent.end("FAILED", f"{type(exc).__name__}: {exc}")
        if isinstance(exc, RnnpipeError):
            return Failed(message=str(exc), data=exc)
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    parent.end("FINISHED")
    return {"parent_run_id": parent.run_id,
            "trials": [{k: v for k, v in r.items() if k not in ("dvc_lock", "uncached")}
                       for r in rows]}


def report_best(parent: Any, best: dict[str, Any], metric: str, finished: int,
                total: int) -> None:
    """The winner on the parent run and on the terminal: chosen by validation, test beside."""
    val, test = best["metrics"]["val"], best["metrics"]["test"]
    parent.log_metrics({"best_val_accuracy": val["accuracy"], "best_val_macro_f1":
                        val["macro_f1"], "best_test_accuracy": test["accuracy"],
                        "best_test_macro_f1": test["macro_f1"], "trials_finished": finished,
                        "trials_failed": total - finished})
    parent.set_tags({"rnnpipe.sweep.best_run_id": best["run_id"],
                     "rnnpipe.sweep.best_trial": best["trial"],
                     "rnnpipe.sweep.best_params": describe(best["overrides"])})
    print(f"best: trial {best['trial']} ({describe(best['overrides'])}): {metric} "
          f"{val[metric.split('_', 1)[1]]:.4f} on validation; on test accuracy "
          f"{test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f} (reported, not used to "
          f"choose); MLflow run {best['run_id']}")


def register_best(store: Any, base: Path, params: Params, best: dict[str, Any],
                  parent: Any) -> str:
    """The best trial's model through the promotion gate, exactly as a pipeline run's (in the
    base workspace, whose test split every trial was scored on)."""
    from rnnpipe.model.vocabulary import Vocabulary
    from rnnpipe.paths import VOCAB_FILE
    from rnnpipe.tracking.record import register
    from rnnpipe.tracking.runs import RunLog

    run = RunLog(store, best["run_id"])
    model_uri = store.get_run(best["run_id"]).data.tags["rnnpipe.model_uri"]
    with in_project(base):
        labels = Vocabulary.load(VOCAB_FILE).labels
        decision = register(run, params, best["metrics"], model_uri, labels)
    parent.set_tags({"rnnpipe.promotion": decision.role,
                     "rnnpipe.promotion_reason": decision.reason})
    version = f" v{decision.version}" if decision.version else ""
    return f"register: {decision.name}{version} (trial {best['trial']}) is {decision.role}: " \
        f"{decision.reason}"


def apply(project: Path, overrides: dict[str, Any], dvc_lock: str,
          uncached: dict[str, dict[str, bytes]]) -> None:
    """Make the best trial the project's state: its params in `params.yaml`, its `dvc.lock`, its
    outputs checked out from the cache and its reports (outputs DVC does not cache) written (no
    retraining; `dvc status` is clean)."""
    from dvc.repo import Repo

    from rnnpipe.io import atomic_open

    write_overrides(project / PARAMS_FILE, overrides)
    with atomic_open(project / DVC_LOCK) as fh:
        fh.write(dvc_lock)
    from dvc.exceptions import CheckoutError

    with Repo(str(project)) as repo:
        try:
            repo.checkout(force=True)
        except CheckoutError:  # trials on other machines pushed their outputs to the remote
            repo.pull(force=True)
    restore_outputs(project, uncached)
    print(f"sweep: applied the best trial to {project}: params.yaml ({describe(overrides)}), "
          f"dvc.lock and its outputs")


def task_runner(workers: int, address: str | None = None) -> Any:
    """Dask for the trials: an existing cluster at `address`, else a local one with `workers`
    single-threaded worker processes (a trial's TensorFlow already uses every core it gets)."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    # `host` binds the scheduler and workers; the dashboard has its own address, and Dask's
    # default (":8787") listens on every interface.
    return DaskTaskRunner(cluster_kwargs={"n_workers": workers, "threads_per_worker": 1,
                                          "processes": True, "host": "127.0.0.1",
                                          "dashboard_address": "127.0.0.1:0"})


def sweep(address: str | None = None, overrides: dict[str, Any] | None = None,
          root: str = ".", apply_best: bool = False) -> dict[str, Any]:
    """`rnnpipe sweep`: the flow on a local Dask cluster with `sweep.workers` processes, or on
    the existing cluster at `address` (`tcp://host:port`). Prefect reads its settings when it is
    imported, so `rnnpipe sweep` starts the temporary API (`TemporaryPrefectApi`) before it
    imports this module."""
    base = apply_overrides(read_params_file(Path(root) / PARAMS_FILE), overrides or {})
    params = params_from_dict(base)
    for plan in plan_trials(params.sweep):  # a bad trial value: one line, before Prefect and Dask
        trial_params(base, plan)
    # Dask logs every worker start and stop at INFO, with tracebacks for sockets closed on
    # shutdown; the trials' own progress is what matters here.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    runner = task_runner(params.sweep.workers, address)
    state = sweep_flow.with_options(task_runner=runner)(ship_bundle=address is not None,
        overrides=overrides or None, root=root, apply_best=apply_best, return_state=True)
    result = state.result(raise_on_failure=False)
    if state.is_failed():
        raise result if isinstance(result, BaseException) else StepFailed(
            state.message or "the sweep failed")
    return result
