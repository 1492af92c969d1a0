"""MLflow as the system of record: the raw-text pyfunc, the registry's promotion gate, the served
model, and runs that lead back to their code (git) and data (dvc.lock).

One real `dvc repro` of a tiny Chinese + English corpus (jieba segments both) is shared by every
test here; the gate test logs one more model in-process instead of training twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient
from mlflow.models import infer_signature

from tests.conftest import BIN, make_en_corpus, make_project, make_zh_corpus, run, write_tsv

pytestmark = pytest.mark.slow

ZH_TEXTS = ["这次酒店质量很好，非常满意。", "东西质量太差，浪费时间。"]
EN_TEXTS = ["The coach says the team will score a goal in the league match.",
            "Investors sold bank shares after the company profit report."]
TEXTS = ZH_TEXTS + EN_TEXTS
CHAMPION_URI = "models:/rnnpipe@champion"
FLOW_RUN = {"RNNPIPE_PREFECT_FLOW_RUN_ID": "0b5c6ad4-1111-4222-8333-944455556666",
            "RNNPIPE_PREFECT_FLOW_RUN_NAME": "tiny-mlflow-test"}
LEAKY_ENV = ("MLFLOW_TRACKING_URI", "MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_NAME",
             "RNNPIPE_PREFECT_FLOW_RUN_ID", "RNNPIPE_PREFECT_FLOW_RUN_NAME", "DVC_EXP_NAME")


@dataclass(frozen=True)
class Pipeline:
    """One finished pipeline execution and what to check it against."""

    root: Path
    store: str
    run_id: str
    commit: str
    lock: dict
    labels: list[str]

    @property
    def client(self) -> MlflowClient:
        return MlflowClient(self.store)

    def lock_md5(self) -> dict[str, str]:
        """`{path: md5}` of every data/model file or folder in `dvc.lock`."""
        hashes = {}
        for stage in self.lock["stages"].values():
            for entry in stage.get("deps", []) + stage.get("outs", []):
                if entry["path"].startswith(("data/", "models/")) and "md5" in entry:
                    hashes[entry["path"]] = entry["md5"]
        return hashes


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pipeline]:
    """`dvc repro` once, as the Prefect flow would run it (flow-run env set), in a temp project.

    The module's tests then run inside the project against its store, as a user would.
    """
    previous_uri = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as patch:
        for key in LEAKY_ENV:
            patch.delenv(key, raising=False)
        root = tmp_path_factory.mktemp("mlflow") / "project"
        # The corpus lives in corpus/, the folder dvc.yaml hashes for bring-your-own data.
        corpus = root / "corpus" / "mixed.tsv"
        make_project(root, corpus, "jieba", train={"epochs": 4})
        corpus.parent.mkdir(exist_ok=True)
        write_tsv(corpus, make_zh_corpus() + make_en_corpus())
        run([str(BIN / "dvc"), "repro"], root, env={**os.environ, **FLOW_RUN}, timeout=900)
        store = f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"
        patch.setenv("MLFLOW_TRACKING_URI", store)
        patch.chdir(root)
        mlflow.set_tracking_uri(store)
        (only,) = mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")
        vocab = json.loads((root / "data" / "vocab.json").read_text(encoding="utf-8"))
        yield Pipeline(
            root=root, store=store, run_id=only.info.run_id,
            commit=run(["git", "rev-parse", "HEAD"], root).stdout.strip(),
            lock=yaml.safe_load((root / "dvc.lock").read_text(encoding="utf-8")),
            labels=vocab["labels"])
    mlflow.set_tracking_uri(previous_uri)  # later test modules get the store they had


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


def test_run_has_params_epoch_curves_test_metrics_and_artifacts(pipeline: Pipeline,
                                                                 tmp_path: Path) -> None:
    tracked = pipeline.client.get_run(pipeline.run_id)
    assert tracked.info.status == "FINISHED"
    params = tracked.data.params
    assert params["train.epochs"] == "4"
    assert params["train.lstm_units"] == "[8]"
    assert params["vocab.tokenizer"] == "jieba"
    assert params["register.model_name"] == "rnnpipe"

    summary = json.loads((pipeline.root / "reports" / "train.json").read_text())
    epochs = list(range(1, summary["epochs_run"] + 1))
    for key in ("loss", "val_loss", "accuracy", "val_accuracy"):
        history = pipeline.client.get_metric_history(pipeline.run_id, key)
        assert sorted(m.step for m in history) == epochs, key
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    assert tracked.data.metrics["test_macro_f1"] == metrics["macro_f1"]
    assert tracked.data.metrics["test_accuracy"] == metrics["accuracy"]
    assert tracked.data.metrics["baseline_accuracy"] == metrics["baseline"]["accuracy"]

    expected = {"params.yaml", "plots/confusion_matrix.png", "plots/training_curves.png",
                "reports/classification_report.txt", "reports/metrics.json",
                "reports/confusion.csv", "reports/train.json", "reports/ingest.json",
                "reports/vocab.json", "vocabulary/vocab.json"}
    listed = {f.path for folder in ("", "plots", "reports", "vocabulary")
              for f in pipeline.client.list_artifacts(pipeline.run_id, folder or None)}
    assert expected <= listed
    local = Path(mlflow.artifacts.download_artifacts(run_id=pipeline.run_id,
                                                     dst_path=str(tmp_path)))
    for png in ("confusion_matrix", "training_curves"):
        assert (local / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = (local / "reports" / "classification_report.txt").read_text(encoding="utf-8")
    assert all(label in report for label in pipeline.labels)
    assert (local / "params.yaml").read_bytes() == (pipeline.root / "params.yaml").read_bytes()


def test_run_leads_back_to_the_commit_the_dvc_lock_data_and_the_flow_run(
        pipeline: Pipeline) -> None:
    tags = pipeline.client.get_run(pipeline.run_id).data.tags
    assert tags["mlflow.source.git.commit"] == tags["git.commit"] == pipeline.commit
    assert tags["git.dirty"] == "false"  # the run began before any output changed the tree
    locked = pipeline.lock_md5()
    assert {"data/train.tsv", "data/vocab.json", "models/model.keras"} <= set(locked)
    for path, md5 in locked.items():
        assert tags[f"dvc.md5.{path}"] == md5, path
    assert "dvc.lock_stale" not in tags
    assert tags["prefect.flow_run_id"] == FLOW_RUN["RNNPIPE_PREFECT_FLOW_RUN_ID"]
    assert tags["prefect.flow_run_name"] == FLOW_RUN["RNNPIPE_PREFECT_FLOW_RUN_NAME"]

    (used,) = pipeline.client.get_run(pipeline.run_id).inputs.dataset_inputs
    assert used.dataset.digest == locked["data/train.tsv"]
    assert used.dataset.name == "train"
    assert json.loads(used.dataset.source) == {"uri": "data/train.tsv"}
    assert {t.key: t.value for t in used.tags}["mlflow.data.context"] == "training"


def test_pipeline_registers_its_model_as_the_first_champion(pipeline: Pipeline) -> None:
    client = pipeline.client
    champion = client.get_model_version_by_alias("rnnpipe", "champion")
    candidate = client.get_model_version_by_alias("rnnpipe", "candidate")
    assert str(champion.version) == str(candidate.version) == "1"
    assert champion.run_id == pipeline.run_id
    metrics = json.loads((pipeline.root / "reports" / "metrics.json").read_text())
    assert float(champion.tags["test_macro_f1"]) == metrics["macro_f1"]
    assert champion.tags["promotion"] == "champion"
    assert champion.description.startswith("promoted to champion: first model")
    tags = client.get_run(pipeline.run_id).data.tags
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

    # Everything it needs is inside the model: weights, vocabulary (labels, tokenizer), code,
    # pinned requirements and an input example.
    local = Path(mlflow.artifacts.download_artifacts(CHAMPION_URI, dst_path=str(tmp_path)))
    for inside in ("artifacts/model.keras", "artifacts/vocab.json", "code/rnnpipe/classifier.py",
                   "serving_input_example.json"):
        assert (local / inside).is_file(), inside
    vocab = json.loads((local / "artifacts" / "vocab.json").read_text(encoding="utf-8"))
    assert vocab["tokenizer"] == "jieba" and vocab["labels"] == pipeline.labels
    requirements = (local / "requirements.txt").read_text().split()
    for package in ("keras", "jieba", "mlflow", "pandas"):
        assert any(line.startswith(f"{package}==") for line in requirements), package


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def post(url: str, payload: dict) -> dict:
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
        pipeline: Pipeline, champion_answers: pd.DataFrame, tmp_path: Path) -> None:
    hide = tmp_path / "hide"
    hide.mkdir()
    (hide / "sitecustomize.py").write_text(HIDE_RNNPIPE)
    elsewhere = tmp_path / "elsewhere"  # and no project file (models/, data/) within reach
    elsewhere.mkdir()
    env = {**os.environ, "MLFLOW_TRACKING_URI": pipeline.store, "PYTHONPATH": str(hide)}
    probe = run([sys.executable, "-c", "import importlib.util as u; print(u.find_spec('rnnpipe'))"],
                elsewhere, env=env)
    assert probe.stdout.strip() == "None", "rnnpipe is not an editable install; cannot hide it"

    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "wb") as out:
        server = subprocess.Popen(
            [str(BIN / "mlflow"), "models", "serve", "-m", CHAMPION_URI, "--env-manager", "local",
             "-h", "127.0.0.1", "-p", str(port)],
            cwd=elsewhere, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while True:
            assert server.poll() is None, log.read_text(errors="replace")
            try:
                with urllib.request.urlopen(f"{base}/ping", timeout=5) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            assert time.monotonic() < deadline, log.read_text(errors="replace")
            time.sleep(1)
        payloads = ({"dataframe_split": {"columns": ["text"], "data": [[t] for t in TEXTS]}},
                    {"dataframe_records": [{"text": t} for t in TEXTS]},
                    {"inputs": TEXTS})
        for payload in payloads:
            answers = pd.DataFrame(post(f"{base}/invocations", payload)["predictions"])
            check_answers(answers, pipeline.labels, len(TEXTS))
            same_answers(answers, champion_answers)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


def test_rnnpipe_predict_uses_the_champion(pipeline: Pipeline, champion_answers: pd.DataFrame,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from rnnpipe import cli

    cli.main(["predict", *TEXTS])
    captured = capsys.readouterr()
    assert f"model: {CHAMPION_URI}" in captured.err
    lines = [json.loads(line) for line in captured.out.splitlines()]
    assert [line["text"] for line in lines] == TEXTS
    assert [line["label"] for line in lines] == champion_answers["label"].tolist()
    for line in lines:
        assert sorted(line["probabilities"]) == sorted(pipeline.labels)
        assert sum(line["probabilities"].values()) == pytest.approx(1, abs=1e-3)


def test_gate_keeps_the_worse_run_as_candidate_and_promotes_the_better(
        pipeline: Pipeline) -> None:
    from rnnpipe import registry, tracking
    from rnnpipe.config import load_params

    # A second run with its own logged model (the workspace's, logged again; no training).
    params = load_params()
    second = tracking.open_run(params, "evaluate")
    second_uri = registry.log_model(second, tracking.dvc_lock_hashes())
    tracking.end_run(second, "FINISHED")
    first_uri = pipeline.client.get_run(pipeline.run_id).data.tags["rnnpipe.model_uri"]
    assert second_uri != first_uri

    client, name = tracking.client(params), "rnnpipe-gate"

    def aliases() -> tuple[str, str]:
        return (str(client.get_model_version_by_alias(name, "champion").version),
                str(client.get_model_version_by_alias(name, "candidate").version))

    assert registry.register(client, first_uri, name, pipeline.run_id, 0.80, 0.82)[1:] == (
        True, "first model: test_macro_f1 0.8")
    assert aliases() == ("1", "1")

    version, promoted, reason = registry.register(client, second_uri, name, second.run_id,
                                                  0.60, 0.70)
    assert (version, promoted) == ("2", False)
    assert reason == "test_macro_f1 0.6 < champion v1's 0.8"
    assert aliases() == ("1", "2")  # the worse model is only the candidate
    worse = client.get_model_version(name, "2")
    assert worse.tags["promotion"] == "candidate"
    assert worse.tags["promotion_reason"] == reason
    assert worse.description == f"kept as candidate: {reason}"
    assert worse.run_id == second.run_id

    version, promoted, _ = registry.register(client, second_uri, name, second.run_id, 0.90, 0.91)
    assert (version, promoted) == ("3", True)
    assert aliases() == ("3", "3")  # a better one takes champion
    assert client.get_model_version(name, "3").description.startswith("promoted to champion")
    assert registry.register(client, first_uri, name, pipeline.run_id, 0.90, 0.90)[1] is True
    assert aliases() == ("4", "4")  # ties promote

    # The pipeline's own registered model is untouched by this.
    assert str(client.get_model_version_by_alias("rnnpipe", "champion").version) == "1"


def test_failed_step_leaves_a_failed_run_with_the_error(pipeline: Pipeline) -> None:
    before = {r.info.run_id for r in mlflow.search_runs(experiment_names=["rnnpipe"],
                                                        output_format="list")}
    train_split = pipeline.root / "data" / "train.tsv"
    original = train_split.read_bytes()
    train_split.unlink()  # replaced, not rewritten: the DVC cache may share its inode
    train_split.write_text("a line without a tab\n", encoding="utf-8")
    try:
        failed = run([str(BIN / "rnnpipe"), "vocab"], pipeline.root, check=False, timeout=300)
    finally:
        train_split.unlink()
        train_split.write_bytes(original)
    assert failed.returncode == 2
    assert "data/train.tsv:1: expected label<TAB>text" in failed.stderr
    (new,) = [r for r in mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")
              if r.info.run_id not in before]
    assert new.info.status == "FAILED"
    assert new.info.end_time is not None
    assert new.data.tags["error"] == "vocab: DataError: data/train.tsv:1: expected label<TAB>text"
    assert new.data.tags["rnnpipe.failed_step"] == "vocab"
    assert not (pipeline.root / ".rnnpipe" / "run.json").exists()


def test_scoring_failure_fails_evaluate_with_the_scorers_error(pipeline: Pipeline) -> None:
    """Evaluate scores in a second process (`rnnpipe evaluate --score-only`) while it logs the
    model: that process's error is the step's error, and nothing is registered."""
    client = pipeline.client
    versions = len(client.search_model_versions("name = 'rnnpipe'"))
    before = {r.info.run_id for r in mlflow.search_runs(experiment_names=["rnnpipe"],
                                                        output_format="list")}
    metrics = (pipeline.root / "reports" / "metrics.json").read_bytes()
    test_tokens = pipeline.root / "data" / "tokens" / "test.tsv"
    hidden = test_tokens.with_name("test.tsv.hidden")
    test_tokens.rename(hidden)
    try:
        failed = run([str(BIN / "rnnpipe"), "evaluate"], pipeline.root, check=False, timeout=300)
    finally:
        hidden.rename(test_tokens)
    message = "data/tokens/test.tsv: missing; run the vocabulary step first (rnnpipe vocab)"
    assert failed.returncode == 2
    assert failed.stderr.count(message) == 1
    assert failed.stderr.strip().splitlines()[-1] == f"rnnpipe: error: {message}"
    (new,) = [r for r in mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")
              if r.info.run_id not in before]
    assert new.info.status == "FAILED"
    assert new.data.tags["error"] == f"evaluate: RnnpipeError: {message}"
    assert len(client.search_model_versions("name = 'rnnpipe'")) == versions
    assert (pipeline.root / "reports" / "metrics.json").read_bytes() == metrics
