"""`rnnpipe restore RUN_ID`: rebuild the workspace an MLflow run came from, from git and the DVC
remote: the same code, params, data and model bytes.

What a run records makes it possible: its commit (`git.commit`) and where the repository lives
(`mlflow.source.git.repoURL`, the `origin` remote), its `params.yaml` and the `dvc.lock` DVC wrote
after it (artifacts), and the DVC hashes of its data and model (`dvc.md5.<path>` tags). Restoring
clones the repository at that commit, puts the run's `params.yaml` and `dvc.lock` in place, pulls
the outputs from the DVC remote, and checks every hash against the run's tags.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from rnnpipe.errors import DataError, RnnpipeError
from rnnpipe.paths import DVC_LOCK, PARAMS_FILE
from rnnpipe.tracking.runs import dvc_md5
from rnnpipe.tracking.store import RetryingClient


def _git(*args: str, cwd: Path | None = None) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RnnpipeError(f"git {' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result.stdout


def restore(store: RetryingClient, run_id: str, destination: Path,
            origin: str | None = None, remote: str | None = None) -> dict[str, str]:
    """Rebuild run `run_id`'s workspace in `destination` (a new folder); return the checked
    hashes `{path: md5}`."""
    import mlflow
    from mlflow.exceptions import MlflowException

    try:
        run = store.get_run(run_id)
    except MlflowException:
        raise RnnpipeError(f"{run_id}: no such MLflow run in {store.tracking_uri}") from None
    tags = run.data.tags
    commit = tags.get("git.commit")
    origin = origin or tags.get("mlflow.source.git.repoURL")
    if not commit or not origin:
        raise DataError(f"run {run_id}: it records no git commit or repository (tags git.commit,"
                        f" mlflow.source.git.repoURL); give --origin, or run from a git checkout")
    if destination.exists() and any(destination.iterdir()):
        raise RnnpipeError(f"{destination}: not empty; restore into a new folder")
    with tempfile.TemporaryDirectory(prefix="rnnpipe-restore-") as tmp:
        for name in (PARAMS_FILE.name, DVC_LOCK.name):
            try:
                mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=name,
                                                    dst_path=tmp, tracking_uri=store.tracking_uri)
            except (MlflowException, OSError):
                raise DataError(f"run {run_id}: it has no {name} artifact (runs made by rnnpipe "
                                f"run, a deployment or a sweep log both)") from None
        _git("clone", "--quiet", "--no-checkout", origin, str(destination))
        _git("checkout", "--quiet", commit, cwd=destination)
        for name in (PARAMS_FILE.name, DVC_LOCK.name):
            shutil.copy2(Path(tmp) / name, destination / name)
    pull = [sys.executable, "-m", "dvc", "pull", "--quiet"] + (["--remote", remote] if remote
                                                                else [])
    result = subprocess.run(pull, cwd=destination, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RnnpipeError(f"dvc pull in {destination} failed: "
                           f"{(result.stderr or result.stdout).strip().splitlines()[-1:]}")
    checked = {}
    for tag, expected in sorted(tags.items()):
        if tag.startswith("dvc.md5."):
            path = destination / tag.removeprefix("dvc.md5.")
            actual = dvc_md5(path) if path.exists() else "missing"
            if actual != expected:
                raise DataError(f"{path}: restored {actual}, but run {run_id} used {expected}")
            checked[tag.removeprefix("dvc.md5.")] = actual
    return checked
