"""The Prefect flow `rnnpipe-sweep` (`rnnpipe sweep`): a grid or random search over params.

- `params.yaml`'s `sweep:` section names dotted keys and the values to try (`grid`), how to
  search them (`method: grid` tries every combination, `random` draws `trials` of them with
  `seed`), the test metric that ranks trials (`metric`: `macro_f1` or `accuracy`, from
  `reports/metrics.json`) and how many local Dask workers run them (`workers`).
- The shared steps (ingest, vocab) run once, through DVC, in the project itself, exactly as the
  pipeline flow runs them, so `dvc.lock` records them and an unchanged corpus is not re-read.
- Each trial runs as a task on a Dask worker, in its own throwaway copy of the workspace: the
  pipeline definition and sources, the corpus and the shared stages' outputs (hard links, so a
  big corpus is not copied per trial), and copies of `dvc.lock` and of `params.yaml` with the
  trial's values. `dvc repro evaluate` there runs the same step commands as any other run and
  re-runs only what the trial changes: train and evaluate, or vocab too when the trial varies a
  `vocab.*` key. Trials share nothing writable but the DVC
  cache (content-addressed, written atomically) and the MLflow store (SQLite lock contention is
  retried by `tracking.retry_locked`).
- MLflow: one parent run (the shared steps log into it) and one nested run per trial
  (`mlflow.parentRunId`), created here and handed to the trial's steps as `MLFLOW_RUN_ID`; ids are
  passed explicitly because MLflow's active run is thread-local. Trials do not register their
  models (`register.enabled: false`); the best one is registered here through the promotion gate.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run, task_run

import rnnpipe  # noqa: F401  (environment defaults before anything heavy loads)
from flows.pipeline import (
    in_project,
    reproduce_stage,
    retry_unless_user_error,
    stage_environment,
    write_overrides,
)
from rnnpipe.cli import ERROR_PREFIX
from rnnpipe.config import (
    PARAMS_FILE,
    Params,
    SweepParams,
    apply_overrides,
    load_params,
    params_from_dict,
)
from rnnpipe.errors import ParamsError
from rnnpipe.io import read_json

SWEEP_METRICS = ("macro_f1", "accuracy")  # top-level test metrics; higher is better for both
SHARED_STAGES = ("ingest", "vocab")
TRIAL_TARGET = "evaluate"  # `dvc repro evaluate` in a trial workspace: whatever it needs re-runs
FIXED_SECTIONS = ("sweep", "mlflow", "register", "schedule")  # what a trial may not vary
_TAIL_LINES = 25


class TrialFailed(RuntimeError):
    """A trial's `dvc repro` failed (or every trial did); the message says which and what the
    steps reported."""


# --- planning ------------------------------------------------------------------------------------

def plan_trials(spec: SweepParams) -> list[dict[str, Any]]:
    """The overrides of every trial: each combination of `spec.grid` (`grid`), or `spec.trials`
    distinct combinations drawn with `spec.seed` (`random`). Raises `ParamsError` on a bad spec."""
    if not spec.grid:
        raise ParamsError("sweep.grid: name at least one dotted key and the values to try, "
                          "e.g. train.learning_rate: [0.001, 0.002]")
    for key in spec.grid:
        if "." not in key or key.split(".")[0] in FIXED_SECTIONS:
            raise ParamsError(f"sweep.grid.{key}: a trial can vary ingest, vocab, train or "
                              f"evaluate keys (section.key), not this one")
    if spec.metric not in SWEEP_METRICS:
        raise ParamsError(f"sweep.metric: must be one of {', '.join(SWEEP_METRICS)}, "
                          f"got {spec.metric!r}")
    keys = list(spec.grid)
    combos = [dict(zip(keys, values, strict=True))
              for values in itertools.product(*(spec.grid[k] for k in keys))]
    if spec.method == "random":
        combos = random.Random(spec.seed).sample(combos, min(spec.trials, len(combos)))
    return combos


def trial_params(base: dict[str, Any], overrides: dict[str, Any]) -> Params:
    """A trial's params: the project's, its overrides, and no registration (the sweep registers
    the best trial itself). Raises `ParamsError` naming the key if a value is invalid."""
    return params_from_dict(apply_overrides(base, {**overrides, "register.enabled": False}))


def describe(overrides: dict[str, Any]) -> str:
    """`train.learning_rate=0.01 train.lstm_units=[32]`, for names and tables."""
    return " ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in overrides.items())


# --- trial workspaces ----------------------------------------------------------------------------

def workspace_plan(project: Path) -> tuple[list[str], str]:
    """What a trial workspace holds (paths relative to the project) and the project's DVC cache.

    Every stage's in-repo dependencies (sources, params) and the shared stages' outputs; not the
    other stages' outputs, so every trial trains its own model.
    """
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        stages = list(repo.index.stages)
        cache_dir = str(repo.cache.local_cache_dir)

    def rel(item: Any) -> str:
        return os.path.relpath(item.fs_path, project)

    shared = {rel(out) for stage in stages if stage.name in SHARED_STAGES for out in stage.outs}
    own = {rel(out) for stage in stages if stage.name not in SHARED_STAGES for out in stage.outs}
    files = {"dvc.yaml", "dvc.lock", PARAMS_FILE, *shared}
    for stage in stages:
        files.update(rel(dep) for dep in stage.deps if dep.is_in_repo)
    if (project / ".dvcignore").exists():
        files.add(".dvcignore")
    return sorted(files - own), cache_dir


COPIED = ("dvc.yaml", "dvc.lock", PARAMS_FILE, ".dvcignore")  # rewritten in a trial workspace


def _link_or_copy(src: str, dst: str) -> str:
    """Hard-link (no copy of a large corpus per trial); copy across filesystems.

    Safe for everything but `COPIED`: nothing writes into an existing source or data file in a
    trial (DVC deletes a stage's outputs before re-running it, rnnpipe writes by atomic rename),
    whereas DVC rewrites `dvc.lock` in place.
    """
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)
    return dst


def make_workspace(project: Path, workdir: Path, files: list[str], cache_dir: str) -> None:
    """Fill `workdir` with `files` from `project` and make it a DVC repo on the project's cache."""
    for name in files:
        src, dst = project / name, workdir / name
        if not src.exists() or dst.exists():  # e.g. a file inside an output folder linked already
            continue
        dst.parent.mkdir(parents=True, exist_ok=True)
        copy = shutil.copy2 if name in COPIED else _link_or_copy
        if src.is_dir():
            shutil.copytree(src, dst, copy_function=copy, dirs_exist_ok=True,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            copy(str(src), str(dst))
    (workdir / ".dvc").mkdir(exist_ok=True)
    # The project's cache: DVC counts an output missing from its cache as changed, and trials
    # add their models to it (content-addressed, so concurrent trials cannot clash).
    (workdir / ".dvc" / "config").write_text(
        "[core]\n    no_scm = true\n    analytics = false\n    check_update = false\n"
        f"    site_cache_dir = {workdir / '.dvc' / 'tmp' / 'site'}\n"
        f"[cache]\n    dir = {cache_dir}\n", encoding="utf-8")


def _failure_reason(output: str) -> str:
    """The lines that say why a `dvc repro` failed: the step's one-line error, DVC's summary."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    reasons = [line for line in lines if line.startswith((ERROR_PREFIX.rstrip(), "ERROR:"))]
    return "; ".join(reasons) or (lines[-1] if lines else "no output")


def _reopen_run(run_id: str, tracking_uri: str) -> None:
    """A retried trial continues its nested run: RUNNING again, without the last try's error."""
    from mlflow.tracking import MlflowClient

    from rnnpipe.tracking import retry_locked

    client = MlflowClient(tracking_uri)
    retry_locked(lambda: client.update_run(run_id, status="RUNNING"))
    with contextlib.suppress(Exception):  # no error tag: nothing to delete
        retry_locked(lambda: client.delete_tag(run_id, "error"))


@task(task_run_name="trial-{number}", retries=1, retry_delay_seconds=5,
      retry_condition_fn=retry_unless_user_error, cache_policy=NO_CACHE)
def run_trial(number: int, overrides: dict[str, Any], run_id: str, project: str,
              files: list[str], cache_dir: str, env: dict[str, str]) -> dict[str, float]:
    """Run one trial in a private workspace on this (Dask) worker; return its test metrics.

    The trial's steps log into the nested MLflow run `run_id`. Retried once unless a step
    reported a user error.
    """
    logger = get_run_logger()
    if task_run.run_count > 1:
        _reopen_run(run_id, env["MLFLOW_TRACKING_URI"])
    workdir = Path(tempfile.mkdtemp(prefix=f"rnnpipe-trial-{number}-"))
    try:
        make_workspace(Path(project), workdir, files, cache_dir)
        write_overrides(workdir, {**overrides, "register.enabled": False})
        bin_dir = str(Path(sys.executable).parent)  # where `rnnpipe` is, for the stage commands
        proc = subprocess.run(
            [sys.executable, "-m", "dvc", "repro", TRIAL_TARGET], cwd=workdir,
            env={**os.environ, **env, "MLFLOW_RUN_ID": run_id,
                 "PATH": bin_dir + os.pathsep + os.environ.get("PATH", "")},
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
        if proc.returncode != 0:
            tail = "\n".join(proc.stdout.splitlines()[-_TAIL_LINES:])
            logger.error(f"trial {number} output (last {_TAIL_LINES} lines):\n{tail}")
            raise TrialFailed(f"trial {number} ({describe(overrides)}) failed: "
                              f"{_failure_reason(proc.stdout)}")
        logger.debug(proc.stdout)
        metrics = read_json(workdir / "reports" / "metrics.json")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return {name: float(metrics[name]) for name in SWEEP_METRICS}


# --- MLflow --------------------------------------------------------------------------------------

def _set_tags(client: Any, run_id: str, tags: dict[str, Any]) -> None:
    from mlflow.entities import RunTag

    from rnnpipe.tracking import retry_locked

    batch = [RunTag(k, str(v)) for k, v in tags.items()]
    retry_locked(lambda: client.log_batch(run_id, tags=batch))


def _new_run(client: Any, params: Params, name: str, tags: dict[str, Any]) -> str:
    """A run with every param and the usual git/Prefect tags (as a pipeline run has), named."""
    from rnnpipe import tracking

    run_id = tracking.new_run(client, params, "sweep")
    tracking.retry_locked(lambda: client.update_run(run_id, name=name))
    _set_tags(client, run_id, tags)
    return run_id


def _end_run(client: Any, run_id: str, status: str, error: str | None = None) -> None:
    from rnnpipe.tracking import retry_locked

    if error is not None:
        _set_tags(client, run_id, {"error": error[:5000]})
    retry_locked(lambda: client.set_terminated(run_id, status))


def _end_open_trials(client: Any, parent_id: str, error: str) -> None:
    """Mark FAILED the nested runs no step ended (a trial that failed before its first step ran,
    or a sweep interrupted while trials ran)."""
    from rnnpipe.tracking import retry_locked

    experiment = retry_locked(lambda: client.get_run(parent_id)).info.experiment_id
    query = f"tags.`mlflow.parentRunId` = '{parent_id}' and attributes.status = 'RUNNING'"
    for run in retry_locked(lambda: client.search_runs([experiment], query)):
        _end_run(client, run.info.run_id, "FAILED", error)


def _log_outcome(client: Any, parent_id: str, best: dict[str, Any], finished: int,
                 failed: int) -> None:
    """The sweep's result on the parent run: best scores, trial counts, the best run."""
    from mlflow.entities import Metric, RunTag

    from rnnpipe.tracking import retry_locked

    now = int(time.time() * 1000)
    metrics = [Metric(f"best_{m}", best["metrics"][m], now, 0) for m in SWEEP_METRICS]
    metrics += [Metric("trials_finished", finished, now, 0),
                Metric("trials_failed", failed, now, 0)]
    tags = [RunTag("rnnpipe.sweep.best_run_id", best["run_id"]),
            RunTag("rnnpipe.sweep.best_trial", str(best["trial"]))]
    retry_locked(lambda: client.log_batch(parent_id, metrics=metrics, tags=tags))


def format_table(rows: list[dict[str, Any]], keys: list[str], metric: str) -> str:
    """The trials as a fixed-width table, best first (rows come sorted)."""
    header = ["rank", "trial", *keys, *SWEEP_METRICS, "status", "mlflow run"]
    body = []
    for rank, row in enumerate(rows, start=1):
        scores = [f"{row['metrics'][m]:.4f}" if row["metrics"] else "-" for m in SWEEP_METRICS]
        body.append([str(rank) if row["metrics"] else "-", str(row["trial"]),
                     *(json.dumps(row["overrides"][k], ensure_ascii=False) for k in keys),
                     *scores, row["status"], row["run_id"]])
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True))
             for line in [header, *body]]
    return f"trials sorted by {metric}:\n" + "\n".join(line.rstrip() for line in lines)


