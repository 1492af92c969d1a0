"""Step 3, train: fit the classifier (embedding → stacked LSTM → dense → softmax) on the train
split, stopping on validation.

params: `train` → outputs: `models/model.keras` (the best epoch's weights), `models/
preprocessing.json` (how long texts are cut), `reports/history.csv` (per-epoch curves for `dvc
plots`) and `reports/train.json` (sequence length, epochs, whether validation was still
improving, embedding coverage).

Training length fits the data: up to `max_epochs`, stopped when `monitor` has not improved for
`patience` epochs, with the learning rate halved on a plateau. `max_len: auto` takes the train
split's 95th-percentile length (capped by `max_len_cap`). When training runs out of epochs while
validation is still improving, the step says so, in its output and in `reports/train.json`.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np

from rnnpipe.config import AUTO, Params, TrainParams, load_params
from rnnpipe.datafiles import read_tokens
from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open, atomic_path, write_json
from rnnpipe.model.backend import keras
from rnnpipe.model.network import NetworkConfig, build_model, load_model, save_model
from rnnpipe.model.text import encode
from rnnpipe.model.training import (
    HISTORY_KEYS,
    FitPolicy,
    class_weights,
    fit_callbacks,
    new_state,
    resume_state,
    seed_variables,
    training_batches,
)
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.paths import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    MODEL_FILE,
    TOKENS_DIR,
    TRAIN_REPORT,
    VOCAB_FILE,
    tokens_file,
)

AUTO_PERCENTILE = 95  # `max_len: auto` keeps every token of 95% of the training documents


def choose_max_len(lengths: list[int], params: TrainParams) -> int:
    """`train.max_len`, or with `auto` the 95th percentile of the train split's lengths, at least
    1 and at most `max_len_cap`."""
    if params.max_len != AUTO:
        return int(params.max_len)
    return int(min(params.max_len_cap, max(1, math.ceil(np.percentile(lengths, AUTO_PERCENTILE)))))


def label_ids(labels: list[str], vocab: Vocabulary, path: Path) -> np.ndarray:
    """Label ids of a split, or a `DataError` naming a label the vocabulary does not know."""
    ids = vocab.label_ids
    unknown = sorted(set(labels) - set(ids))
    if unknown:
        raise DataError(f"{path}: label {unknown[0]!r} is not in the vocabulary's label map; "
                        f"re-run the vocabulary step")
    return np.array([ids[label] for label in labels], dtype=np.int32)


def read_split_tokens(split: str, tokens_dir: Path) -> tuple[list[str], list[list[str]]]:
    """Labels and tokens of one split, or a `DataError` if it is empty."""
    labels, tokens = read_tokens(tokens_file(split, tokens_dir))
    if not labels:
        raise DataError(f"{tokens_file(split, tokens_dir)}: the {split} split is empty")
    return labels, tokens


def fingerprint(params: TrainParams, inputs: list[Path]) -> str:
    """What a checkpoint belongs to: the train params and the bytes of the inputs."""
    digest = hashlib.sha256(json.dumps(params.__dict__, sort_keys=True, default=str).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def pretrained_matrix(params: TrainParams, vocab: Vocabulary,
                      counts: Counter) -> tuple[np.ndarray | None, dict | None]:
    """The embedding matrix from `train.embeddings` (None without) and its coverage."""
    if params.embeddings is None:
        return None, None
    from rnnpipe.model.embeddings import load_embeddings

    matrix, coverage = load_embeddings(params.embeddings, vocab.tokens, params.embedding_dim,
                                       counts=counts, seed=params.seed)
    return matrix, coverage.to_dict()


def still_improving(state: dict, params: TrainParams) -> str | None:
    """Why more epochs would likely help (training ran out of epochs with `monitor` improving
    at the last epoch), or None."""
    history = state["history"]
    if state["stopped"] or not history or state["best_epoch"] != len(history):
        return None
    recent = [f"{row[params.monitor]:.4f}" for row in history[-3:]]
    return (f"{params.monitor} was still improving when training reached train.max_epochs="
            f"{params.max_epochs} ({' → '.join(recent)} over the last {len(recent)} epochs); "
            f"raise train.max_epochs (or train.learning_rate) to train longer")


def train(params: TrainParams, tokens_dir: Path = TOKENS_DIR, vocab_path: Path = VOCAB_FILE,
          model_path: Path = MODEL_FILE, history_path: Path = HISTORY_FILE,
          summary_path: Path = TRAIN_REPORT, checkpoint_dir: Path = CHECKPOINT_DIR,
          on_epoch: Callable[[dict], None] = lambda row: None,
          eval_batch_size: int = 512) -> dict:
    """Fit the model with validation-based early stopping; write the model, its preprocessing,
    the per-epoch history and a summary. `on_epoch(row)` is called after every epoch."""
    import tensorflow as tf

    vocab = Vocabulary.load(vocab_path)
    train_labels, train_tokens = read_split_tokens("train", tokens_dir)
    val_labels, val_tokens = read_split_tokens("val", tokens_dir)
    lengths = [len(tokens) for tokens in train_tokens]
    max_len = choose_max_len(lengths, params)
    token_ids = vocab.token_ids
    x_train = encode(train_tokens, token_ids, max_len, params.truncate)
    y_train = label_ids(train_labels, vocab, tokens_file("train", tokens_dir))
    x_val = encode(val_tokens, token_ids, max_len, params.truncate)
    y_val = label_ids(val_labels, vocab, tokens_file("val", tokens_dir))
    num_classes = len(vocab.labels)
    weights = class_weights(y_train, num_classes) if params.class_weight == "balanced" else None
    inputs = [vocab_path, tokens_file("train", tokens_dir), tokens_file("val", tokens_dir)]
    if params.embeddings is not None:
        inputs.append(Path(params.embeddings))

    key = fingerprint(params, inputs) if all(p.exists() for p in inputs) else ""
    state = resume_state(checkpoint_dir, key)
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    coverage = None
    if state is None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True)
        state = new_state(key, params.learning_rate)
        matrix, coverage = pretrained_matrix(
            params, vocab, Counter(t for tokens in train_tokens for t in tokens))
        state["embedding_coverage"] = coverage
        model = build_model(NetworkConfig(
            vocab_size=len(vocab.tokens), num_classes=num_classes, max_len=max_len,
            embedding_dim=params.embedding_dim, embedding_dropout=params.embedding_dropout,
            lstm_units=params.lstm_units, cell=params.cell, pooling=params.pooling,
            fc_units=params.fc_units, dropout=params.dropout, seed=params.seed),
            matrix, params.embeddings_trainable)
        model.compile(optimizer=keras.optimizers.Adam(params.learning_rate,
                                                      global_clipnorm=params.clipnorm),
                      loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    else:
        model = load_model(checkpoint_dir / state["last"], compile=True)
        for variable, value in zip(seed_variables(model), state["seed_states"], strict=True):
            variable.assign(np.array(value, dtype=variable.dtype))
        model.optimizer.learning_rate.assign(state["learning_rate"])
        coverage = state.get("embedding_coverage")
        print(f"train: resuming after epoch {len(state['history'])} from {checkpoint_dir}",
              flush=True)

    first_epoch = len(state["history"])
    started = time.perf_counter()
    steps = math.ceil(len(x_train) / params.batch_size)
    if first_epoch < params.max_epochs and not state["stopped"]:
        policy = FitPolicy(params.max_epochs, params.patience, params.monitor,
                           params.lr_schedule, eval_batch_size)
        callbacks, verbose = fit_callbacks(policy, state, checkpoint_dir, (x_val, y_val),
                                           num_classes, steps, params.batch_size, on_epoch)
        model.fit(training_batches(x_train, y_train, params.batch_size, params.seed,
                                   first_epoch, params.max_epochs, weights),
                  epochs=params.max_epochs, initial_epoch=first_epoch, steps_per_epoch=steps,
                  callbacks=callbacks, shuffle=False, verbose=verbose)
    model.load_weights(checkpoint_dir / state["best"])
    with atomic_path(model_path) as tmp:
        save_model(model, tmp)
    write_json(model_path.parent / "preprocessing.json",
               {"max_len": max_len, "truncate": params.truncate})
    write_history(history_path, state["history"])
    best = state["history"][state["best_epoch"] - 1]
    summary = {
        "max_len": max_len,
        "truncate": params.truncate,
        "truncated_share": round(float(np.mean(np.array(lengths) > max_len)), 4),
        "best_epoch": state["best_epoch"],
        "epochs_run": len(state["history"]),
        "stopped_early": state["stopped"],
        "still_improving": still_improving(state, params),
        "monitor": params.monitor,
        **{f"best_{k}": round(best[k], 6) for k in HISTORY_KEYS if k != "learning_rate"},
        "train_examples": len(x_train),
        "parameters": int(model.count_params()),
        "embedding_coverage": coverage,
    }
    write_json(summary_path, summary)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    seconds = time.perf_counter() - started
    # Timing varies run to run, so it stays out of the DVC-tracked summary.
    return {**summary, "seconds": round(seconds, 2),
            "examples_per_s": round(len(x_train) * (len(state["history"]) - first_epoch)
                                    / max(seconds, 1e-9), 1)}


def write_history(path: Path, history: list[dict]) -> None:
    """Per-epoch history as CSV (`epoch` and `HISTORY_KEYS`)."""
    with atomic_open(path) as fh:
        fh.write(",".join(["epoch", *HISTORY_KEYS]) + "\n")
        for row in history:
            fh.write(",".join([str(row["epoch"]), *(f"{row[k]:.6g}" if k == "learning_rate"
                                                     else f"{row[k]:.6f}"
                                                     for k in HISTORY_KEYS)]) + "\n")


def main(params: Params | None = None) -> None:
    """`rnnpipe train`: run the step with the `train` section of `params.yaml`; epochs are
    logged live to the MLflow run an entry point named (`MLFLOW_RUN_ID`), if any."""
    from rnnpipe.tracking.runs import attached_run

    params = params or load_params()
    run = attached_run(params)
    on_epoch = (lambda row: run.log_history_row(row)) if run else (lambda row: None)
    summary = train(params.train, on_epoch=on_epoch, eval_batch_size=params.evaluate.batch_size)
    coverage = summary["embedding_coverage"]
    if coverage:
        print(f"train: pretrained vectors cover {coverage['vocabulary']:.1%} of the vocabulary, "
              f"{coverage['tokens']:.1%} of training tokens ({params.train.embeddings})")
    print(f"train: best epoch {summary['best_epoch']} of {summary['epochs_run']} "
          f"({'stopped early' if summary['stopped_early'] else 'max_epochs reached'}), val "
          f"accuracy {summary['best_val_accuracy']:.4f}, macro-F1 "
          f"{summary['best_val_macro_f1']:.4f}; max_len {summary['max_len']} "
          f"({summary['truncated_share']:.1%} of documents cut); {summary['seconds']:.0f} s; "
          f"model at {MODEL_FILE}", flush=True)
    if summary["still_improving"]:
        print(f"train: warning: {summary['still_improving']}", file=sys.stderr, flush=True)
