"""End to end: the real `dvc repro`, the real Prefect engine and a real MLflow store, in a temp
project. Both entry points must leave the same files and a clean `dvc status`."""

import json

import mlflow
import pytest

from tests.conftest import BIN, run

pytestmark = pytest.mark.slow


def mlflow_runs(project):
    mlflow.set_tracking_uri(f"sqlite:///{project / 'mlruns' / 'mlflow.db'}")
    return mlflow.search_runs(experiment_names=["rnnpipe"], output_format="list")


def test_dvc_repro_english_five_classes_then_predict(en_project):
    run([str(BIN / "dvc"), "repro"], en_project)
    metrics = json.loads((en_project / "reports" / "metrics.json").read_text())
    assert sorted(metrics["per_class"]) == ["business", "politics", "science", "sports", "tech"]
    assert {"accuracy", "macro_f1", "baseline"} <= set(metrics)
    assert "up to date" in run([str(BIN / "dvc"), "status"], en_project).stdout
    again = run([str(BIN / "dvc"), "repro"], en_project).stdout
    assert "didn't change, skipping" in again and "Running stage" not in again

    (finished,) = mlflow_runs(en_project)
    assert finished.info.status == "FINISHED"
    assert finished.data.params["vocab.tokenizer"] == "word"
    assert finished.data.metrics["test_accuracy"] == metrics["accuracy"]

    out = run([str(BIN / "rnnpipe"), "predict", "The team scored a late goal in the match"],
              en_project)
    answer = json.loads(out.stdout.splitlines()[0])
    assert answer["label"] in metrics["per_class"]
    assert sum(answer["probabilities"].values()) == pytest.approx(1, abs=1e-3)
    assert "models:/rnnpipe@champion" in out.stderr


def test_prefect_flow_agrees_with_dvc(zh_project):
    out = run([str(BIN / "rnnpipe"), "run", "-S", "train.epochs=1"], zh_project, timeout=900)
    assert "Finished in state Completed" in out.stdout + out.stderr
    assert "epochs: 1" in (zh_project / "params.yaml").read_text()
    assert "up to date" in run([str(BIN / "dvc"), "status"], zh_project).stdout
    for path in ("data/train.tsv", "data/vocab.json", "models/model.keras",
                 "reports/metrics.json", "reports/history.csv", "reports/plots/training_curves.png"):
        assert (zh_project / path).exists(), path
    (tracked,) = mlflow_runs(zh_project)
    assert tracked.info.status == "FINISHED"
    assert tracked.data.tags["prefect.flow_run_id"]
    assert tracked.data.params["train.epochs"] == "1"
    history = mlflow.MlflowClient().get_metric_history(tracked.info.run_id, "val_loss")
    assert [m.step for m in history] == [1]

    again = run([str(BIN / "rnnpipe"), "run"], zh_project, timeout=900)
    assert again.stdout.count("up to date, skipped") + again.stderr.count(
        "up to date, skipped") == 4
    assert len(mlflow_runs(zh_project)) == 1  # nothing re-ran, so no new run