def _register_best(client: Any, params: Params, store: str, best: dict[str, Any],
                   parent_id: str) -> str:
    """Register the best trial's model and pass it through the promotion gate, recording the
    outcome on its run and the parent as `registry.register_logged` does for a pipeline run."""
    from rnnpipe import registry
    from rnnpipe.tracking import retry_locked

    model_uri = retry_locked(lambda: client.get_run(best["run_id"])).data.tags.get(
        "rnnpipe.model_uri")
    if not model_uri:
        raise RuntimeError(f"trial {best['trial']}'s run {best['run_id']} logged no model")
    name = params.register.model_name
    with registry.gate_lock(store):  # another sweep or pipeline may be gating a model now
        version, promoted, reason = registry.register(
            client, model_uri, name, best["run_id"], best["metrics"]["macro_f1"],
            best["metrics"]["accuracy"])
    role = registry.CHAMPION if promoted else registry.CANDIDATE
    outcome = {"rnnpipe.registered_model": name, "rnnpipe.registered_version": version,
               "rnnpipe.promotion": role, "rnnpipe.promotion_reason": reason}
    _set_tags(client, best["run_id"], outcome)
    _set_tags(client, parent_id, outcome)
    return f"register: {name} v{version} (trial {best['trial']}) is {role} ({reason})"


