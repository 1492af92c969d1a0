"""Recording an evaluated model: everything the steps wrote to `reports/` goes onto the run,
the model is logged as a raw-text pyfunc and passed through the promotion gate.

The evaluate step calls `record_evaluation`; it records into the run its entry point named
(`MLFLOW_RUN_ID`), or creates one when none did (plain `dvc repro`, `dvc exp run`, `rnnpipe
evaluate` by hand), so what earlier steps wrote reaches MLflow whichever way the pipeline ran.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Callable
from itertools import islice
from pathlib import Path

from rnnpipe.config import Params, model_name
from rnnpipe.datafiles import iter_split, read_split
from rnnpipe.errors import ErrorRecord, exit_code
from rnnpipe.io import read_json
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.paths import (
    CLASS_REPORT_FILE,
    CONFUSION_FILE,
    HISTORY_FILE,
    INGEST_REPORT,
    METRICS_FILE,
    MISCLASSIFIED_FILE,
    MODEL_FILE,
    PARAMS_FILE,
    PER_CLASS_FILE,
    PLOTS_DIR,
    PREPROCESSING_FILE,
    TRAIN_REPORT,
    VOCAB_FILE,
    VOCAB_REPORT,
    split_file,
)
from rnnpipe.tracking.registry import Decision, gate, log_model
from rnnpipe.tracking.runs import RunLog, create_run, dvc_md5, provenance_tags
from rnnpipe.tracking.store import client

REPORTS = (METRICS_FILE, PER_CLASS_FILE, CLASS_REPORT_FILE, CONFUSION_FILE, MISCLASSIFIED_FILE,
           TRAIN_REPORT, INGEST_REPORT, VOCAB_REPORT, HISTORY_FILE)


def report_metrics(metrics: dict, per_class: dict, train: dict, ingest: dict | None,
                   vocab: dict | None) -> dict[str, float]:
    """The run's metrics, named so none can be mistaken for another: `test_*`, `val_*` and
    `baseline_test_*` are the kept model's scores on those splits, `train_*` the kept epoch's
    as Keras measured them while training."""
    result = {f"test_{k}": v for k, v in metrics["test"].items()}
    result.update({f"val_{k}": v for k, v in metrics["val"].items()})
    result.update({f"baseline_{k}": v for k, v in metrics["baseline"].items()})
    result.update({"train_accuracy": train["best_train_accuracy"],
                   "train_loss": train["best_train_loss"], "best_epoch": train["best_epoch"],
                   "epochs_run": train["epochs_run"], "max_len": train["max_len"]})
    for label, row in per_class["per_class"].items():
        result[f"test_f1.{label}"] = row["f1"]
        result[f"test_recall.{label}"] = row["recall"]
    if ingest:
        result["ingest.documents_kept"] = ingest["documents_kept"]
        result.update({f"ingest.{k}": v for k, v in ingest["splits"].items()})
    if vocab:
        result.update({"vocab.size": vocab["size"], "vocab.train_coverage": vocab["train_coverage"],
                       "vocab.val_oov_rate": vocab["val_oov_rate"]})
    return result


def log_reports(run: RunLog, metrics: dict) -> dict:
    """Scores, curves, reports, plots, params and provenance on `run`; returns train.json."""
    train = read_json(TRAIN_REPORT)
    summaries = [read_json(p) if p.exists() else None for p in (INGEST_REPORT, VOCAB_REPORT)]
    run.log_metrics(report_metrics(metrics, read_json(PER_CLASS_FILE), train, *summaries))
    logged = run.client.get_run(run.run_id).data.metrics
    if "history/val_loss" not in logged:  # training ran without this run: carry its curves
        with open(HISTORY_FILE, encoding="utf-8") as fh:
            for row in csv.DictReader(fh):
                run.log_history_row({k: float(v) for k, v in row.items()})
    for path in REPORTS:
        if path.exists():
            run.log_artifact(path, "reports")
    for path in sorted(PLOTS_DIR.glob("*.png")):
        run.log_artifact(path, "plots")
    run.log_artifact(VOCAB_FILE, "vocabulary")
    run.log_artifact(PARAMS_FILE)
    run.set_tags({**provenance_tags(), "rnnpipe.beats_baseline": metrics["beats_baseline"],
                  "rnnpipe.still_improving": train["still_improving"] or "false"})
    return train


def register(run: RunLog, params: Params, metrics: dict, model_uri: str,
             labels: list[str]) -> Decision:
    """Pass the logged model through the promotion gate of its registered model."""
    texts_labels, texts = read_split(split_file("test"))
    decision = gate(run.client, run, model_name(params), model_uri, params.register.metric,
                    params.register.min_improvement, metrics["test"], labels,
                    (texts, texts_labels), dvc_md5(split_file("test")))
    run.set_tags({"rnnpipe.registered_model": decision.name,
                  "rnnpipe.registered_version": decision.version or "",
                  "rnnpipe.promotion": decision.role,
                  "rnnpipe.promotion_reason": decision.reason})
    return decision


def record_evaluation(params: Params, compute_metrics: Callable[[], dict]) -> str:
    """Log the model, get its metrics from `compute_metrics` (meanwhile), record them and the
    reports on the run, gate the model; return the step's summary lines."""

    store = client(params)
    attached = os.environ.get("MLFLOW_RUN_ID")
    run = RunLog(store, attached or create_run(store, params, "evaluate"))
    try:
        labels = Vocabulary.load(VOCAB_FILE).labels
        example = [text for _, text in islice(iter_split(split_file("train")), 2)]
        model_uri = log_model(
            run, labels, example,
            {"model": MODEL_FILE, "vocab": VOCAB_FILE, "preprocessing": PREPROCESSING_FILE},
            dvc_md5(split_file("train")))
        run.set_tags({"rnnpipe.model_uri": model_uri})
        metrics = compute_metrics()
        train = log_reports(run, metrics)
        decision = register(run, params, metrics, model_uri, labels) \
            if params.register.enabled else None
    except BaseException as exc:
        if not attached:
            run.end("FAILED", ErrorRecord("evaluate", exit_code(exc) or 1, type(exc).__name__,
                                          f"evaluate: {type(exc).__name__}: {exc}"))
        raise
    if not attached:
        run.end("FINISHED")
    lines = [describe(metrics)]
    if train["still_improving"]:
        lines.append(f"evaluate: note: training stopped early by max_epochs: "
                     f"{train['still_improving']}")
    if decision is not None:
        lines.append(f"register: {decision.name} "
                     f"{'v' + decision.version if decision.version else ''} "
                     f"{decision.role}: {decision.reason}".replace("  ", " "))
    return "\n".join(lines)


def describe(metrics: dict) -> str:
    """The evaluate step's one-line result."""
    test, baseline = metrics["test"], metrics["baseline"]
    gap = 100 * (test["accuracy"] - baseline["test_accuracy"])
    return (f"evaluate: test accuracy {test['accuracy']:.4f}, macro-F1 {test['macro_f1']:.4f}; "
            f"TF-IDF + logistic regression baseline {baseline['test_accuracy']:.4f} "
            f"(LSTM {gap:+.1f} points); reports in {Path(METRICS_FILE).parent}/")
