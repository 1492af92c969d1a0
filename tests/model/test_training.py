"""How the network is fitted, without fitting one: class weights, seeded batches, and the
after-every-epoch logic (early stopping on each monitor, the plateau schedule, checkpoints),
driven with scripted validation scores; progress lines on a fake clock."""

from __future__ import annotations

import numpy as np
import pytest

from rnnpipe.config import TrainParams
from rnnpipe.io import read_json
from rnnpipe.model import training
from rnnpipe.model.ragged import RaggedIds, RaggedInputs
from rnnpipe.model.text import encode
from rnnpipe.model.training import (
    MIN_LEARNING_RATE,
    PROGRESS_EVERY_S,
    EpochEnd,
    FitPolicy,
    LogProgress,
    ProgressLines,
    class_weights,
    fit_callbacks,
    new_state,
    resume_state,
    training_batches,
)
from rnnpipe.steps.train import still_improving


def test_balanced_class_weights():
    y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2])  # 6, 2, 1 of 4 classes (class 3 absent)
    weights = class_weights(y, 4)
    np.testing.assert_allclose(weights, [9 / (4 * 6), 9 / (4 * 2), 9 / (4 * 1), 0.0])
    # Every present class weighs the same in all: n / k.
    for c in range(3):
        assert weights[c] * np.sum(y == c) == pytest.approx(9 / 4)
    np.testing.assert_allclose(class_weights(np.array([0, 1, 0, 1]), 2), [1.0, 1.0])


def _epochs(dataset) -> list[list[tuple]]:
    return [tuple(np.asarray(t).tolist() for t in batch) for batch in dataset]


def test_batches_are_seeded_per_epoch_so_a_resumed_run_sees_the_same():
    x = np.arange(20).reshape(10, 2)
    y = np.arange(10) % 3
    whole = _epochs(training_batches(x, y, 4, seed=7, first_epoch=0, epochs=3))
    assert len(whole) == 9  # 3 batches (4 + 4 + 2) per epoch
    assert _epochs(training_batches(x, y, 4, seed=7, first_epoch=1, epochs=3)) == whole[3:]
    assert _epochs(training_batches(x, y, 4, seed=7, first_epoch=0, epochs=3)) == whole
    assert _epochs(training_batches(x, y, 4, seed=8, first_epoch=0, epochs=3)) != whole
    first, second = whole[:3], whole[3:6]
    assert first != second  # each epoch is shuffled anew
    assert sorted(v for batch in first for v in batch[1]) == sorted(y.tolist())
    weighted = _epochs(training_batches(x, y, 4, 7, 0, 1, class_weights(y, 3)))
    assert len(weighted[0]) == 3
    for _, labels, weights in weighted:
        np.testing.assert_allclose(weights, class_weights(y, 3)[labels], rtol=1e-6)


class FakeVariable:
    def __init__(self, value: float) -> None:
        self.value = value

    def assign(self, value: float) -> None:
        self.value = float(value)


class FakeOptimizer:
    def __init__(self) -> None:
        self.learning_rate = FakeVariable(0.0)


class FakeModel:
    """What EpochEnd uses of a Keras model."""

    def __init__(self, probs: np.ndarray | None = None) -> None:
        self.optimizer = FakeOptimizer()
        self.stop_training = False
        self.variables: list = []
        self.probs = probs

    @property
    def output_shape(self) -> tuple:
        return (None, self.probs.shape[1])

    def predict_on_batch(self, x):
        return self.probs[x[:, 0] - 1]  # the fake validation ids are each row's number + 1

    def save_weights(self, path) -> None:
        path.write_bytes(b"weights")

    def save(self, path) -> None:
        path.write_bytes(b"model")


def fit(tmp_path, scores: list[dict], monitor="val_loss", patience=1, schedule="plateau",
        learning_rate=0.01, max_epochs=None):
    """Drive EpochEnd through `scores` (one dict per epoch) as `model.fit` would: stop when it
    says so. Returns the callback, its state, the rows it reported and the fake model."""
    max_epochs = max_epochs or len(scores)
    policy = FitPolicy(max_epochs, patience, monitor, schedule)
    state = new_state("key", learning_rate)
    rows: list[dict] = []
    callback = EpochEnd(policy, state, tmp_path, (np.zeros((2, 3)), np.array([0, 1])), 2,
                        rows.append)
    model = FakeModel()
    callback.set_model(model)
    script = iter(scores)
    callback.validation_scores = lambda: next(script)
    for epoch in range(len(scores)):  # fewer than max_epochs: a run killed after them
        callback.on_epoch_end(epoch, {"loss": 1.0 / (epoch + 1), "accuracy": 0.5})
        if model.stop_training:
            break
    return callback, state, rows, model


def scored(monitor: str, values: list[float]) -> list[dict]:
    """Validation scores where only `monitor` moves; the others get worse every epoch."""
    rows = []
    for i, value in enumerate(values):
        row = {"val_loss": 1.0 + i, "val_accuracy": 0.9 - 0.1 * i, "val_macro_f1": 0.9 - 0.1 * i}
        row[monitor] = value
        rows.append(row)
    return rows