# --- the flow ------------------------------------------------------------------------------------

@flow(name="rnnpipe-sweep", log_prints=True)
def sweep_flow(overrides: dict[str, Any] | None = None, root: str = ".") -> dict[str, Any]:
    """Shared steps once, then every trial in parallel on the flow's task runner, then the
    table and registration of the best trial. `overrides` apply to every trial and are written to
    `params.yaml` (as with `rnnpipe run -S`). Returns the parent run id and the sorted trials."""
    import yaml

    from rnnpipe import tracking

    project = Path(root).resolve()
    if overrides:
        write_overrides(project, overrides)
    params = load_params(project / PARAMS_FILE)
    base = yaml.safe_load((project / PARAMS_FILE).read_text(encoding="utf-8")) or {}
    plans = plan_trials(params.sweep)
    per_trial = [trial_params(base, plan) for plan in plans]  # every trial valid before any work
    spec = params.sweep
    stage_environment()
    with in_project(project):
        client = tracking.client(params)
        store = tracking.tracking_uri(params)  # absolute: trials run in other directories
        parent_id = _new_run(client, params, f"sweep-{flow_run.name or 'local'}", {
            "rnnpipe.sweep": "parent", "rnnpipe.sweep.method": spec.method,
            "rnnpipe.sweep.metric": spec.metric,
            "rnnpipe.sweep.grid": json.dumps(spec.grid, ensure_ascii=False)})
    print(f"sweep: {len(plans)} trial(s), {spec.method} search over {', '.join(spec.grid)}; "
          f"MLflow parent run {parent_id}")
    try:
        for stage in SHARED_STAGES:
            ran = reproduce_stage(stage, str(project), env={"MLFLOW_RUN_ID": parent_id})
            print(f"{stage} (shared): {'ran' if ran else 'up to date, skipped'}")
        files, cache_dir = workspace_plan(project)
        trials = []
        with in_project(project):
            for number, (plan, trial) in enumerate(zip(plans, per_trial, strict=True), start=1):
                run_id = _new_run(client, trial, f"trial-{number} {describe(plan)}", {
                    "mlflow.parentRunId": parent_id, "rnnpipe.sweep": "trial",
                    "rnnpipe.sweep.trial": number})
                trials.append({"trial": number, "overrides": plan, "run_id": run_id})
        env = {"MLFLOW_TRACKING_URI": store,
               **{k: os.environ[k] for k in tracking.PREFECT_RUN_ENV if k in os.environ}}
        futures = [run_trial.submit(t["trial"], t["overrides"], t["run_id"], str(project),
                                    files, cache_dir, env) for t in trials]
        for row, future in zip(trials, futures, strict=True):
            future.wait()
            state = future.state
            if state.is_completed():
                row.update(status="FINISHED", metrics=future.result())
            else:
                row.update(status="FAILED", metrics=None, error=state.message)
        rows = sorted(trials, key=lambda r: (r["metrics"] is None,
                                             -(r["metrics"] or {}).get(spec.metric, 0.0)))
        table = format_table(rows, list(spec.grid), spec.metric)
        print(table)
        tracking.retry_locked(lambda: client.log_text(parent_id, table + "\n",
                                                      "sweep/trials.txt"))
        tracking.retry_locked(lambda: client.log_text(
            parent_id, json.dumps(rows, indent=2, ensure_ascii=False) + "\n",
            "sweep/trials.json"))
        done = [row for row in rows if row["metrics"]]
        if not done:
            raise TrialFailed("every trial failed: " + "; ".join(
                f"trial {row['trial']}: {row.get('error')}" for row in rows))
        best = done[0]
        _log_outcome(client, parent_id, best, finished=len(done), failed=len(rows) - len(done))
        print(f"best: trial {best['trial']} ({describe(best['overrides'])}), {spec.metric} "
              f"{best['metrics'][spec.metric]:.4f}, MLflow run {best['run_id']}")
        if params.register.enabled:
            print(_register_best(client, params, store, best, parent_id))
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        with contextlib.suppress(Exception):  # keep the sweep's error, not the bookkeeping's
            _end_open_trials(client, parent_id, error)
            _end_run(client, parent_id, "FAILED", error)
        raise
    _end_open_trials(client, parent_id, "the trial failed before its steps ran")
    _end_run(client, parent_id, "FINISHED")
    return {"parent_run_id": parent_id, "trials": rows}


