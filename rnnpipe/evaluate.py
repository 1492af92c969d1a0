"""Step 4, evaluate: score the trained model on the test split and record everything.

Outputs: `reports/metrics.json` (top-level `accuracy` and `macro_f1` on test, per-class
precision/recall/F1, and the TF-IDF + logistic-regression baseline under `baseline`),
`reports/confusion.csv` (`actual,predicted` per test document, for `dvc plots`),
`reports/classification_report.txt`, and `reports/plots/{confusion_matrix,training_curves}.png`.
In MLflow: test metrics, those files, `params.yaml`, and the model as a raw-text pyfunc, which is
registered and passed through the promotion gate. `rnnpipe evaluate --score-only` writes the
outputs without MLflow: the step runs it in a second process while it logs the model.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

import rnnpipe  # noqa: F401  (environment defaults before TensorFlow loads)
from rnnpipe.config import EvaluateParams, load_params
from rnnpipe.io import atomic_open, atomic_path, read_json, write_json
from rnnpipe.train import HISTORY_PATH, MODEL_PATH, load_split
from rnnpipe.vocab import TOKENS_DIR, VOCAB_PATH

REPORTS = Path("reports")
METRICS_PATH = REPORTS / "metrics.json"
CONFUSION_PATH = REPORTS / "confusion.csv"
REPORT_PATH = REPORTS / "classification_report.txt"
PLOTS_DIR = REPORTS / "plots"


def score(y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]) -> dict:
    """Accuracy, macro-F1, per-class precision/recall/F1/support and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        confusion_matrix,
        f1_score,
        precision_recall_fscore_support,
    )

    ids = list(range(len(labels)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=ids, zero_division=0)
    return {
        "accuracy": round(float(accuracy_score(y_true, y_pred)), 6),
        "macro_f1": round(float(f1_score(y_true, y_pred, labels=ids, average="macro",
                                         zero_division=0)), 6),
        "per_class": {
            label: {"precision": round(float(precision[i]), 6),
                    "recall": round(float(recall[i]), 6),
                    "f1": round(float(f1[i]), 6), "support": int(support[i])}
            for i, label in enumerate(labels)
        },
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist(),
    }


def baseline_scores(tokens_dir: Path = TOKENS_DIR) -> dict:
    """A TF-IDF + logistic-regression baseline on the same tokens and splits: is the LSTM
    worth it?"""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import accuracy_score, f1_score

    from rnnpipe.vocab import read_tokens

    def docs(name: str) -> tuple[list[str], list[str]]:
        labels, token_lists = read_tokens(tokens_dir / f"{name}.tsv")
        return labels, [" ".join(tokens) for tokens in token_lists]

    (y_train, x_train), (y_test, x_test) = docs("train"), docs("test")
    started = time.perf_counter()
    vectorizer = TfidfVectorizer(tokenizer=str.split, token_pattern=None, lowercase=False,
                                 ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    classifier = LogisticRegression(max_iter=1000, C=4.0)
    classifier.fit(vectorizer.fit_transform(x_train), y_train)
    predicted = classifier.predict(vectorizer.transform(x_test))
    return {
        "accuracy": round(float(accuracy_score(y_test, predicted)), 6),
        "macro_f1": round(float(f1_score(y_test, predicted, average="macro")), 6),
        "fit_seconds": round(time.perf_counter() - started, 2),
    }


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """Confusion matrix heat map with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(data[i, j]), ha="center", va="center",
                    color="white" if data[i, j] > data.max() / 2 else "black")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_history(history_path: Path, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [float(r[metric]) for r in rows], marker="o", label="train")
        ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    # A fixed "Software" entry and no timestamp keep the PNG bytes reproducible.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def evaluate(params: EvaluateParams, model_path: Path = MODEL_PATH,
             vocab_path: Path = VOCAB_PATH, tokens_dir: Path = TOKENS_DIR,
             history_path: Path = HISTORY_PATH, reports: Path = REPORTS) -> dict:
    """Score the model on the test split, write metrics, confusion table, report and plots."""
    from sklearn.metrics import classification_report

    from rnnpipe.classifier import TextClassifier

    classifier = TextClassifier.load(model_path, vocab_path)
    labels = classifier.vocab.labels
    x_test, y_test = load_split("test", classifier.vocab, classifier.max_len, tokens_dir)
    probs = classifier.model.predict(x_test, batch_size=params.batch_size, verbose=0)
    y_pred = probs.argmax(axis=1)
    metrics = score(y_test, y_pred, labels)
    metrics["test_documents"] = len(y_test)
    metrics["baseline"] = baseline_scores(tokens_dir)
    metrics["baseline"].pop("fit_seconds")
    metrics["beats_baseline"] = metrics["accuracy"] >= metrics["baseline"]["accuracy"]
    write_json(reports / "metrics.json", metrics)
    with atomic_open(reports / "confusion.csv") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["actual", "predicted"])
        writer.writerows((labels[t], labels[p]) for t, p in zip(y_test, y_pred, strict=True))
    with atomic_open(reports / "classification_report.txt") as fh:
        fh.write(classification_report(y_test, y_pred, labels=list(range(len(labels))),
                                       target_names=labels, digits=4, zero_division=0))
    plot_confusion(metrics["confusion_matrix"], labels, reports / "plots" / "confusion_matrix.png")
    plot_history(history_path, reports / "plots" / "training_curves.png")
    return metrics


def log_to_mlflow(run, metrics: dict, params, model_uri: str, hashes: dict[str, str]) -> None:
    """Test metrics, reports, plots and params.yaml on the run; then registration of the logged
    model (`model_uri`) through the promotion gate."""
    from rnnpipe import registry
    from rnnpipe.tracking import retry_locked

    logged = retry_locked(lambda: run.client.get_run(run.run_id)).data.metrics
    if "loss" not in logged:  # train did not run in this execution: carry its curves over
        with open(HISTORY_PATH, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                run.log_metrics({k: float(v) for k, v in row.items() if k != "epoch"},
                                step=int(row["epoch"]))
    run.log_metrics({"test_accuracy": metrics["accuracy"], "test_macro_f1": metrics["macro_f1"],
                     "baseline_accuracy": metrics["baseline"]["accuracy"],
                     "baseline_macro_f1": metrics["baseline"]["macro_f1"],
                     **{f"test_f1.{label}": m["f1"] for label, m in metrics["per_class"].items()}})
    for path in (METRICS_PATH, REPORT_PATH, CONFUSION_PATH, Path("reports/train.json")):
        run.log_artifact(path, "reports")
    # The ingest and vocab steps log their summaries only when DVC re-runs them; a run that
    # started at train (`dvc exp run -S train.epochs=2`) gets the current ones here.
    for path in (Path("reports/ingest.json"), Path("reports/vocab.json")):
        if path.exists():
            run.log_artifact(path, "reports")
    for path in sorted(PLOTS_DIR.glob("*.png")):
        run.log_artifact(path, "plots")
    run.log_artifact(VOCAB_PATH, "vocabulary")
    run.log_artifact(Path("params.yaml"))
    run.set_tags({f"dvc.md5.{path}": md5 for path, md5 in hashes.items()
                  if path.startswith(("data/", "models/"))})
    registry.register_logged(run, params, metrics, model_uri)


def start_scoring() -> subprocess.Popen | None:
    """Start `rnnpipe evaluate --score-only` (`evaluate()` with this directory's params) in a
    second process, or return None on a one-core machine, where it would only compete.

    Scoring and logging the model to MLflow need nothing from each other, and each keeps one
    core busy for seconds (MLflow loads the logged model again to answer its input example):
    side by side, the step takes the longer of the two instead of their sum.
    """
    if (os.cpu_count() or 1) < 2:
        return None
    # The rnnpipe this module belongs to, whatever the working directory holds.
    package_parent = str(Path(__file__).resolve().parent.parent)
    python_path = os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))
    return subprocess.Popen([sys.executable, "-m", "rnnpipe", "evaluate", "--score-only"],
                            env={**os.environ, "PYTHONPATH": python_path},
                            stderr=subprocess.PIPE, text=True, encoding="utf-8",
                            errors="replace")


def scoring_result(process: subprocess.Popen) -> dict:
    """Wait for `start_scoring`'s process; its metrics, or its error raised here as it was
    reported there (a user error as `RnnpipeError`, an environment error as `OSError`)."""
    from rnnpipe.cli import DEBUG_HINT, ENVIRONMENT_ERROR_EXIT, ERROR_PREFIX, USER_ERROR_EXIT
    from rnnpipe.errors import RnnpipeError

    _, stderr = process.communicate()
    lines = stderr.splitlines()
    if process.returncode != 0 and lines and lines[-1].startswith(ERROR_PREFIX):
        sys.stderr.write("".join(f"{line}\n" for line in lines[:-1]))
        message = lines[-1].removeprefix(ERROR_PREFIX)
        if process.returncode == USER_ERROR_EXIT:
            raise RnnpipeError(message)
        if process.returncode == ENVIRONMENT_ERROR_EXIT:
            raise OSError(message.removesuffix(DEBUG_HINT))
    sys.stderr.write(stderr)  # its warnings, or the traceback of a failure
    if process.returncode != 0:
        raise RuntimeError(f"scoring the model (`rnnpipe evaluate --score-only`) failed with "
                           f"exit status {process.returncode}; its output is above")
    return read_json(METRICS_PATH)


def score_main() -> None:
    """`rnnpipe evaluate --score-only`: score and write the reports; no MLflow."""
    evaluate(load_params().evaluate)


def main() -> None:
    """`rnnpipe evaluate`: run the step with the `evaluate` section of `params.yaml`: score (in a
    second process, see `start_scoring`) while the model is logged to MLflow, then log the
    scores and reports and register the model."""
    from rnnpipe import registry, tracking

    params = load_params()
    scoring = start_scoring()  # first: opening the MLflow run alone takes seconds
    try:
        with tracking.step_run("evaluate", params, final=True) as run:
            hashes = tracking.dvc_lock_hashes()
            model_uri = registry.log_model(run, hashes)
            metrics = evaluate(params.evaluate) if scoring is None else scoring_result(scoring)
            log_to_mlflow(run, metrics, params, model_uri, hashes)
    finally:
        if scoring is not None and scoring.poll() is None:  # MLflow failed first
            scoring.kill()
            scoring.communicate()
    print(f"evaluate: test accuracy {metrics['accuracy']:.4f}, macro-F1 {metrics['macro_f1']:.4f} "
          f"(TF-IDF + logistic regression baseline: accuracy "
          f"{metrics['baseline']['accuracy']:.4f}); reports in {REPORTS}/")
