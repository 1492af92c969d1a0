"""How the network is fitted: seeded per-epoch batches, validation after every epoch, early
stopping with the best weights kept, a learning-rate schedule, a checkpoint after every epoch,
and progress. Used by the train step; the served model never imports it.

Keras' own EarlyStopping, ReduceLROnPlateau and ModelCheckpoint keep their state in memory. Here
all of it lives in one `state` dict written with the model after every epoch, so a killed run
resumes from its last finished epoch and ends exactly where an uninterrupted run would.
Validation is computed here, from one `predict` over the validation split per epoch (loss,
accuracy and macro-F1 together), instead of by `fit(validation_data=...)`, which would predict
once for loss and accuracy and leave macro-F1 to a second pass.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rnnpipe.io import atomic_path, read_json, write_json
from rnnpipe.metrics import macro_f1
from rnnpipe.model.backend import keras
from rnnpipe.model.network import bucketed_batches
from rnnpipe.model.ragged import RELEASE_EVERY, Inputs, as_inputs, predict_proba

HISTORY_KEYS = ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "val_macro_f1",
                "learning_rate")
LOWER_IS_BETTER = {"val_loss"}
PLATEAU_FACTOR = 0.5  # the plateau schedule halves the rate...
PLATEAU_PATIENCE = 1  # ...after this many epochs without a better `monitor`
MIN_LEARNING_RATE = 1e-5
# A progress line this often within an epoch when not on a terminal: with a batch taking up to a
# few seconds, a log never waits more than 30 s.
PROGRESS_EVERY_S = 20.0


@dataclass(frozen=True)
class FitPolicy:
    """When to stop and how the learning rate moves (the `train` params about the fit)."""

    max_epochs: int
    patience: int
    monitor: str = "val_loss"
    lr_schedule: str = "plateau"
    eval_batch_size: int = 512


def class_weights(y: np.ndarray, num_classes: int) -> np.ndarray:
    """`balanced` weights, n / (k * count): a rare class weighs as much, in all, as a common one."""
    counts = np.bincount(y, minlength=num_classes).astype(np.float64)
    return np.where(counts > 0, len(y) / (num_classes * np.maximum(counts, 1)), 0.0)


def training_batches(x: Inputs | np.ndarray, y: np.ndarray, batch_size: int, seed: int,
                     first_epoch: int, epochs: int, weights: np.ndarray | None = None):
    """Batches for epochs `first_epoch..epochs-1`, of similar lengths and each cut to its
    longest document (`network.bucketed_batches`: about 3x faster than padding every batch to
    `max_len` on the bundled reviews), shuffled with a seed derived from the epoch number, so a
    resumed run sees exactly the batches an uninterrupted one would. With `weights` (per
    class), each example carries its class's weight. `x` is ragged ids cut at `max_len`
    (`ragged.RaggedInputs`: each batch gathered from the memory-mapped split) or a padded
    matrix; the same rows give the same batches either way."""
    import tensorflow as tf

    inputs = as_inputs(x)
    lengths = inputs.lengths
    sample_weights = None if weights is None else weights[y].astype(np.float32)

    def batches():
        for epoch in range(first_epoch, epochs):
            rng = np.random.default_rng(seed * 100_003 + epoch)
            for number, rows in enumerate(bucketed_batches(lengths, batch_size, rng), 1):
                batch = (inputs.batch(rows), y[rows])
                if number % RELEASE_EVERY == 0:
                    inputs.release()
                yield batch if sample_weights is None else (*batch, sample_weights[rows])

    signature = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.int32))
    if sample_weights is not None:
        signature = (*signature, tf.TensorSpec((None,), tf.float32))
    return tf.data.Dataset.from_generator(batches, output_signature=signature).prefetch(2)


def new_state(fingerprint: str, learning_rate: float) -> dict:
    """The bookkeeping of a fit that has not started."""
    return {"fingerprint": fingerprint, "history": [], "best": None, "best_epoch": 0,
            "best_score": None, "wait": 0, "plateau_wait": 0, "stopped": False,
            "learning_rate": learning_rate}


def resume_state(checkpoint_dir: Path, fingerprint: str) -> dict | None:
    """The saved state of an interrupted fit of the same params and data, if its files exist."""
    state_path = checkpoint_dir / "state.json"
    if not state_path.exists():
        return None
    state = read_json(state_path)
    if state.get("fingerprint") != fingerprint or not all(
            (checkpoint_dir / str(state.get(name))).exists() for name in ("last", "best")):
        return None
    return state


def seed_variables(model: keras.Model) -> list:
    """Random-seed state Keras does not save (dropout's counter)."""
    return [v for v in model.variables if v.path.endswith("seed_generator_state")]


def _improved(monitor: str, score: float, best: float | None) -> bool:
    if best is None:
        return True
    return score < best if monitor in LOWER_IS_BETTER else score > best


class EpochEnd(keras.callbacks.Callback):
    """After every epoch: score the validation split, keep the best weights, decide whether to
    stop (`patience`) or halve the learning rate (`plateau`), checkpoint everything."""

    def __init__(self, policy: FitPolicy, state: dict, checkpoint_dir: Path,
                 validation: tuple[Inputs | np.ndarray, np.ndarray], num_classes: int,
                 on_epoch: Callable[[dict], None]) -> None:
        super().__init__()
        self.policy, self.state, self.checkpoint_dir = policy, state, checkpoint_dir
        self.x_val, self.y_val = as_inputs(validation[0]), validation[1]
        self.num_classes = num_classes
        self.on_epoch = on_epoch

    def validation_scores(self) -> dict[str, float]:
        """Loss, accuracy and macro-F1 of the current weights on the validation split."""
        progress = None if sys.stdout.isatty() else LogProgress(
            "train: validation", len(self.y_val))
        probs = predict_proba(self.model, self.x_val, self.policy.eval_batch_size, progress)
        picked = np.clip(probs[np.arange(len(self.y_val)), self.y_val], 1e-7, 1.0)
        predicted = probs.argmax(axis=1)
        return {"val_loss": float(-np.mean(np.log(picked))),
                "val_accuracy": float(np.mean(predicted == self.y_val)),
                "val_macro_f1": macro_f1(self.y_val, predicted, self.num_classes)}

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs if logs is not None else {}
        state, policy = self.state, self.policy
        logs.update(self.validation_scores())  # the progress bar shows them too
        row = {"epoch": epoch + 1, "train_loss": float(logs["loss"]),
               "train_accuracy": float(logs["accuracy"]),
               **{k: logs[k] for k in ("val_loss", "val_accuracy", "val_macro_f1")},
               "learning_rate": state["learning_rate"]}
        state["history"].append(row)
        # Files are named by epoch and state.json, written last, names the ones to use: a kill
        # at any moment leaves a state whose files match it exactly.
        stale = {state.get("last"), state.get("best")}
        score = row[policy.monitor]
        if _improved(policy.monitor, score, state["best_score"]):
            state.update(best_score=score, best_epoch=epoch + 1, wait=0, plateau_wait=0,
                         best=f"best-{epoch + 1}.weights.h5")
            with atomic_path(self.checkpoint_dir / state["best"]) as tmp:
                self.model.save_weights(tmp)
        else:
            state["wait"] += 1
            state["plateau_wait"] += 1
        state["stopped"] = state["wait"] > policy.patience
        if (policy.lr_schedule == "plateau" and state["plateau_wait"] >= PLATEAU_PATIENCE
                and not state["stopped"]):
            state["learning_rate"] = max(MIN_LEARNING_RATE,
                                         state["learning_rate"] * PLATEAU_FACTOR)
            state["plateau_wait"] = 0
        self.model.optimizer.learning_rate.assign(state["learning_rate"])
        self.model.stop_training = state["stopped"]
        state["last"] = f"epoch-{epoch + 1}.keras"
        with atomic_path(self.checkpoint_dir / state["last"]) as tmp:
            self.model.save(tmp)
        # A resumed run must continue the same random stream to end where an uninterrupted run
        # would, and Keras does not save it.
        state["seed_states"] = [np.asarray(v).tolist() for v in seed_variables(self.model)]
        write_json(self.checkpoint_dir / "state.json", state)
        for name in stale - {state["last"], state["best"], None}:
            (self.checkpoint_dir / name).unlink(missing_ok=True)
        self.on_epoch(row)


class LogProgress:
    """A progress line every `PROGRESS_EVERY_S` while counting (for a log, not a terminal)."""

    def __init__(self, what: str, total: int,
                 write: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
        self.what, self.total, self.write = what, total, write
        self.done = 0
        self.started = self.last_line = time.monotonic()

    def __call__(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if now - self.last_line >= PROGRESS_EVERY_S:
            self.last_line = now
            rate = self.done / max(now - self.started, 1e-9)
            self.write(f"{self.what}: {self.done:,} of {self.total:,} documents "
                       f"({self.done / max(self.total, 1):.0%}), {rate:,.0f} documents/s, "
                       f"~{(self.total - self.done) / max(rate, 1e-9):.0f} s left")


class ProgressLines(keras.callbacks.Callback):
    """Progress for a log file (output not a terminal): a line every `PROGRESS_EVERY_S` within
    an epoch, and one per epoch. On a terminal Keras' own progress bar does this."""

    def __init__(self, steps_per_epoch: int, batch_size: int, max_epochs: int,
                 write: Callable[[str], None] = lambda s: print(s, flush=True)) -> None:
        super().__init__()
        self.steps, self.batch_size, self.max_epochs = steps_per_epoch, batch_size, max_epochs
        self.write = write
        self.epoch = 0
        self.epoch_start = self.last_line = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = epoch + 1
        self.epoch_start = self.last_line = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        now = time.monotonic()
        if now - self.last_line < PROGRESS_EVERY_S:
            return
        self.last_line = now
        done = batch + 1
        rate = done * self.batch_size / max(now - self.epoch_start, 1e-9)
        left = (self.steps - done) * self.batch_size / max(rate, 1e-9)
        loss = (logs or {}).get("loss", math.nan)
        self.write(f"train: epoch {self.epoch}/{self.max_epochs}, batch {done}/{self.steps} "
                   f"({done / self.steps:.0%}), loss {float(loss):.4f}, {rate:.0f} examples/s, "
                   f"~{left:.0f} s left in this epoch")

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        logs = logs or {}
        seconds = time.monotonic() - self.epoch_start
        self.write(f"train: epoch {epoch + 1}/{self.max_epochs} in {seconds:.0f} s: loss "
                   f"{logs.get('loss', math.nan):.4f}, accuracy "
                   f"{logs.get('accuracy', math.nan):.4f}; validation loss "
                   f"{logs.get('val_loss', math.nan):.4f}, accuracy "
                   f"{logs.get('val_accuracy', math.nan):.4f}, macro-F1 "
                   f"{logs.get('val_macro_f1', math.nan):.4f}")


def fit_callbacks(policy: FitPolicy, state: dict, checkpoint_dir: Path,
                  validation: tuple[Inputs | np.ndarray, np.ndarray], num_classes: int,
                  steps_per_epoch: int, batch_size: int,
                  on_epoch: Callable[[dict], None]) -> tuple[list[Any], int]:
    """The callbacks of a fit and the `verbose` level for `model.fit`: Keras' progress bar on a
    terminal, `ProgressLines` otherwise (EpochEnd first: it adds the validation scores both
    show)."""
    callbacks: list[Any] = [EpochEnd(policy, state, checkpoint_dir, validation, num_classes,
                                     on_epoch)]
    if sys.stdout.isatty():
        return callbacks, 1
    return [*callbacks, ProgressLines(steps_per_epoch, batch_size, policy.max_epochs)], 0