@pytest.mark.parametrize(("monitor", "values"), [
    ("val_loss", [0.9, 0.7, 0.8, 0.75, 0.5]),
    ("val_accuracy", [0.5, 0.7, 0.6, 0.65, 0.9]),
    ("val_macro_f1", [0.4, 0.6, 0.6, 0.55, 0.9]),
])
def test_early_stopping_on_each_monitor(tmp_path, monitor, values):
    """Best at epoch 2; epochs 3 and 4 are not better (a tie is not better): with patience 1,
    training stops after epoch 4, and epoch 5 (which would have been better) never runs."""
    _, state, rows, model = fit(tmp_path, scored(monitor, values), monitor=monitor, patience=1)
    assert [row["epoch"] for row in rows] == [1, 2, 3, 4]
    assert state["stopped"] and model.stop_training
    assert (state["best_epoch"], state["best_score"]) == (2, values[1])
    assert state["best"] == "best-2.weights.h5" and state["last"] == "epoch-4.keras"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "best-2.weights.h5", "epoch-4.keras", "state.json"]  # older checkpoints removed
    saved = read_json(tmp_path / "state.json")
    assert saved["history"] == rows and saved["stopped"] is True
    assert still_improving(state, TrainParams(monitor=monitor, max_epochs=5)) is None


def test_patience_zero_stops_at_the_first_worse_epoch(tmp_path):
    _, state, rows, _ = fit(tmp_path, scored("val_loss", [0.5, 0.6, 0.4]), patience=0)
    assert len(rows) == 2 and state["stopped"] and state["best_epoch"] == 1


def test_plateau_halves_the_learning_rate(tmp_path):
    values = [0.9, 0.8, 0.85, 0.7, 0.75, 0.76, 0.6]
    _, state, rows, model = fit(tmp_path, scored("val_loss", values), patience=5)
    # The rate an epoch ran with: halved after each epoch that was not better.
    assert [row["learning_rate"] for row in rows] == [0.01, 0.01, 0.01, 0.005, 0.005, 0.0025,
                                                      0.00125]
    assert state["learning_rate"] == model.optimizer.learning_rate.value == 0.00125
    assert not state["stopped"]


def test_the_rate_never_falls_below_the_minimum(tmp_path):
    _, state, _, _ = fit(tmp_path, scored("val_loss", [0.5] + [0.6] * 5), patience=10,
                         learning_rate=4e-5)
    assert state["learning_rate"] == MIN_LEARNING_RATE


def test_the_rate_is_not_halved_on_the_epoch_that_stops(tmp_path):
    _, state, rows, _ = fit(tmp_path, scored("val_loss", [0.5, 0.6]), patience=0)
    assert state["stopped"] and state["learning_rate"] == 0.01


def test_constant_schedule_keeps_the_rate(tmp_path):
    _, state, rows, model = fit(tmp_path, scored("val_loss", [0.9, 1.0, 1.1, 0.5]),
                                schedule="constant", patience=5)
    assert {row["learning_rate"] for row in rows} == {0.01}
    assert model.optimizer.learning_rate.value == 0.01


def test_still_improving_when_training_runs_out_of_epochs(tmp_path):
    _, state, rows, _ = fit(tmp_path, scored("val_accuracy", [0.5, 0.6, 0.7, 0.8]),
                            monitor="val_accuracy", patience=1)
    assert not state["stopped"] and state["best_epoch"] == 4
    message = still_improving(state, TrainParams(monitor="val_accuracy", max_epochs=4))
    assert message == ("val_accuracy was still improving when training reached "
                       "train.max_epochs=4 (0.6000 → 0.7000 → 0.8000 over the last 3 epochs); "
                       "raise train.max_epochs (or train.learning_rate) to train longer")
    # Out of epochs, but the best epoch was earlier: more epochs would not obviously help.
    _, state, _, _ = fit(tmp_path / "b", scored("val_loss", [0.5, 0.4, 0.45]), patience=3)
    assert not state["stopped"]
    assert still_improving(state, TrainParams(max_epochs=3)) is None
    assert still_improving(new_state("k", 0.1), TrainParams()) is None


def test_validation_scores(tmp_path):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]], dtype="float32")
    x_val = np.array([[1, 0], [2, 0], [3, 0], [4, 0]])
    callback = EpochEnd(FitPolicy(1, 0, eval_batch_size=3), new_state("k", 0.1), tmp_path,
                        (x_val, np.array([0, 1, 1, 0])), 2, lambda row: None)
    callback.set_model(FakeModel(probs))
    result = callback.validation_scores()
    picked = np.clip([0.9, 0.8, 0.4, 0.0], 1e-7, 1)
    assert result["val_loss"] == pytest.approx(-np.mean(np.log(picked)), rel=1e-6)
    assert result["val_accuracy"] == 0.5
    assert result["val_macro_f1"] == pytest.approx(0.5)


