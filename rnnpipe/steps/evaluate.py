"""Step 4, evaluate: score the trained model, write the reports, and record the run in MLflow
(the model as a raw-text pyfunc, registered through the promotion gate).

params: `evaluate`, `register` → outputs: `reports/metrics.json` (test and validation accuracy and
macro-F1, the TF-IDF + logistic-regression baseline's, `beats_baseline`), `reports/per_class.json`
(precision/recall/F1/support and the confusion matrix), `reports/classification_report.txt`,
`reports/confusion.csv` (`actual,predicted` per test document, for `dvc plots`),
`reports/misclassified.tsv` (the test documents the model got wrong, most confident first) and
`reports/plots/*.png`.

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

from rnnpipe.config import Params, load_params
from rnnpipe.datafiles import read_split, read_tokens
from rnnpipe.errors import ERROR_FILE_ENV, StepFailed, read_error_record
from rnnpipe.io import atomic_open, read_json, write_json
from rnnpipe.metrics import per_class, scores
from rnnpipe.paths import (
    CLASS_REPORT_FILE,
    CONFUSION_FILE,
    CONFUSION_PLOT,
    CURVES_PLOT,
    HISTORY_FILE,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    MODEL_FILE,
    PER_CLASS_FILE,
    PREPROCESSING_FILE,
    REPORTS_DIR,
    TOKENS_DIR,
    VOCAB_FILE,
    split_file,
    tokens_file,
)
from rnnpipe.plots import plot_confusion, plot_history


def baseline_scores(tokens_dir: Path = TOKENS_DIR) -> dict:
    """A TF-IDF (word uni- and bigrams) + logistic-regression baseline on the same tokens and
    splits: is the LSTM worth it?"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    def docs(split: str) -> tuple[list[str], list[str]]:
        labels, token_lists = read_tokens(tokens_file(split, tokens_dir))
        return labels, [" ".join(tokens) for tokens in token_lists]

    (y_train, x_train), (y_test, x_test) = docs("train"), docs("test")
    vectorizer = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False,
                                 ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=1000, C=4.0)
    classifier.fit(vectorizer.fit_transform(x_train), y_train)
    predicted = classifier.predict(vectorizer.transform(x_test))
    classes = sorted(set(y_train))
    ids = {label: i for i, label in enumerate(classes)}
    result = scores(np.array([ids.get(y, -1) for y in y_test]),
                    np.array([ids[y] for y in predicted]), len(classes))
    return {f"test_{k}": v for k, v in result.items()}


def evaluate(batch_size: int = 512, model_path: Path = MODEL_FILE, vocab_path: Path = VOCAB_FILE,
             preprocessing_path: Path = PREPROCESSING_FILE, tokens_dir: Path = TOKENS_DIR,
             test_texts_path: Path | None = None, history_path: Path = HISTORY_FILE,
             reports: Path = REPORTS_DIR) -> dict:
    """Score the model on the test and validation splits; write every report and plot."""
    from rnnpipe.model.classifier import TextClassifier
    from rnnpipe.model.network import predict_proba
    from rnnpipe.model.text import encode

    classifier = TextClassifier.load(model_path, vocab_path, preprocessing_path)
    labels = classifier.vocab.labels
    ids = classifier.vocab.label_ids
    results = {}
    for split in ("test", "val"):
        split_labels, token_lists = read_tokens(tokens_file(split, tokens_dir))
        x = encode(token_lists, classifier.vocab.token_ids, classifier.max_len,
                   classifier.truncate)
        probs = predict_proba(classifier.model, x, batch_size)
        results[split] = (np.array([ids[y] for y in split_labels]), probs)
    y_test, probs = results["test"]
    y_pred = probs.argmax(axis=1)
    y_val, val_probs = results["val"]
    metrics = {"test": scores(y_test, y_pred, len(labels)),
               "val": scores(y_val, val_probs.argmax(axis=1), len(labels)),
               "baseline": baseline_scores(tokens_dir), "test_documents": len(y_test)}
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
    for label noise and for what the model has not learnt."""
    _, texts = read_split(texts_path)
    predicted = probs.argmax(axis=1)
    wrong = np.flatnonzero(predicted != y_true)
    order = wrong[np.argsort(-probs[wrong, predicted[wrong]], kind="stable")]
    with atomic_open(path) as fh:
        fh.write("actual\tpredicted\tprobability\ttext\n")
        for i in order:
            fh.write(f"{labels[y_true[i]]}\t{labels[predicted[i]]}\t"
                     f"{probs[i, predicted[i]]:.4f}\t{texts[i]}\n")


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
    evaluate(params.evaluate.batch_size)


def main(params: Params | None = None) -> None:
    """`rnnpipe evaluate`: score (in a second process) while the model is logged to MLflow, then
    record the scores and reports on the run and pass the model through the promotion gate."""
    from rnnpipe.tracking.record import record_evaluation

    params = params or load_params()
    scoring = start_scoring()  # first: opening the MLflow run alone takes seconds
    try:
        summary = record_evaluation(
            params, lambda: evaluate(params.evaluate.batch_size) if scoring is None
            else scoring_result(scoring))
    finally:
        if scoring is not None and scoring.poll() is None:  # MLflow failed first
            scoring.kill()
            scoring.wait()
    print(summary, flush=True)
