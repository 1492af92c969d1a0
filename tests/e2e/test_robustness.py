"""Robustness of whole processes: a SIGKILLed training run resumes where it stopped and ends
exactly like an uninterrupted one; two pipelines start at once on one MLflow SQLite store that
neither has created yet, and both record complete runs and models.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from rnnpipe.config import IngestParams, VocabParams
from rnnpipe.steps.ingest import ingest
from rnnpipe.steps.vocab import vocabulary

pytestmark = pytest.mark.slow

RNNPIPE = str(Path(sys.executable).parent / "rnnpipe")
TRAIN_FILES = ("models/model.keras", "reports/history.csv", "reports/train.json")
RESUME_EPOCHS = 8



def leftovers(root: Path) -> list[str]:
    """Temporary files an atomic write would leave if it had been interrupted."""
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


# --- kill -9 mid-training, then resume ---------------------------------------------------------

def _prepared_project(root: Path, corpora, tiny_train: dict) -> Path:
    """A folder with data and vocabulary ready (in-process: no subprocess needed for them)."""
    root.mkdir(parents=True)
    corpus = corpora.write(root / "corpus.tsv", corpora.zh(n_per_class=100))
    ingest(IngestParams(source=str(corpus), val_size=0.2, test_size=0.2), root / "data",
           root / "reports" / "ingest.json")
    vocabulary(VocabParams(tokenizer="char", min_count=1, workers=1), root / "data",
               root / "reports" / "vocab.json")
    params = {"train": {**tiny_train, "max_epochs": RESUME_EPOCHS, "patience": RESUME_EPOCHS}}
    (root / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    return root


def _finished_epochs(checkpoint: Path) -> int:
    try:
        # Written atomically, so never half a JSON document, however often it is read.
        return len(json.loads((checkpoint / "state.json").read_text(encoding="utf-8"))["history"])
    except FileNotFoundError:
        return 0


def test_sigkilled_training_resumes_and_ends_like_an_uninterrupted_run(
        tmp_path: Path, corpora, tiny_train, sh) -> None:
    whole = _prepared_project(tmp_path / "whole", corpora, tiny_train)
    killed = tmp_path / "killed"
    shutil.copytree(whole, killed)
    checkpoint = killed / ".rnnpipe" / "checkpoint"

    def start(root: Path) -> subprocess.Popen:
        log = open(root / "train.log", "w")  # noqa: SIM115 (the process owns it)
        return subprocess.Popen([RNNPIPE, "train"], cwd=root, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)

    uninterrupted, victim = start(whole), start(killed)
    try:
        deadline = time.monotonic() + 300
        while _finished_epochs(checkpoint) < 1:
            assert victim.poll() is None, (killed / "train.log").read_text()
            assert time.monotonic() < deadline, "no epoch finished in 300 s"
            time.sleep(0.05)
        os.killpg(victim.pid, signal.SIGKILL)  # mid-training: epochs remain
        assert victim.wait(timeout=60) == -signal.SIGKILL
        done = _finished_epochs(checkpoint)
        assert 1 <= done < RESUME_EPOCHS
        assert not any((killed / rel).exists() for rel in TRAIN_FILES)

        resumed = sh([RNNPIPE, "train"], killed, timeout=600)
        assert uninterrupted.wait(timeout=600) == 0, (whole / "train.log").read_text()
    finally:
        for process in (uninterrupted, victim):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    logged = resumed.stdout + resumed.stderr
    assert f"train: resuming after epoch {done} from .rnnpipe/checkpoint" in logged, logged
    # Training goes on from the next epoch (progress lines: the output is not a terminal).
    assert f"train: epoch {done + 1}/{RESUME_EPOCHS}" in logged, logged
    assert "train: epoch 1/" not in logged, logged
    for rel in ("reports/history.csv", "reports/train.json"):
        assert (killed / rel).read_bytes() == (whole / rel).read_bytes(), rel
    # The same weights, bit for bit. (config.json may differ in Keras' `shared_object_id`
    # annotations: a freshly built model shares objects a loaded one does not.)
    weights = [zipfile.ZipFile(root / "models" / "model.keras").read("model.weights.h5")
               for root in (killed, whole)]
    assert weights[0] == weights[1]
    history = (killed / "reports" / "history.csv").read_text().splitlines()
    assert len(history) == 1 + RESUME_EPOCHS
    assert not checkpoint.exists() and not leftovers(killed)


# --- two pipelines, one MLflow store -----------------------------------------------------------

def test_two_pipelines_log_to_one_new_sqlite_store_at_once(tmp_path: Path, new_project,
                                                           corpora, forget_tracking_uri) -> None:
    """Two checkouts, `dvc repro` in both at the same moment, one SQLite store that neither has
    created yet: both finish, with complete FINISHED runs (params, metrics, model), each model
    registered in its dataset's lineage."""
    import mlflow
    from mlflow import MlflowClient

    store = f"sqlite:///{tmp_path / 'shared' / 'mlflow.db'}"
    (tmp_path / "shared").mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": store}
    projects = {}
    for name, rows, tokenizer in (("reviews", corpora.zh(30), "char"),
                                  ("news", corpora.en(12), "word")):
        root = tmp_path / name
        corpora.write(root / "corpus" / f"{name}.tsv", rows)
        projects[name] = new_project(root, f"corpus/{name}.tsv", tokenizer)

    started = {name: subprocess.Popen(["dvc", "repro"], cwd=root, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True)
               for name, root in projects.items()}
    try:
        outputs = {name: process.communicate(timeout=900)[0]
                   for name, process in started.items()}
    finally:
        for process in started.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
    for name, process in started.items():
        assert process.returncode == 0, f"{name}:\n{outputs[name]}"

    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("rnnpipe").experiment_id])
    assert len(runs) == 2
    assert sorted(r.data.params["ingest.source"] for r in runs) == [
        "corpus/news.tsv", "corpus/reviews.tsv"]
    for r in runs:
        assert r.info.status == "FINISHED", r.data.tags.get("error")
        assert r.data.params["train.max_epochs"] == "2"
        for metric in ("test_accuracy", "test_macro_f1", "val_macro_f1", "ingest.documents_kept",
                       "vocab.size"):
            assert metric in r.data.metrics, metric
        assert len(client.get_metric_history(r.info.run_id, "history/val_loss")) == 2
        artifacts = {a.path for a in client.list_artifacts(r.info.run_id, "reports")}
        assert "reports/metrics.json" in artifacts
        mlflow.set_tracking_uri(store)
        try:
            model = mlflow.models.get_model_info(r.data.tags["rnnpipe.model_uri"])
        finally:
            forget_tracking_uri()
        assert "python_function" in model.flavors
    for name in projects:
        (version,) = client.search_model_versions(f"name = 'rnnpipe-{name}'")
        assert str(version.version) == "1"
        assert version.run_id in {r.info.run_id for r in runs}
    assert sorted(m.name for m in client.search_registered_models()) == [
        "rnnpipe-news", "rnnpipe-reviews"]  # both gate locks released
