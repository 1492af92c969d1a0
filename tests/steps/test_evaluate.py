"""The evaluate step's scoring in-process on a tiny trained model: the metrics and their
structure, the baseline, per-class scores, the confusion table, the misclassified documents
(most confident first), the text report and the plots; and how the scoring process reports a
failure to the step."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnpipe.config import EvaluateParams, Params
from rnnpipe.datafiles import read_split
from rnnpipe.errors import StepUserError
from rnnpipe.io import read_json
from rnnpipe.metrics import per_class
from rnnpipe.steps import evaluate as evaluate_step
from rnnpipe.steps.evaluate import (
    baseline_scores,
    evaluate,
    scoring_result,
    start_scoring,
    write_class_report,
    write_misclassified,
)

LABELS = ["business", "politics", "science", "sports", "tech"]
PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, trained_workspace) -> Path:
    """A five-class English workspace in the project layout, trained for one epoch."""
    return trained_workspace(tmp_path_factory.mktemp("workspace"), 1)


def run_evaluate(root: Path, reports: Path) -> dict:
    return evaluate(EvaluateParams().batch_size, model_path=root / "models" / "model.keras",
                    vocab_path=root / "data" / "vocab.json",
                    preprocessing_path=root / "models" / "preprocessing.json",
                    ids_root=root / "data" / "ids",
                    test_texts_path=root / "data" / "test.tsv",
                    history_path=root / "reports" / "history.csv", reports=reports)


@pytest.fixture(scope="module")
def evaluated(workspace, tmp_path_factory) -> tuple[dict, Path]:
    reports = tmp_path_factory.mktemp("reports")
    return run_evaluate(workspace, reports), reports


def test_metrics(evaluated):
    metrics, reports = evaluated
    assert json.loads((reports / "metrics.json").read_text()) == metrics
    assert set(metrics) == {"test", "val", "baseline", "beats_baseline", "test_documents"}
    for split in ("test", "val"):
        assert set(metrics[split]) == {"accuracy", "macro_f1"}
        assert all(0 <= v <= 1 for v in metrics[split].values())
    assert set(metrics["baseline"]) == {"test_accuracy", "test_macro_f1"}
    assert metrics["baseline"]["test_accuracy"] > 0.5  # topic words make this easy for TF-IDF
    assert metrics["beats_baseline"] == (metrics["test"]["accuracy"] >=
                                         metrics["baseline"]["test_accuracy"])
    assert metrics["test_documents"] == 10


def test_per_class_and_confusion(evaluated, workspace):
    metrics, reports = evaluated
    detail = read_json(reports / "per_class.json")
    assert detail["labels"] == LABELS and sorted(detail["per_class"]) == LABELS
    matrix = np.array(detail["confusion_matrix"])
    assert matrix.shape == (5, 5) and matrix.sum() == metrics["test_documents"]
    assert np.trace(matrix) / matrix.sum() == pytest.approx(metrics["test"]["accuracy"],
                                                            abs=1e-6)
    for i, label in enumerate(LABELS):
        assert set(detail["per_class"][label]) == {"precision", "recall", "f1", "support"}
        assert detail["per_class"][label]["support"] == matrix[i].sum()
    f1s = [detail["per_class"][label]["f1"] for label in LABELS]
    assert metrics["test"]["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-5)
    with open(reports / "confusion.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and set(rows[0]) == {"actual", "predicted"}
    test_labels, _ = read_split(workspace / "data" / "test.tsv")
    assert [row["actual"] for row in rows] == test_labels
    assert sum(row["actual"] == row["predicted"] for row in rows) == np.trace(matrix)


def test_misclassified_report(evaluated, workspace):
    metrics, reports = evaluated
    lines = (reports / "misclassified.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "actual\tpredicted\tprobability\ttext"
    rows = [line.split("\t") for line in lines[1:]]
    wrong = round(metrics["test_documents"] * (1 - metrics["test"]["accuracy"]))
    assert len(rows) == wrong
    probabilities = [float(row[2]) for row in rows]
    assert probabilities == sorted(probabilities, reverse=True)
    _, texts = read_split(workspace / "data" / "test.tsv")
    assert all(row[0] != row[1] and row[0] in LABELS and row[3] in texts for row in rows)


def test_text_report_and_plots(evaluated):
    metrics, reports = evaluated
    text = (reports / "classification_report.txt").read_text(encoding="utf-8")
    assert "precision    recall  f1-score   support" in text
    assert all(label in text for label in LABELS)
    assert f"{metrics['test']['macro_f1']:.4f}" in text and "macro F1" in text
    for name in ("confusion_matrix", "training_curves"):
        assert (reports / "plots" / f"{name}.png").read_bytes()[:8] == PNG


def test_evaluation_is_repeatable(evaluated, workspace, tmp_path):
    _, reports = evaluated
    run_evaluate(workspace, tmp_path)
    for rel in ("metrics.json", "per_class.json", "confusion.csv", "misclassified.tsv",
                "classification_report.txt", "plots/confusion_matrix.png",
                "plots/training_curves.png"):
        assert (tmp_path / rel).read_bytes() == (reports / rel).read_bytes(), rel


def test_score_only_writes_the_reports_without_mlflow(workspace, tmp_path, in_dir):
    """`rnnpipe evaluate --score-only` in a project: the default paths, no MLflow store."""
    project = tmp_path / "project"
    shutil.copytree(workspace, project)
    shutil.rmtree(project / "corpus")
    in_dir(project)
    evaluate_step.score_main(Params())
    assert read_json(project / "reports" / "metrics.json")["test_documents"] == 10
    assert (project / "reports" / "plots" / "confusion_matrix.png").exists()
    assert not (project / "mlruns").exists()


def test_a_failed_scoring_process_raises_its_recorded_error(tmp_path, in_dir):
    """The scoring runs in a second process; its error (here: no model) comes back as the same
    one-line user error through the error file, not as text to parse. (Here the process finds
    no params.yaml: the quickest user error it can have.)"""
    in_dir(tmp_path)
    process = start_scoring()
    if process is None:
        pytest.skip("one core: evaluate scores in-process")
    with pytest.raises(StepUserError) as error:
        scoring_result(process)
    assert error.value.exit_code == 2 and error.value.step == "evaluate"
    assert str(error.value) == "params.yaml: no such file (run rnnpipe in the project's folder, " \
                               "or give --project)"
    assert not Path(process.error_file).exists()  # the error file is removed


def test_misclassified_are_the_most_confident_mistakes_first(tmp_path):
    texts = tmp_path / "test.tsv"
    texts.write_text("a\tone\nb\ttwo\na\tthree\nb\tfour\n", encoding="utf-8")
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.05, 0.95]])
    write_misclassified(tmp_path / "m.tsv", texts, ["a", "b"], np.array([0, 1, 0, 1]), probs)
    assert (tmp_path / "m.tsv").read_text(encoding="utf-8").splitlines() == [
        "actual\tpredicted\tprobability\ttext", "a\tb\t0.7000\tthree", "b\ta\t0.6000\ttwo"]


def test_class_report_layout(tmp_path):
    y_true, y_pred = np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1])
    classes = per_class(y_true, y_pred, 2)
    write_class_report(tmp_path / "r.txt", ["neg", "a-long-label-name"], classes,
                       {"accuracy": 0.75, "macro_f1": 0.733333})
    lines = (tmp_path / "r.txt").read_text().splitlines()
    assert lines[0] == f"{'':>17} precision    recall  f1-score   support"
    assert lines[2] == f"{'neg':>17}    1.0000    0.5000    0.6667         2"
    assert lines[-2].split() == ["accuracy", "0.7500", "4"]
    assert lines[-1].split() == ["macro", "F1", "0.7333", "4"]


def test_baseline_uses_the_same_tokens(workspace):
    data = workspace / "data"
    result = baseline_scores(data / "ids", vocab_path=data / "vocab.json")
    assert set(result) == {"test_accuracy", "test_macro_f1"}
    assert result == baseline_scores(data / "ids", vocab_path=data / "vocab.json")
