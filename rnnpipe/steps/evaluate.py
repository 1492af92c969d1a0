"""Step 4, evaluate: score the trained model, write the reports, and record the run in MLflow
(the model as a raw-text pyfunc, registered through the promotion gate).

params: `evaluate`, `register` → outputs: `reports/metrics.json` (test and validation accuracy and
macro-F1, the TF-IDF + logistic-regression baseline's, `beats_baseline`), `reports/per_class.json`
(precision/recall/F1/support and the confusion matrix), `reports/classification_report.txt`,
`reports/confusion.csv` (`actual,predicted` per test document, for `dvc plots`),
`reports/misclassified.tsv` (the test documents the model got wrong, most confident first) and
`reports/plots/*.png`.

Memory stays flat: the model reads the memory-mapped ids of each split a batch at a time, the
baseline fits on at most `evaluate.baseline_max_documents` train documents and scores test a
block at a time (`rnnpipe.baseline`), and the misclassified texts are read from `data/test.tsv`
one by one.

Speed: the scores are computed in a second process (`rnnpipe evaluate --score-only`) while this
one opens the MLflow run and logs the model (MLflow loads the logged model again to answer its
input example), so the step takes the longer of the two, not their sum.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

from rnnpipe.config import EvaluateParams, Params, load_params
from rnnpipe.datafiles import label_ids, read_ids
from rnnpipe.errors import ERROR_FILE_ENV, DataError, StepFailed, read_error_record
from rnnpipe.heartbeat import Progress, heartbeat
from rnnpipe.io import atomic_open, read_json, write_json
from rnnpipe.metrics import per_class, scores
from rnnpipe.paths import (
    CLASS_REPORT_FILE,
    CONFUSION_FILE,
    CONFUSION_PLOT,
    CURVES_PLOT,
    HISTORY_FILE,
    IDS_DIR,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    MODEL_FILE,
    PER_CLASS_FILE,
    PREPROCESSING_FILE,
    REPORTS_DIR,
    VOCAB_FILE,
    ids_dir,
    split_file,
)
from rnnpipe.plots import plot_confusion, plot_history


def baseline_scores(ids_root: Path = IDS_DIR,
                    max_documents: int = EvaluateParams.baseline_max_documents,
                    vocab_path: Path = VOCAB_FILE) -> dict:
    """A TF-IDF (word uni- and bigrams) + logistic-regression baseline on the same tokens and
    splits, fitted on at most `max_documents` train documents: is the LSTM worth it?"""
    from rnnpipe.baseline import baseline_scores as scores_of
    from rnnpipe.model.vocabulary import Vocabulary

    vocab = Vocabulary.load(vocab_path)
    return scores_of(read_ids(ids_dir("train", ids_root)), read_ids(ids_dir("test", ids_root)),
                     len(vocab.tokens), len(vocab.labels), max_documents)


def evaluate(batch_size: int = 512, model_path: Path = MODEL_FILE, vocab_path: Path = VOCAB_FILE,
             preprocessing_path: Path = PREPROCESSING_FILE, ids_root: Path = IDS_DIR,
             test_texts_path: Path | None = None, history_path: Path = HISTORY_FILE,
             reports: Path = REPORTS_DIR,
             baseline_max_documents: int = EvaluateParams.baseline_max_documents) -> dict:
    """Score the model on the test and validation splits; write every report and plot."""
    from rnnpipe.model.classifier import TextClassifier
    from rnnpipe.model.ragged import RaggedInputs, predict_proba

    classifier = TextClassifier.load(model_path, vocab_path, preprocessing_path)
    labels = classifier.vocab.labels
    results = {}
    for split in ("test", "val"):
        data = read_ids(ids_dir(split, ids_root))
        y = label_ids(data.labels, classifier.vocab, ids_dir(split, ids_root)).astype(np.int64)
        progress = Progress(f"evaluate: scoring {split}", total=len(data))
        try:
            probs = predict_proba(classifier.model,
                                  RaggedInputs(data, classifier.max_len, classifier.truncate),
                                  batch_size, progress.update)
        finally:
            progress.finish()
        results[split] = (y, probs)
    y_test, probs = results["test"]
    y_pred = probs.argmax(axis=1)
    y_val, val_probs = results["val"]
    metrics = {"test": scores(y_test, y_pred, len(labels)),
               "val": scores(y_val, val_probs.argmax(axis=1), len(labels)),
               "baseline": baseline_scores(ids_root, baseline_max_documents, vocab_path),
               "test_documents": len(y_test)}
    metrics["beats_baseline"] = metrics["test"]["accuracy"] >= \
        metrics["baseline"]["test_accuracy"]
    write_json(reports / METRICS_FILE.name, metrics)
    classes = per_class(y_test, y_pred, len(labels))
    matrix = np.zeros((len(labels), len(labels)), dtype=int)
    np.add.at(matrix, (y_test, y_pred), 1)
    write_json(reports / PER_CLASS_FILE.name, {
        "per_class": {label: {k: round(float(classes[k][i]), 6) if k != "support"
                              else int(classes[k][i]) for k in classes}
                      for i, label in enumerate(labels)},
        "labels": labels, "confusion_matrix": matrix.tolist()})
    with atomic_open(reports / CONFUSION_FILE.name) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows((labels[t], labels[p]) for t, p in zip(y_test, y_pred, strict=True))
    write_misclassified(reports / MISCLASSIFIED_FILE.name, test_texts_path or split_file("test"),
                        labels, y_test, probs)
    write_class_report(reports / CLASS_REPORT_FILE.name, labels, classes, metrics["test"])
    plot_confusion(matrix.tolist(), labels, reports / "plots" / CONFUSION_PLOT.name)
    plot_history(history_path, reports / "plots" / CURVES_PLOT.name)
    return metrics


def write_misclassified(path: Path, texts_path: Path, labels: list[str], y_true: np.ndarray,
                        probs: np.ndarray) -> None:
    """The test documents the model got wrong, most confident mistakes first: where to look
    for label noise and for what the model has not learnt. The texts are read from the split
    file one by one (their offsets found in one pass), never all at once."""
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")]
    where = np.full(len(y_true), -1, dtype=np.int64)
    texts_path = Path(texts_path)
    if not texts_path.exists():
        raise DataError(f"{texts_path}: missing; run the ingest step first (rnnpipe ingest)")
    with open(texts_path, "rb") as texts, atomic_open(path) as fh:
        position = 0
        for number, line in enumerate(texts):
            if number < len(where) and predicted[number] != y_true[number]:
                where[number] = position
            position += len(line)
        fh.write("actual\tpredicted\tprobability\ttext\n")
        for i in order:
            texts.seek(where[i])
            text = texts.readline().decode("utf-8").rstrip("\n").partition("\t")[2]
            fh.write(f"{labels[y_true[i]]}\t{labels[predicted[i]]}\t"
                     f"{probs[i, predicted[i]]:.4f}\t{text}\n")
def write_class_report(path: Path, labels: list[str], classes: dict, test: dict) -> None:
    """Precision, recall, F1 and support per class as a fixed-width table."""
    width = max(12, *(len(label) for label in labels))
    with atomic_open(path) as fh:
        fh.write(f"{'':>{width}} precision    recall  f1-score   support\n\n")
        for i, label in enumerate(labels):
            fh.write(f"{label:>{width}} {classes['precision'][i]:9.4f} "
                     f"{classes['recall'][i]:9.4f} {classes['f1'][i]:9.4f} "
                     f"{int(classes['support'][i]):9d}\n")
        total = int(np.sum(classes["support"]))
        fh.write(f"\n{'accuracy':>{width}} {'':9} {'':9} {test['accuracy']:9.4f} {total:9d}\n"
                 f"{'macro F1':>{width}} {'':9} {'':9} {test['macro_f1']:9.4f} {total:9d}\n")


def start_scoring() -> subprocess.Popen | None:
    """Start `rnnpipe evaluate --score-only` in a second process (see the module docstring), or
    return None on a one-core machine, where it would only compete."""
    if (os.cpu_count() or 1) < 2:
        return None
    # The rnnpipe this module belongs to, whatever the working directory holds.
    package_parent = str(Path(__file__).resolve().parent.parent.parent)
    python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    fd, error_file = tempfile.mkstemp(prefix="rnnpipe-score-", suffix=".json")
    os.close(fd)
    process = subprocess.Popen([sys.executable, "-m", "rnnpipe", "evaluate", "--score-only"],
                               env={**os.environ, "PYTHONPATH": python_path,
                                    ERROR_FILE_ENV: error_file})
    process.error_file = error_file  # type: ignore[attr-defined]
    return process


def scoring_result(process: subprocess.Popen) -> dict:
    """Wait for `start_scoring`'s process; its metrics, or its error raised here (a user error
    stays a user error)."""
    error_file = process.error_file  # type: ignore[attr-defined]
    try:
        code = process.wait()
        record = read_error_record(error_file)
    finally:
        Path(error_file).unlink(missing_ok=True)
    if code != 0:
        if record is not None:
            raise record.exception()
        raise StepFailed(f"evaluate: scoring the model (rnnpipe evaluate --score-only) failed "
                         f"with exit status {code}; its output is above", "evaluate", code)
    return read_json(METRICS_FILE)


def score_main(params: Params | None = None) -> None:
    """`rnnpipe evaluate --score-only`: score and write the reports; no MLflow."""
    params = params or load_params()
    with heartbeat("evaluate: scoring"):
        evaluate(params.evaluate.batch_size,
                 baseline_max_documents=params.evaluate.baseline_max_documents)


def main(params: Params | None = None) -> None:
    """`rnnpipe evaluate`: score (in a second process) while the model is logged to MLflow, then
    record the scores and reports on the run and pass the model through the promotion gate."""
    params = params or load_params()
    scoring = start_scoring()  # first: opening the MLflow run alone takes seconds
    try:
        with heartbeat("evaluate"):  # from the start: importing MLflow takes a while
            from rnnpipe.tracking.record import record_evaluation

            summary = record_evaluation(
                params, lambda: evaluate(
                    params.evaluate.batch_size,
                    baseline_max_documents=params.evaluate.baseline_max_documents)
                if scoring is None else scoring_result(scoring))
    finally:
        if scoring is not None and scoring.poll() is None:  # MLflow failed first
            scoring.kill()
            scoring.wait()
    print(summary, flush=True)