# --- entry point ---------------------------------------------------------------------------------

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
                                          "dashboard_address": "127.0.0.1:8787"})


@contextlib.contextmanager
def shared_api() -> Iterator[None]:
    """Make the flow and its Dask workers use one Prefect API.

    With `PREFECT_API_URL` unset, Prefect starts a temporary API per process, and every worker
    process would start (and record its task runs in) its own. Start it here once instead: its
    URL then travels to the workers in the settings Prefect sends with each task. Prefect stops it
    when this process exits, as it does its own temporary API.
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if PREFECT_API_URL.value():
        yield
        return
    from prefect.server.api.server import SubprocessASGIServer

    server = SubprocessASGIServer()  # the instance Prefect itself would have started
    server.start()
    with temporary_settings({PREFECT_API_URL: server.api_url}):
        yield


def sweep(address: str | None = None, overrides: dict[str, Any] | None = None,
          root: str = ".") -> dict[str, Any]:
    """`rnnpipe sweep`: run the flow `rnnpipe-sweep` on a local Dask cluster with `sweep.workers`
    processes, or on the existing cluster at `address` (`tcp://host:port`)."""
    project = Path(root)
    params = load_params(project / PARAMS_FILE, overrides)  # bad params fail before Dask starts
    plan_trials(params.sweep)
    runner = task_runner(params.sweep.workers, address)
    # Dask logs every worker start and stop at INFO, with tracebacks for sockets closed on
    # shutdown; the trials' own progress is what matters here.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    with shared_api():
        return sweep_flow.with_options(task_runner=runner)(overrides=overrides or None,
                                                           root=str(project))
