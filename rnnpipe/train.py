"""Step 3, train: embedding → stacked LSTM → dense → softmax, in Keras 3 on TensorFlow.

Adam with global-norm gradient clipping; padding is masked (`<PAD>` = 0), so it never changes an
answer; early stopping on validation loss keeps the best weights; seeds and op determinism make
a run repeatable on one machine. After every epoch the full training state (model, optimizer,
early-stopping bookkeeping, history) is checkpointed, so a killed run resumes from its last
finished epoch and ends exactly where an uninterrupted run would.

Outputs: `models/model.keras`, `reports/history.csv` (per-epoch curves for `dvc plots`),
`reports/train.json` (best epoch, timing).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

import rnnpipe  # noqa: F401  (environment defaults before TensorFlow loads)
from rnnpipe.config import TrainParams, load_params
from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open, atomic_path, read_json, write_json
from rnnpipe.text import encode
from rnnpipe.vocab import TOKENS_DIR, VOCAB_PATH, Vocabulary, read_tokens

MODEL_PATH = Path("models/model.keras")
HISTORY_PATH = Path("reports/history.csv")
SUMMARY_PATH = Path("reports/train.json")
CHECKPOINT_DIR = Path(".rnnpipe/checkpoint")
HISTORY_KEYS = ("loss", "accuracy", "val_loss", "val_accuracy")


def load_split(name: str, vocab: Vocabulary, max_len: int,
               tokens_dir: Path = TOKENS_DIR) -> tuple[np.ndarray, np.ndarray]:
    """Token ids `[n, max_len]` and label ids `[n]` of one split."""
    labels, token_lists = read_tokens(tokens_dir / f"{name}.tsv")
    if not labels:
        raise DataError(f"{tokens_dir / f'{name}.tsv'}: the {name} split is empty")
    label_ids = vocab.label_ids
    unknown = sorted(set(labels) - set(label_ids))
    if unknown:
        raise DataError(f"{tokens_dir / f'{name}.tsv'}: label {unknown[0]!r} is not in the "
                        f"vocabulary's label map; re-run the vocabulary step")
    y = np.array([label_ids[label] for label in labels], dtype=np.int32)
    return encode(token_lists, vocab.token_ids, max_len), y


def build_model(vocab_size: int, num_classes: int, params: TrainParams):
    """The classifier: masked embedding → `lstm_units` stacked LSTM layers → (the last real
    step's output, or max/mean over steps: `params.pooling`) → ReLU dense with dropout → softmax.
    `params.cell` picks `keras.layers.LSTM` or rnnpipe's hand-written cell."""
    import keras

    from rnnpipe.lstm import MaskedGlobalMaxPooling1D, build_lstm_stack

    inputs = keras.Input(shape=(params.max_len,), dtype="int32", name="token_ids")
    x = keras.layers.Embedding(vocab_size, params.embedding_dim, mask_zero=True,
                               name="embedding")(inputs)
    if params.embedding_dropout:
        # Drops whole embedding channels: the strongest guard against memorising rare words.
        x = keras.layers.SpatialDropout1D(params.embedding_dropout, seed=params.seed,
                                          name="embedding_dropout")(x)
    stack = build_lstm_stack(params.lstm_units, params.cell, timesteps=params.max_len)
    if params.pooling != "last":
        # Pool over every step's output instead of taking the last one; both poolings are
        # given the mask, so padding never counts.
        stack[-1].return_sequences = True
    for layer in stack:
        x = layer(x)
    if params.pooling == "max":
        x = MaskedGlobalMaxPooling1D(name="max_pool")(x)
    elif params.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
    x = keras.layers.Dense(params.fc_units, activation="relu", name="fc")(x)
    x = keras.layers.Dropout(params.dropout, seed=params.seed, name="dropout")(x)
    outputs = keras.layers.Dense(num_classes, activation="softmax", name="probabilities")(x)
    model = keras.Model(inputs, outputs, name="rnnpipe_classifier")
    model.compile(
        optimizer=keras.optimizers.Adam(params.learning_rate, global_clipnorm=params.clipnorm),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def training_batches(x: np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     first_epoch: int, epochs: int):
    """Batches for epochs `first_epoch..epochs-1`, each shuffled with a seed derived from the
    epoch number, so a resumed run sees exactly the batches an uninterrupted one would."""
    import tensorflow as tf

    examples = tf.data.Dataset.from_tensor_slices((x, y))

    def one_epoch(epoch):
        return examples.shuffle(len(x), seed=seed * 100_003 + epoch).batch(batch_size)

    return (tf.data.Dataset.range(first_epoch, epochs).flat_map(one_epoch)
            .prefetch(tf.data.AUTOTUNE))


def fingerprint(params: TrainParams, inputs: list[Path]) -> str:
    """What a checkpoint belongs to: the train params and the bytes of the inputs."""
    digest = hashlib.sha256(json.dumps(params.__dict__, sort_keys=True).encode())
    for path in inputs:
        digest.update(path.read_bytes())
    return digest.hexdigest()


def _training_callbacks(params: TrainParams, state: dict, checkpoint_dir: Path,
                        on_epoch: Any):
    import keras

    class EarlyStoppingCheckpoint(keras.callbacks.Callback):
        """Early stopping on `val_loss` with best weights kept, plus a resumable checkpoint.

        Keras' own EarlyStopping keeps its state in memory; here it lives in `state` and is
        written with the model after every epoch.
        """

        def __init__(self) -> None:
            super().__init__()
            self.epoch_start = 0.0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch_start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            row = {"epoch": epoch + 1, **{k: float(logs[k]) for k in HISTORY_KEYS if k in logs},
                   "seconds": time.perf_counter() - self.epoch_start}
            state["history"].append(row)
            # Files are named by epoch and state.json, written last, names the ones to use: a
            # kill at any moment leaves a state whose files match it exactly.
            stale = {state.get("last"), state.get("best")}
            if row["val_loss"] < state["best_val_loss"]:
                state.update(best_val_loss=row["val_loss"], best_epoch=epoch + 1, wait=0,
                             best=f"best-{epoch + 1}.weights.h5")
                with atomic_path(checkpoint_dir / state["best"]) as tmp:
                    self.model.save_weights(tmp)
            else:
                state["wait"] += 1
            state["stopped"] = state["wait"] > params.patience
            self.model.stop_training = state["stopped"]
            state["last"] = f"epoch-{epoch + 1}.keras"
            with atomic_path(checkpoint_dir / state["last"]) as tmp:
                self.model.save(tmp)
            # Keras does not save random-seed state (dropout's counter); a resumed run must
            # continue the same random stream to end where an uninterrupted run would.
            state["seed_states"] = [np.asarray(v).tolist() for v in _seed_variables(self.model)]
            write_json(checkpoint_dir / "state.json", state)
            for name in stale - {state["last"], state["best"], None}:
                (checkpoint_dir / name).unlink(missing_ok=True)
            on_epoch(row)

    return [EarlyStoppingCheckpoint()]


def _seed_variables(model) -> list:
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _resume_state(checkpoint_dir: Path, key: str) -> dict | None:
    state_path = checkpoint_dir / "state.json"
    if not state_path.exists():
        return None
    state = read_json(state_path)
    if state.get("fingerprint") != key or not all(
            (checkpoint_dir / str(state.get(name))).exists() for name in ("last", "best")):
        return None
    return state


def train(params: TrainParams, tokens_dir: Path = TOKENS_DIR, vocab_path: Path = VOCAB_PATH,
          model_path: Path = MODEL_PATH, history_path: Path = HISTORY_PATH,
          summary_path: Path = SUMMARY_PATH, checkpoint_dir: Path = CHECKPOINT_DIR,
          on_epoch: Any = lambda row: None) -> dict:
    """Fit the model on the train split with validation-based early stopping; write the model,
    the per-epoch history and a summary. `on_epoch(row)` is called after every epoch."""
    import keras
    import tensorflow as tf

    vocab = Vocabulary.load(vocab_path)
    x_train, y_train = load_split("train", vocab, params.max_len, tokens_dir)
    x_val, y_val = load_split("val", vocab, params.max_len, tokens_dir)

    key = fingerprint(params, [vocab_path, tokens_dir / "train.tsv", tokens_dir / "val.tsv"])
    state = _resume_state(checkpoint_dir, key)
    keras.utils.set_random_seed(params.seed)
    tf.config.experimental.enable_op_determinism()
    if state is None:
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
        checkpoint_dir.mkdir(parents=True)
        state = {"fingerprint": key, "history": [], "best_val_loss": math.inf, "best_epoch": 0,
                 "wait": 0, "stopped": False}
        model = build_model(len(vocab.tokens), len(vocab.labels), params)
    else:
        import rnnpipe.lstm  # noqa: F401  (registers the manual cell for deserialisation)

        model = keras.saving.load_model(checkpoint_dir / state["last"], safe_mode=True)
        for variable, value in zip(_seed_variables(model), state["seed_states"], strict=True):
            variable.assign(np.array(value, dtype=variable.dtype))
        print(f"train: resuming after epoch {len(state['history'])} from {checkpoint_dir}",
              flush=True)

    first_epoch = len(state["history"])
    started = time.perf_counter()
    if first_epoch < params.epochs and not state["stopped"]:
        model.fit(
            training_batches(x_train, y_train, params.batch_size, params.seed, first_epoch,
                             params.epochs),
            validation_data=(x_val, y_val),
            batch_size=params.batch_size,
            epochs=params.epochs,
            initial_epoch=first_epoch,
            steps_per_epoch=math.ceil(len(x_train) / params.batch_size),
            callbacks=_training_callbacks(params, state, checkpoint_dir, on_epoch),
            shuffle=False,  # training_batches shuffles, per epoch, reproducibly
            verbose=1 if sys.stdout.isatty() else 2,
        )
    model.load_weights(checkpoint_dir / state["best"])
    with atomic_path(model_path) as tmp:
        model.save(tmp)
        normalize_keras_archive(tmp)
    write_history(history_path, state["history"])
    epoch_seconds = [row["seconds"] for row in state["history"]]
    summary = {
        "best_epoch": state["best_epoch"],
        "epochs_run": len(state["history"]),
        "best_val_loss": round(state["best_val_loss"], 6),
        "best_val_accuracy": round(state["history"][state["best_epoch"] - 1]["val_accuracy"], 6),
        "train_examples": len(x_train),
        "parameters": int(model.count_params()),
    }
    write_json(summary_path, summary)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    # Timing varies run to run, so it stays out of the DVC-tracked summary.
    timing = {"seconds": round(time.perf_counter() - started, 2),
              "examples_per_s": round(len(x_train) / float(np.median(epoch_seconds)), 1)
              if epoch_seconds else None}
    return {**summary, **timing}


_SHARED_OBJECT_ID = re.compile(rb'"shared_object_id": (\d+)')
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def normalize_keras_archive(path: Path) -> None:
    """Rewrite a `.keras` file so its bytes depend only on the model, not on when or where it
    was saved: same weights and config, same bytes, same DVC hash.

    Keras stamps the save time into `metadata.json` (`date_saved`) and into the weights' zip
    entry, and numbers shared objects in `config.json` by their memory address (`id()`). Here
    the date is dropped, every entry gets a fixed timestamp and the ids are renumbered in order
    of first appearance (the same object keeps the same number, which is all loading needs).
    """
    with zipfile.ZipFile(path) as archive:
        entries = [(info, archive.read(info)) for info in archive.infolist()]
    numbers: dict[bytes, bytes] = {}

    def renumber(match: re.Match[bytes]) -> bytes:
        number = numbers.setdefault(match.group(1), str(len(numbers)).encode())
        return b'"shared_object_id": ' + number

    with zipfile.ZipFile(path, "w") as archive:
        for info, data in entries:
            if info.filename == "metadata.json":
                metadata = json.loads(data)
                metadata.pop("date_saved", None)
                data = json.dumps(metadata).encode()
            elif info.filename == "config.json":
                data = _SHARED_OBJECT_ID.sub(renumber, data)
            entry = zipfile.ZipInfo(info.filename, date_time=_ZIP_EPOCH)
            entry.compress_type = info.compress_type
            entry.external_attr = info.external_attr
            archive.writestr(entry, data)


def write_history(path: Path, history: list[dict]) -> None:
    """Per-epoch history as CSV (`epoch, loss, accuracy, val_loss, val_accuracy`)."""
    with atomic_open(path) as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(["epoch", *HISTORY_KEYS])
        for row in history:
            writer.writerow([row["epoch"], *(f"{row[k]:.6f}" for k in HISTORY_KEYS)])


def main() -> None:
    """`rnnpipe train`: run the step with the `train` section of `params.yaml`."""
    from rnnpipe import tracking

    params = load_params()
    with tracking.step_run("train", params) as run:
        def log_epoch(row: dict) -> None:
            run.log_metrics({k: row[k] for k in HISTORY_KEYS}, step=row["epoch"])

        summary = train(params.train, on_epoch=log_epoch)
        run.log_metrics({f"train.{k}": v for k, v in summary.items() if v is not None})
    print(f"train: best epoch {summary['best_epoch']} of {summary['epochs_run']}, "
          f"val accuracy {summary['best_val_accuracy']:.4f}, "
          f"{summary['examples_per_s']} examples/s; model at {MODEL_PATH}")
