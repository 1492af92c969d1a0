"""MLflow as the system of record: the run a pipeline execution records, the raw-text pyfunc
(loaded, served over HTTP, used by `rnnpipe predict`), and runs that lead back to their code
(git), data (`dvc.lock`) and flow run.

One real `rnnpipe run` (the Prefect flow, each task a DVC stage) of a tiny Chinese + English
corpus (jieba segments both) is shared by every test here.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import infer_signature

from rnnpipe.paths import ids_dir
from rnnpipe.tracking.registry import SERVED_MODULES

pytestmark = pytest.mark.slow

ZH_TEXTS = ["这次酒店质量很好，非常满意。", "东西质量太差，浪费时间。"]
EN_TEXTS = ["The coach says the team will score a goal in the league match.",
            "Investors sold bank shares after the company profit report."]
TEXTS = ZH_TEXTS + EN_TEXTS
NAME = "rnnpipe-mixed"  # register.model_name: auto, after corpus/mixed.tsv
CHAMPION_URI = f"models:/{NAME}@champion"
EPOCHS = 3
HISTORY = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1")



@dataclass(frozen=True)
class Pipeline:
    """One finished pipeline execution and what to check it against."""

    root: Path
    store: str
    run_id: str
    commit: str
    lock: dict
    labels: list[str]
    output: str

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.store)

    def lock_md5(self) -> dict[str, str]:
        """`{path: md5}` of every data/model output in `dvc.lock`."""
        return {entry["path"]: entry["md5"] for stage in self.lock["stages"].values()
                for entry in stage.get("outs", [])
                if entry["path"].startswith(("data/", "models/")) and "md5" in entry}

    def runs(self) -> list:
        return mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, new_project, corpora, sh,
             forget_tracking_uri) -> Iterator[Pipeline]:
    """`rnnpipe run` once in a temp project; the module's tests then run inside the project
    against its store, as a user would."""
    with pytest.MonkeyPatch.context() as patch:
        root = tmp_path_factory.mktemp("mlflow") / "project"
        # The corpus lives in corpus/, the folder dvc.yaml hashes for bring-your-own data.
        corpora.write(root / "corpus" / "mixed.tsv", corpora.zh() + corpora.en())
        new_project(root, "corpus/mixed.tsv", "jieba",
                    train={"max_epochs": EPOCHS, "patience": EPOCHS})
        result = sh(["rnnpipe", "run"], root, timeout=900)
        store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.chdir(root)
        mlflow.set_tracking_uri(store)
        (only,) = mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")
        vocab = json.loads((root / "data" / "vocab.json").read_text(encoding="utf-8"))
        yield Pipeline(
            root=root, store=store, run_id=only.info.run_id,
            commit=sh(["git", "rev-parse", "HEAD"], root).stdout.strip(),
            lock=yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")),
            labels=vocab["labels"], output=result.stdout + result.stderr)
    forget_tracking_uri()  # later tests get the store they had


@pytest.fixture(scope="module")
def champion_answers(pipeline: Pipeline) -> pd.DataFrame:
    """The champion's answers for TEXTS, loaded in this process: what every other door into the
    model (HTTP, `rnnpipe predict`) must agree with."""
    return mlflow.pyfunc.load_model(CHAMPION_URI).predict(TEXTS)


def check_answers(frame: pd.DataFrame, labels: list[str], n: int) -> None:
    """One row per text: a known label, a probability per class, summing to 1, argmax = label."""
    assert list(frame.columns) == ["label", *(f"prob_{label}" for label in labels)]
    assert len(frame) == n
    probs = frame[[f"prob_{label}" for label in labels]]
    assert probs.sum(axis=1).to_numpy() == pytest.approx([1.0] * n, abs=1e-4)
    assert set(frame["label"]) <= set(labels)
    assert (probs.idxmax(axis=1).str.removeprefix("prob_") == frame["label"]).all()


def same_answers(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert got["label"].tolist() == expected["label"].tolist()
    pd.testing.assert_frame_equal(got.drop(columns="label"), expected.drop(columns="label"),
                                  atol=1e-5, check_dtype=False)


def test_the_flow_agrees_with_dvc_and_records_one_run(pipeline: Pipeline, sh) -> None:
    assert "Finished in state Completed" in pipeline.output
    assert "up to date" in sh(["dvc", "status"], pipeline.root).stdout
    for path in ("data/train.tsv", "data/vocab.json", "models/model.keras",
                 "reports/metrics.json", "reports/history.csv",
                 "reports/plots/training_curves.png"):
        assert (pipeline.root / path).exists(), path
    assert f"registry        {NAME} v1: champion" in pipeline.output  # the run summary
    # Nothing changed: nothing runs, and no new MLflow run is recorded.
    again = sh(["rnnpipe", "run"], pipeline.root, timeout=600)
    assert "every stage is up to date: nothing to run" in again.stdout + again.stderr
    assert len(pipeline.runs()) == 1


def test_run_has_params_epoch_curves_test_metrics_and_artifacts(pipeline: Pipeline,
                                                                 tmp_path: Path) -> None:
    tracked = pipeline.client.get_run(pipeline.run_id)
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["train.max_epochs"] == str(EPOCHS)
    assert params["train.lstm_units"] == "[8]"
    assert params["vocab.tokenizer"] == "jieba"
    assert params["register.model_name"] == "auto"

    summary = json.loads((pipeline.root / "reports" / "train.json").read_text())
    epochs = list(range(1, summary["epochs_run"] + 1))
    for key in HISTORY:
        history = pipeline.client.get_metric_history(pipeline.run_id, f"history/{key}")
        assert sorted(m.step for m in history) == epochs, key
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    logged = tracked.data.metrics
    for split in ("test", "val"):
        for key in ("accuracy", "macro_f1"):
            assert logged[f"{split}_{key}"] == metrics[split][key], (split, key)
    assert logged["baseline_test_accuracy"] == metrics["baseline"]["test_accuracy"]
    assert logged["baseline_test_macro_f1"] == metrics["baseline"]["test_macro_f1"]
    assert logged["train_accuracy"] == summary["best_train_accuracy"]

    expected = {"params.yaml", "dvc.lock", "plots/confusion_matrix.png",
                "plots/training_curves.png", "reports/classification_report.txt",
                "reports/metrics.json", "reports/per_class.json", "reports/misclassified.tsv",
                "reports/confusion.csv", "reports/train.json", "reports/ingest.json",
                "reports/vocab.json", "reports/history.csv", "vocabulary/vocab.json"}
    listed = {f.path for folder in ("", "plots", "reports", "vocabulary")
              for f in pipeline.client.list_artifacts(pipeline.run_id, folder or None)}
    assert expected <= listed, sorted(expected - listed)
    local = Path(mlflow.artifacts.download_artifacts(run_id=pipeline.run_id,
                                                     dst_path=str(tmp_path)))
    for png in ("confusion_matrix", "training_curves"):
        assert (local / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (local / "reports" / "classification_report.txt").read_text(encoding="utf-8")
    assert all(label in report for label in pipeline.labels)
    per_class = json.loads((local / "reports" / "per_class.json").read_text(encoding="utf-8"))
    assert sorted(per_class["per_class"]) == pipeline.labels
    misclassified = (local / "reports" / "misclassified.tsv").read_text(encoding="utf-8")
    assert misclassified.startswith("actual\tpredicted\tprobability\ttext\n")
    for name in ("params.yaml", "dvc.lock"):
        assert (local / name).read_bytes() == (pipeline.root / name).read_bytes(), name


def test_run_leads_back_to_the_commit_the_dvc_lock_data_and_the_flow_run(
        pipeline: Pipeline) -> None:
    tags = pipeline.client.get_run(pipeline.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == tags["git.commit"] == pipeline.commit
    assert tags["git.dirty"] == "false"  # the run began before any output changed the tree
    assert tags["rnnpipe.entry_point"] == "prefect"
    locked = pipeline.lock_md5()
    assert {"data/train.tsv", "data/vocab.json", "models/model.keras"} <= set(locked)
    for path, md5 in locked.items():
        assert tags[f"dvc.md5.{path}"] == md5, path
    assert tags["prefect.flow_run_id"]
    assert f"Flow run '{tags['prefect.flow_run_name']}'" in pipeline.output

    (used,) = pipeline.client.get_run(pipeline.run_id).inputs.dataset_inputs
    assert used.dataset.digest == locked["data/train.tsv"]
    assert used.dataset.name == "train"
    assert json.loads(used.dataset.source) == {"uri": "data/train.tsv"}
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"


def test_pipeline_registers_its_model_as_the_first_champion(pipeline: Pipeline) -> None:
    client = pipeline.client
    champion = client.get_model_version_by_alias(NAME, "champion")
    candidate = client.get_model_version_by_alias(NAME, "candidate")
    assert str(champion.version) == str(candidate.version) == "1"
    assert champion.run_id == pipeline.run_id
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    assert float(champion.tags["test_macro_f1"]) == metrics["test"]["macro_f1"]
    assert json.loads(champion.tags["rnnpipe.labels"]) == pipeline.labels
    assert champion.tags["promotion"] == "champion"
    assert champion.description.startswith("promoted to champion: first model")
    tags = client.get_run(pipeline.run_id).data.tags
    assert tags["rnnpipe.registered_model"] == NAME
    assert tags["rnnpipe.registered_version"] == "1"
    assert tags["rnnpipe.promotion"] == "champion"


def test_pyfunc_round_trip_on_raw_chinese_and_english_text(
        pipeline: Pipeline, champion_answers: pd.DataFrame, tmp_path: Path) -> None:
    check_answers(champion_answers, pipeline.labels, len(TEXTS))
    model = mlflow.pyfunc.load_model(CHAMPION_URI)
    same_answers(model.predict(pd.DataFrame({"text": TEXTS})), champion_answers)
    same_answers(model.predict(ZH_TEXTS[0]), champion_answers.iloc[:1])
    same_answers(model.predict(EN_TEXTS).set_axis([2, 3]), champion_answers.iloc[2:])
    outputs = model.metadata.get_output_schema().input_names()
    assert outputs == ["label", *(f"prob_{label}" for label in pipeline.labels)]
    # The signature is written out, not inferred: it must be what MLflow infers from real answers.
    assert model.metadata.signature == infer_signature(TEXTS, champion_answers)

    # Everything it needs is inside the model: weights, vocabulary (labels, tokenizer), the code
    # it runs (and only that), pinned requirements and an input example.
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))
    for inside in ("artifacts/model.keras", "artifacts/vocab.json",
                   "artifacts/preprocessing.json", "serving_input_example.json"):
        assert (local / inside).is_file(), inside
    code = local / "code" / "rnnpipe"
    assert sorted(p.name for p in code.iterdir()) == ["__init__.py", "errors.py", "model"]
    assert sorted(p.name for p in (code / "model").iterdir()) == sorted(
        f"{m}.py" for m in SERVED_MODULES)
    vocab = json.loads((local / "artifacts" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["tokenizer"] == "jieba" and vocab["labels"] == pipeline.labels
    requirements = (local / "requirements.txt").read_text().split()
    for package in ("keras", "jieba", "mlflow", "pandas"):
        assert any(line.startswith(f"{package}==") for line in requirements), package


# Loads the champion in a fresh interpreter and reports what that imported.
LOAD_AND_PREDICT = """
import json, sys
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
answers = model.predict(json.loads(sys.argv[2]))
classifier = sys.modules["rnnpipe.model.classifier"]
print(json.dumps({"labels": list(answers["label"]), "modules": sorted(sys.modules),
                  "classifier": classifier.__file__}))