def test_resume_state(tmp_path):
    assert resume_state(tmp_path, "key") is None
    fit(tmp_path, scored("val_loss", [0.5, 0.4]), max_epochs=3)
    state = resume_state(tmp_path, "key")
    assert state is not None and len(state["history"]) == 2
    assert resume_state(tmp_path, "other params or data") is None
    (tmp_path / state["best"]).unlink()
    assert resume_state(tmp_path, "key") is None


class Clock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def test_progress_lines_within_an_epoch(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(training.time, "monotonic", clock)
    lines: list[str] = []
    progress = ProgressLines(steps_per_epoch=10, batch_size=32, max_epochs=3, write=lines.append)
    progress.on_epoch_begin(0)
    for batch in range(4):
        clock.now += 4  # 16 s: not yet
        progress.on_train_batch_end(batch, {"loss": 0.9})
    assert lines == []
    clock.now += PROGRESS_EVERY_S - 16  # 20 s since the epoch began
    progress.on_train_batch_end(4, {"loss": 0.8})
    assert lines == ["train: epoch 1/3, batch 5/10 (50%), loss 0.8000, 8 examples/s, "
                     "~20 s left in this epoch"]
    clock.now += PROGRESS_EVERY_S - 1
    progress.on_train_batch_end(5, {"loss": 0.7})
    assert len(lines) == 1
    clock.now += 1
    progress.on_train_batch_end(6, {"loss": 0.7})
    assert len(lines) == 2 and lines[1].startswith("train: epoch 1/3, batch 7/10 (70%)")
    clock.now += 10
    progress.on_epoch_end(0, {"loss": 0.5, "accuracy": 0.75, "val_loss": 0.6,
                              "val_accuracy": 0.7, "val_macro_f1": 0.65})
    assert lines[2] == ("train: epoch 1/3 in 50 s: loss 0.5000, accuracy 0.7500; validation loss "
                        "0.6000, accuracy 0.7000, macro-F1 0.6500")
    progress.on_epoch_begin(1)
    clock.now += 5
    progress.on_train_batch_end(0, {})
    assert len(lines) == 3  # a new epoch starts its own 30 s


def test_fit_callbacks_print_lines_when_not_on_a_terminal(tmp_path, monkeypatch):
    class Stdout:
        def __init__(self, tty: bool) -> None:
            self.tty = tty

        def isatty(self) -> bool:
            return self.tty

    args = (FitPolicy(3, 1), new_state("k", 0.1), tmp_path, (np.zeros((2, 3)), np.zeros(2)), 2,
            5, 16, lambda row: None)
    monkeypatch.setattr(training.sys, "stdout", Stdout(False))
    callbacks, verbose = fit_callbacks(*args)
    assert [type(c) for c in callbacks] == [EpochEnd, ProgressLines] and verbose == 0
    monkeypatch.setattr(training.sys, "stdout", Stdout(True))
    callbacks, verbose = fit_callbacks(*args)
    assert [type(c) for c in callbacks] == [EpochEnd] and verbose == 1


def test_batches_from_ragged_ids_equal_batches_from_a_padded_matrix():
    """The train step feeds ragged ids cut at max_len; the batches, epoch by epoch, are those of
    the padded matrix `encode` would make (so the model, and its metrics, are the same)."""
    rng = np.random.default_rng(0)
    rows = [rng.integers(2, 30, size=rng.integers(0, 25)).tolist() for _ in range(70)]
    y = rng.integers(0, 3, size=70).astype(np.int32)
    tokens = [[f"t{i}" for i in row] for row in rows]
    padded = encode(tokens, {f"t{i}": i for i in range(30)}, 12, "head+tail")
    ragged = RaggedInputs(RaggedIds.from_rows(rows, y), 12, "head+tail")
    weights = class_weights(y, 3)
    assert _epochs(training_batches(ragged, y, 8, 3, 0, 2, weights)) == \
        _epochs(training_batches(padded, y, 8, 3, 0, 2, weights))


def test_validation_from_ragged_ids(tmp_path):
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.0, 1.0]], dtype="float32")
    ragged = RaggedInputs(RaggedIds.from_rows([[1], [2, 5], [3], [4, 7, 7]], [0, 1, 1, 0]), 8)
    callback = EpochEnd(FitPolicy(1, 0, eval_batch_size=3), new_state("k", 0.1), tmp_path,
                        (ragged, np.array([0, 1, 1, 0])), 2, lambda row: None)
    callback.set_model(FakeModel(probs))
    result = callback.validation_scores()
    assert result["val_accuracy"] == 0.5 and result["val_macro_f1"] == pytest.approx(0.5)


def test_validation_progress_lines(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(training.time, "monotonic", clock)
    lines: list[str] = []
    progress = LogProgress("train: validation", 1000, write=lines.append)
    for _ in range(10):
        clock.now += 5
        progress(100)
    assert lines == ["train: validation: 400 of 1,000 documents (40%), 20 documents/s, "
                     "~30 s left", "train: validation: 800 of 1,000 documents (80%), "
                     "20 documents/s, ~10 s left"]
