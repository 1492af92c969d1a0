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
from rnnpipe.datafiles import IDS_FILES, label_ids, read_ids
from rnnpipe.errors import DataError
from rnnpipe.heartbeat import heartbeat
from rnnpipe.io import atomic_open, atomic_path, write_json
from rnnpipe.model.ragged import RaggedIds
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.paths import (
    CHECKPOINT_DIR,
    HISTORY_FILE,
    IDS_DIR,
    MODEL_FILE,
    TRAIN_REPORT,
    VOCAB_FILE,
    ids_dir,
)

AUTO_PERCENTILE = 95  # `max_len: auto` keeps every token of 95% of the training documents


def choose_max_len(lengths: np.ndarray | list[int], params: TrainParams) -> int:
    """`train.max_len`, or with `auto` the 95th percentile of the train split's lengths (read
    from its offsets), at least 1 and at most `max_len_cap`."""
    if params.max_len != AUTO:
        return int(params.max_len)
    return int(min(params.max_len_cap, max(1, math.ceil(np.percentile(lengths, AUTO_PERCENTILE)))))


def read_split_ids(split: str, ids_root: Path) -> RaggedIds:
    """One split's ragged ids (memory-mapped), or a `DataError` if it is empty."""
    data = read_ids(ids_dir(split, ids_root))
    if not len(data):
        raise DataError(f"{ids_dir(split, ids_root)}: the {split} split is empty")
    return data


def fingerprint(params: TrainParams, inputs: list[Path]) -> str:
    """What a checkpoint belongs to: the train params and the bytes of the inputs (read a block
    at a time: inputs may be gigabytes)."""
    digest = hashlib.sha256(json.dumps(params.__dict__, sort_keys=True, default=str).encode())
    for path in inputs:
        with open(path, "rb") as fh:
            while block := fh.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def token_counts(data: RaggedIds, vocab: Vocabulary, block: int = 1 << 22) -> Counter:
    """How often each vocabulary token occurs in a split (for pretrained vectors' coverage),
    counted a block at a time."""
    counts = np.zeros(len(vocab.tokens), dtype=np.int64)
    for start in range(0, len(data.ids), block):
        counts += np.bincount(np.asarray(data.ids[start:start + block]),
                              minlength=len(vocab.tokens))[: len(vocab.tokens)]
        data.release()
    return Counter({t: int(c) for t, c in zip(vocab.tokens, counts.tolist(), strict=True) if c})


def pretrained_matrix(params: TrainParams, vocab: Vocabulary,
                      data: RaggedIds) -> tuple[np.ndarray | None, dict | None]:
    """The embedding matrix from `train.embeddings` (None without) and its coverage."""
    if params.embeddings is None:
        return None, None
    from rnnpipe.model.embeddings import load_embeddings

    matrix, coverage = load_embeddings(params.embeddings, vocab.tokens, params.embedding_dim,
                                       counts=token_counts(data, vocab), seed=params.seed)
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


def train(params: TrainParams, ids_root: Path = IDS_DIR, vocab_path: Path = VOCAB_FILE,
          model_path: Path = MODEL_FILE, history_path: Path = HISTORY_FILE,
          summary_path: Path = TRAIN_REPORT, checkpoint_dir: Path = CHECKPOINT_DIR,
          on_epoch: Callable[[dict], None] = lambda row: None,
          eval_batch_size: int = 512) -> dict:
    """Fit the model with validation-based early stopping; write the model, its preprocessing,
    the per-epoch history and a summary. `on_epoch(row)` is called after every epoch."""
    import tensorflow as tf

    from rnnpipe.model.backend import keras
    from rnnpipe.model.network import NetworkConfig, build_model, load_model, save_model
    from rnnpipe.model.ragged import RaggedInputs
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

    vocab = Vocabulary.load(vocab_path)
    train_data = read_split_ids("train", ids_root)
    val_data = read_split_ids("val", ids_root)
    lengths = train_data.lengths()
    max_len = choose_max_len(lengths, params)
    # Batches are cut from the memory-mapped ids as they are needed: no padded matrix.
    x_train = RaggedInputs(train_data, max_len, params.truncate)
    y_train = label_ids(train_data.labels, vocab, ids_dir("train", ids_root))
    x_val = RaggedInputs(val_data, max_len, params.truncate)
    y_val = label_ids(val_data.labels, vocab, ids_dir("val", ids_root))
    num_classes = len(vocab.labels)
    weights = class_weights(y_train, num_classes) if params.class_weight == "balanced" else None
    inputs = [vocab_path, *(ids_dir(split, ids_root) / name for split in ("train", "val")
                            for name in IDS_FILES)]
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
        matrix, coverage = pretrained_matrix(params, vocab, train_data)
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
        print(f"train: {len(x_train):,} documents ({steps:,} batches an epoch), "
              f"{len(x_val):,} for validation, max_len {max_len}; epochs {first_epoch + 1} to "
              f"{params.max_epochs} at most", flush=True)
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
        "truncated_share": round(float(np.mean(lengths > max_len)), 4),
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
    from rnnpipe.model.training import HISTORY_KEYS

    with atomic_open(path) as fh:
        fh.write(",".join(["epoch", *HISTORY_KEYS]) + "\n")
        for row in history:
            fh.write(",".join([str(row["epoch"]), *(f"{row[k]:.6g}" if k == "learning_rate"
                                                     else f"{row[k]:.6f}"
                                                     for k in HISTORY_KEYS)]) + "\n")


def main(params: Params | None = None) -> None:
    """`rnnpipe train`: run the step with the `train` section of `params.yaml`; epochs are
    logged live to the MLflow run an entry point named (`MLFLOW_RUN_ID`), if any."""
    params = params or load_params()
    with heartbeat("train"):  # from the start: TensorFlow and MLflow take a while to import
        from rnnpipe.tracking.runs import attached_run

        run = attached_run(params)
        on_epoch = (lambda row: run.log_history_row(row)) if run else (lambda row: None)
        summary = train(params.train, on_epoch=on_epoch,
                        eval_batch_size=params.evaluate.batch_size)
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