"""


def test_loading_the_champion_imports_no_pipeline_code(pipeline: Pipeline, sh,
                                                       champion_answers: pd.DataFrame) -> None:
    result = sh([sys.executable, "-c", LOAD_AND_PREDICT, CHAMPION_URI, json.dumps(TEXTS)],
                pipeline.root, timeout=300)
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["labels"] == champion_answers["label"].tolist()
    forbidden = ("prefect", "dvc", "rnnpipe.steps", "rnnpipe.tracking", "rnnpipe.corpus",
                 "flows", "rnnpipe.model.training", "rnnpipe.model.embeddings")
    imported = [m for m in loaded["modules"]
                if any(m == f or m.startswith(f"{f}.") for f in forbidden)]
    assert not imported, imported
    assert "/code/rnnpipe/model/classifier.py" in loaded["classifier"]  # the model's own copy


def post(url: str, payload: dict) -> dict:
    import urllib.request

    request = urllib.request.Request(url, data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


# On PYTHONPATH for the server: hides the editable install of rnnpipe, so the served model can
# only work with the copy of the code inside it.
HIDE_RNNPIPE = """import sys
sys.meta_path[:] = [f for f in sys.meta_path if "__editable__" not in getattr(f, "__module__", "")]
"""


def test_served_champion_answers_raw_text_over_http(
        pipeline: Pipeline, champion_answers: pd.DataFrame, tmp_path: Path, server, port,
        sh) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_RNNPIPE)
    elsewhere = tmp_path / "elsewhere"  # and no project file (models/, data/) within reach
    elsewhere.mkdir()
    env = {"MLFLOW_TRACKING_URI": pipeline.store, "PYTHONPATH": str(hide)}
    probe = sh([sys.executable, "-c",
                "import importlib.util as u; print(u.find_spec('rnnpipe'))"], elsewhere,
               env={**os.environ, **env})
    assert probe.stdout.strip() == "None", "rnnpipe is not an editable install; cannot hide it"

    base = f"http://127.0.0.1:{port()}"
    with server([Path(sys.executable).parent / "mlflow", "models", "serve", "-m", CHAMPION_URI,
                 "--env-manager", "local", "-h", "127.0.0.1", "-p", base.rsplit(":", 1)[1]],
                f"{base}/ping", tmp_path / "serve.log", env=env, cwd=elsewhere, timeout=300):
        payloads = ({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
                    {"dataframe_records": [{"text": t} for t in TEXTS]},
                    {"inputs": TEXTS})
        for payload in payloads:
            answers = pd.DataFrame(post(f"{base}/invocations", payload)["predictions"])
            check_answers(answers, pipeline.labels, len(TEXTS))
            same_answers(answers, champion_answers)


def test_rnnpipe_predict_uses_the_champion(pipeline: Pipeline, champion_answers: pd.DataFrame,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from rnnpipe import cli

    cli.main(["predict", *TEXTS])
    captured = capsys.readouterr()
    assert f"model: {CHAMPION_URI} (v1)" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    assert [line["label"] for line in lines] == champion_answers["label"].tolist()
    for line in lines:
        assert sorted(line["probabilities"]) == sorted(pipeline.labels)
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_scoring_failure_fails_evaluate_with_the_scorers_error(pipeline: Pipeline, sh) -> None:
    """Evaluate scores in a second process (`rnnpipe evaluate --score-only`) while it logs the
    model: that process's error (its error file) is the step's error, the run evaluate created
    is FAILED with it, and nothing is registered."""
    client = pipeline.client
    versions = len(client.search_model_versions(f"name = '{NAME}'"))
    before = {r.info.run_id for r in pipeline.runs()}
    metrics = (pipeline.root / "reports" / "metrics.json").read_bytes()
    test_ids = ids_dir("test") / "ids.npy"  # the test split's token ids, as vocab wrote them
    hidden = pipeline.root / test_ids.with_name("ids.npy.hidden")
    (pipeline.root / test_ids).rename(hidden)
    try:
        failed = sh(["rnnpipe", "evaluate"], pipeline.root, check=False, timeout=300)
    finally:
        hidden.rename(pipeline.root / test_ids)
    message = f"{test_ids}: missing; run the vocabulary step first (rnnpipe vocab)"
    assert failed.returncode == 2, failed.stderr
    assert failed.stderr.count(message) == 1, failed.stderr
    assert failed.stderr.strip().splitlines()[-1] == f"rnnpipe: error: {message}"
    assert "Traceback" not in failed.stdout + failed.stderr
    (new,) = [r for r in pipeline.runs() if r.info.run_id not in before]
    assert new.info.status == "FAILED"
    assert new.info.end_time is not None
    assert message in new.data.tags["error"]
    assert new.data.tags["rnnpipe.failed_step"] == "evaluate"
    assert len(client.search_model_versions(f"name = '{NAME}'")) == versions
    assert (pipeline.root / "reports" / "metrics.json").read_bytes() == metrics
