"""MLflow bookkeeping: one pipeline execution is one MLflow run, whichever entry point ran it.

Each step is its own process (DVC runs `rnnpipe <step>`), so the run is found, not inherited:
`MLFLOW_RUN_ID` when a caller (the Prefect flow, a sweep) created the run; otherwise the run in
`.rnnpipe/run.json` if it is still RUNNING (an earlier step of the same `dvc repro`); otherwise a
new run. The evaluate step ends the run; a step that raises ends it FAILED with the error.

The first steps, ingest and vocab, do not open the run when they succeed: what they log (and
the run's tags and params, taken when the step starts) waits in `.rnnpipe/pending/`, and the
next step that opens the run replays it there first (`PendingRun`). So their processes never
import MLflow (about 2 s each). A step that fails opens the run to end it FAILED, as every step
does; `record_pending` records what is left when no later step opens a run (the Prefect flow
calls it when it ends; otherwise the next execution does, as a run of its own).

The store defaults to SQLite at `mlruns/mlflow.db` with artifacts under `mlruns/artifacts`;
`MLFLOW_TRACKING_URI` overrides it. Only `MlflowClient` calls with explicit run ids are used, since
MLflow's active run is thread-local and Prefect runs tasks in threads.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from rnnpipe.config import Params
from rnnpipe.io import write_json

POINTER = Path(".rnnpipe/run.json")
PENDING_DIR = Path(".rnnpipe/pending")  # what deferred steps logged (see PendingRun)
PENDING = PENDING_DIR / "journal.json"
DEFERRED_STEPS = ("ingest", "vocab")  # steps that log without MLflow when they succeed
PREFECT_RUN_ENV = ("RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME")
T = TypeVar("T")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "1")


def store_root(cwd: Path | None = None) -> Path:
    """The checkout whose `mlruns/` holds the store.

    `dvc exp run --queue` runs each experiment in a temporary copy under `.dvc/tmp/exps/`; its
    runs belong in the main checkout's store, not in a folder DVC deletes afterwards.
    """
    cwd = (cwd or Path.cwd()).resolve()
    parts = cwd.parts
    for i in range(len(parts) - 2):
        if parts[i:i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return cwd


def tracking_uri(params: Params) -> str:
    """`MLFLOW_TRACKING_URI`, else `params.mlflow.tracking_uri` with relative SQLite paths anchored
    at the store root."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.mlflow.tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        db = store_root() / uri[len(prefix):]
        db.parent.mkdir(parents=True, exist_ok=True)
        uri = prefix + str(db)
    return uri


def retry_locked(fn: Callable[[], T], attempts: int = 8, base_delay_s: float = 0.2) -> T:
    """Call `fn`, retrying with jittered backoff while SQLite says the database is locked.

    Two pipelines writing one SQLite store at once see this; the lock is released in ms.
    """
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:  # MLflow wraps the sqlite error in several exception types
            if "database is locked" not in str(exc) or attempt == attempts - 1:
                raise
            time.sleep(base_delay_s * 2 ** attempt * (0.5 + random.random()))
    raise AssertionError("unreachable")


def client(params: Params):
    """An `MlflowClient` for the configured store (sets the fluent API's URI too)."""
    import mlflow
    from mlflow.tracking import MlflowClient

    uri = tracking_uri(params)
    mlflow.set_tracking_uri(uri)
    with _sqlite_init_lock(uri):
        # MLflow creates and migrates a new SQLite store's tables when a client first opens it,
        # without a lock: two pipelines starting at once on one new store then fail ("table
        # already exists", "duplicate column"). Opening it under a file lock lets one do it.
        return MlflowClient(uri)


@contextlib.contextmanager
def _sqlite_init_lock(uri: str) -> Iterator[None]:
    """An exclusive inter-process lock beside a SQLite store's file (a no-op for other stores
    and where `fcntl` is missing)."""
    prefix = "sqlite:///"
    try:
        import fcntl
    except ImportError:  # not POSIX
        fcntl = None
    if fcntl is None or not uri.startswith(prefix):
        yield
        return
    db = Path(uri[len(prefix):])
    with open(db.with_name(f"{db.name}.init.lock"), "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(mlflow_client, params: Params) -> str:
    """Get or create the experiment; a local store keeps its artifacts under `mlruns/`."""
    name = params.mlflow.experiment
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri(params).startswith("sqlite:"):
        location = (store_root() / params.mlflow.artifact_root).resolve().as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it first
        return mlflow_client.get_experiment_by_name(name).experiment_id


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"train": {"epochs": 5}}` → `{"train.epochs": 5}`."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and value:
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit and whether the tree differs from it (MLflow's own tag names where they exist)."""
    # One `git status` answers all three questions (commit, branch, tracked changes): each git
    # process costs milliseconds, and every step process that opens a run asks.
    try:
        out = subprocess.run(["git", "status", "--porcelain=v2", "--branch",
                              "--untracked-files=no"], cwd=cwd, capture_output=True, text=True,
                             timeout=20, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    headers = dict(line[2:].partition(" ")[::2] for line in out.splitlines()
                   if line.startswith("# "))
    commit = headers.get("branch.oid", "(initial)")
    if commit == "(initial)":  # no commit yet
        return {}
    dirty = any(line and not line.startswith("#") for line in out.splitlines())
    tags = {"mlflow.source.git.commit": commit, "git.commit": commit,
            "git.dirty": str(dirty).lower()}
    branch = headers.get("branch.head")
    if branch and branch != "(detached)":
        tags["mlflow.source.git.branch"] = branch
    return tags


def dvc_lock_hashes(lock_path: Path = Path("dvc.lock")) -> dict[str, str]:
    """`{path: md5}` for every dependency and output recorded in `dvc.lock`."""
    if not lock_path.exists():
        return {}
    import yaml

    lock = yaml.safe_load(lock_path.read_text(encoding="utf-8")) or {}
    hashes: dict[str, str] = {}
    for stage in (lock.get("stages") or {}).values():
        for entry in (stage.get("deps") or []) + (stage.get("outs") or []):
            if "md5" in entry:
                hashes[entry["path"]] = entry["md5"]
    return hashes


def run_tags(step: str) -> dict[str, str]:
    """Tags that tie a run to whoever started it: git, DVC experiment, Prefect flow run."""
    tags = {"rnnpipe.started_by_step": step, "mlflow.source.type": "JOB",
            "mlflow.source.name": "rnnpipe", **git_tags()}
    flow_id, flow_name = (os.environ.get(k) for k in PREFECT_RUN_ENV)
    if flow_id:
        tags["prefect.flow_run_id"] = flow_id
    if flow_name:
        tags["prefect.flow_run_name"] = flow_name
    if os.environ.get("DVC_EXP_NAME"):
        tags["dvc.exp_name"] = os.environ["DVC_EXP_NAME"]
    if os.environ.get("DVC_EXP_BASELINE_REV"):
        tags["dvc.exp_baseline_rev"] = os.environ["DVC_EXP_BASELINE_REV"]
    return tags


class _StepLog:
    """What a step logs: the helpers shared by `StepRun` (MLflow now) and `PendingRun` (later)."""

    step: str

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        raise NotImplementedError

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        raise NotImplementedError

    def log_ingest(self, summary: dict) -> None:
        """Record the ingest summary: sizes and drops as metrics, the JSON as an artifact."""
        metrics = {f"ingest.{k}": v for k, v in summary["splits"].items()}
        metrics.update({f"ingest.dropped.{k}": v for k, v in summary["dropped"].items()})
        metrics["ingest.documents_kept"] = summary["documents_kept"]
        self.log_metrics(metrics)
        self.log_artifact("reports/ingest.json", "reports")

    def log_vocab(self, summary: dict) -> None:
        """Record the vocabulary summary."""
        self.log_metrics({"vocab.size": summary["size"],
                          "vocab.train_coverage": summary["train_coverage"],
                          "vocab.val_oov_rate": summary["val_oov_rate"]})
        self.log_artifact("reports/vocab.json", "reports")


class StepRun(_StepLog):
    """The pipeline's MLflow run as seen from one step, with explicit-run-id logging helpers."""

    def __init__(self, mlflow_client, run_id: str, created: bool, step: str) -> None:
        self.client = mlflow_client
        self.run_id = run_id
        self.created = created
        self.step = step

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Log numeric metrics (optionally at an epoch `step`) in one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step or 0) for k, v in metrics.items()]
        retry_locked(lambda: self.client.log_batch(self.run_id, metrics=batch))

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set string tags in one batch."""
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)) for k, v in tags.items()]
        retry_locked(lambda: self.client.log_batch(self.run_id, tags=batch))

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file to the run's artifacts."""
        retry_locked(lambda: self.client.log_artifact(self.run_id, str(path), artifact_path))


class PendingRun(_StepLog):
    """A deferred step's view of the run: what it logs waits in `.rnnpipe/pending/`.

    Started, it records the run's tags (git state, Prefect flow run), params and start time as
    they are before the step's work, exactly what opening the run would have recorded; the step
    that opens the run replays all of it (`_replay`). Artifacts are copied, so the run gets the
    files as they were when logged. No MLflow import: that is the point.
    """

    def __init__(self, params: Params, step: str) -> None:
        self.step = step
        journal = _read_journal()
        if journal is not None and journal["execution"] != _execution_id():
            # Left by an execution that ended before any step opened its run (rare: the
            # Prefect flow records it when it ends): record it as its own run first.
            record_pending(params, "FINISHED", "recorded by the next execution: no later step "
                           "of its execution opened the run")
            journal = None
        if journal is None:
            shutil.rmtree(PENDING_DIR, ignore_errors=True)
            journal = {"execution": _execution_id(), "step": step,
                       "start_time": int(time.time() * 1000), "tags": run_tags(step),
                       "params": _param_values(params), "metrics": [], "artifacts": []}
        journal.setdefault("steps", []).append(step)
        self.journal = journal
        self._save()

    def _save(self) -> None:
        self.journal["updated"] = int(time.time() * 1000)
        write_json(PENDING, self.journal)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Keep metrics for the run, with their time and epoch `step`."""
        now = int(time.time() * 1000)
        self.journal["metrics"] += [[k, float(v), now, step or 0] for k, v in metrics.items()]
        self._save()

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Keep a copy of a file for the run's artifacts."""
        copy = PENDING_DIR / "artifacts" / str(len(self.journal["artifacts"])) / Path(path).name
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, copy)
        self.journal["artifacts"].append([str(copy), artifact_path])
        self._save()


def _read_journal() -> dict | None:
    try:
        return json.loads(PENDING.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _param_values(params: Params) -> dict[str, str]:
    flat = flatten({k: v for k, v in params.to_dict().items() if k != "sweep"})
    return {k: json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v
            for k, v in flat.items()}


def new_run(mlflow_client, params: Params, step: str, journal: dict | None = None) -> str:
    """Create the run, with tags and params as of now, or as a deferred step recorded them."""
    from mlflow.entities import Param

    exp_id = retry_locked(lambda: experiment_id(mlflow_client, params))
    tags = journal["tags"] if journal else run_tags(step)
    start_time = journal["start_time"] if journal else None
    run = retry_locked(lambda: mlflow_client.create_run(exp_id, start_time=start_time,
                                                        tags=tags))
    values = journal["params"] if journal else _param_values(params)
    batch = [Param(k, v) for k, v in values.items()]
    retry_locked(lambda: mlflow_client.log_batch(run.info.run_id, params=batch))
    return run.info.run_id


def _replay(mlflow_client, run_id: str, journal: dict) -> None:
    """Log what deferred steps kept on the run, then forget it."""
    from mlflow.entities import Metric

    if journal["metrics"]:
        batch = [Metric(k, v, ts, step) for k, v, ts, step in journal["metrics"]]
        retry_locked(lambda: mlflow_client.log_batch(run_id, metrics=batch))
    for copy, artifact_path in journal["artifacts"]:
        retry_locked(lambda c=copy, a=artifact_path: mlflow_client.log_artifact(run_id, c, a))
    shutil.rmtree(PENDING_DIR, ignore_errors=True)


def record_pending(params: Params, status: str, note: str) -> str | None:
    """Record what deferred steps left in `.rnnpipe/pending/` as a run ended with `status`
    (the note as a tag); return its id, or None when nothing is pending.

    For executions in which no later step opened the run: only ingest and vocab ran (the model
    was up to date), or the next step's process died before it got that far.
    """
    journal = _read_journal()
    if journal is None:
        return None
    mlflow_client = client(params)
    run_id = new_run(mlflow_client, params, journal["step"], journal)
    _replay(mlflow_client, run_id, journal)
    tag = "error" if status == "FAILED" else "rnnpipe.note"
    retry_locked(lambda: mlflow_client.set_tag(run_id, tag, note[:5000]))
    retry_locked(lambda: mlflow_client.set_terminated(run_id, status,
                                                      end_time=journal["updated"]))
    return run_id


def _execution_id() -> int:
    """Identifies one pipeline execution: the process group, which `dvc repro`, `dvc exp run`
    and the Prefect flow share with every stage process they start."""
    return os.getpgid(0)


def _pointed_run(mlflow_client) -> str | None:
    """The run an earlier step of this execution left RUNNING, if any.

    A RUNNING run left by another execution was abandoned (its process was killed): it is marked
    KILLED so the UI does not show it running forever.
    """
    if not POINTER.exists():
        return None
    try:
        pointer = json.loads(POINTER.read_text(encoding="utf-8"))
        run_id = pointer["run_id"]
        run = retry_locked(lambda: mlflow_client.get_run(run_id))
    except Exception:  # a pointer into another store, or a deleted run
        return None
    if run.info.status != "RUNNING":
        return None
    if pointer.get("execution") == _execution_id():
        return run_id
    retry_locked(lambda: mlflow_client.set_tag(run_id, "rnnpipe.abandoned", "true"))
    retry_locked(lambda: mlflow_client.set_terminated(run_id, "KILLED"))
    return None


def open_run(params: Params, step: str) -> StepRun:
    """Find or create the pipeline's run for `step` (see the module docstring)."""
    journal = _read_journal()
    if journal is not None and journal["execution"] != _execution_id():
        record_pending(params, "FINISHED", "recorded by the next execution: no later step of "
                       "its execution opened the run")
        journal = None
    mlflow_client = client(params)
    run_id = os.environ.get("MLFLOW_RUN_ID") or _pointed_run(mlflow_client)
    created = run_id is None
    if created:
        # A run that deferred steps of this execution began carries their tags, params and
        # start time, as if the first of them had opened it.
        run_id = new_run(mlflow_client, params, step, journal)
        write_json(POINTER, {"run_id": run_id, "execution": _execution_id()})
    if journal is not None:
        _replay(mlflow_client, run_id, journal)
    run = StepRun(mlflow_client, run_id, created, step)
    if not created:
        run.set_tags({k: v for k, v in run_tags(step).items()
                      if k.startswith(("prefect.", "dvc.exp"))})
    return run


def end_run(run: StepRun, status: str, error: str | None = None) -> None:
    """Terminate the run (FINISHED or FAILED, with the error as a tag) and drop the pointer."""
    if error is not None:
        run.set_tags({"error": error[:5000], "rnnpipe.failed_step": run.step})
    retry_locked(lambda: run.client.set_terminated(run.run_id, status))
    POINTER.unlink(missing_ok=True)


def _deferrable(step: str) -> bool:
    """Whether `step` may keep its logging for a later step: it is one of the first steps, no
    caller named the run, and no step of this execution has opened one yet."""
    if step not in DEFERRED_STEPS or os.environ.get("MLFLOW_RUN_ID"):
        return False
    try:
        pointer = json.loads(POINTER.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return True
    return pointer.get("execution") != _execution_id()


@contextlib.contextmanager
def step_run(step: str, params: Params,
             final: bool = False) -> Iterator[StepRun | PendingRun]:
    """The pipeline run for one step; ends it FINISHED when `final`, FAILED if the step raises.

    Ingest and vocab get a `PendingRun` (see the module docstring) unless the run is already
    open; if they raise, the run is opened to record the failure as for any step.
    """
    if _deferrable(step):
        pending = PendingRun(params, step)
        try:
            yield pending
        except BaseException as exc:
            try:
                end_run(open_run(params, step), "FAILED", f"{step}: {type(exc).__name__}: {exc}")
            except Exception as tracking_exc:  # report the step's error, not the bookkeeping's
                print(f"rnnpipe: warning: could not record the failure in MLflow: "
                      f"{tracking_exc}", file=sys.stderr)
            raise
        return
    run = open_run(params, step)
    try:
        yield run
    except BaseException as exc:
        end_run(run, "FAILED", f"{step}: {type(exc).__name__}: {exc}")
        raise
    if final:
        end_run(run, "FINISHED")
