"""Training: the model's shape, masking, outputs, and resuming from a checkpoint."""

import dataclasses
import json

import numpy as np
import pytest

from rnnpipe.config import IngestParams, TrainParams, VocabParams
from rnnpipe.ingest import ingest
from rnnpipe.train import build_model, read_json, train
from rnnpipe.vocab import vocabulary
from tests.conftest import TINY_TRAIN

TINY = TrainParams(**TINY_TRAIN)


@pytest.fixture
def prepared(tmp_path, zh_tsv):
    """A tiny corpus taken through ingest and vocab; returns the data dir."""
    data = tmp_path / "data"
    ingest(IngestParams(source=str(zh_tsv)), data, tmp_path / "ingest.json")
    vocabulary(VocabParams(min_count=1, workers=1), data, tmp_path / "vocab.json")
    return data


def run_train(tmp_path, data, params=TINY, **kwargs):
    return train(params, tokens_dir=data / "tokens", vocab_path=data / "vocab.json",
                 model_path=tmp_path / "models" / "model.keras",
                 history_path=tmp_path / "reports" / "history.csv",
                 summary_path=tmp_path / "reports" / "train.json",
                 checkpoint_dir=tmp_path / "checkpoint", **kwargs)


@pytest.mark.parametrize("units", [[8], [8, 6]])
def test_stacked_lstm_layers_are_real(units):
    import keras

    model = build_model(50, 3, dataclasses.replace(TINY, lstm_units=units))
    recurrent = [layer for layer in model.layers if isinstance(layer, keras.layers.LSTM)]
    assert [layer.units for layer in recurrent] == units
    assert model.output_shape == (None, 3)


@pytest.mark.parametrize(("cell", "pooling"),
                         [("keras", "last"), ("manual", "last"), ("keras", "max"),
                          ("manual", "max"), ("keras", "mean")])
def test_padding_does_not_change_the_answer(cell, pooling):
    import keras

    params = dataclasses.replace(TINY, cell=cell, pooling=pooling, lstm_units=[8, 8])
    short = build_model(40, 2, dataclasses.replace(params, max_len=6))
    long = build_model(40, 2, dataclasses.replace(params, max_len=15))
    long.set_weights(short.get_weights())
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 40, size=(4, 6)).astype("int32")
    ids[1, 3:] = 0  # a shorter document
    padded = np.concatenate([ids, np.zeros((4, 9), dtype="int32")], axis=1)
    np.testing.assert_allclose(short.predict(ids, verbose=0), long.predict(padded, verbose=0),
                               atol=1e-6)
    assert isinstance(short, keras.Model)


def test_train_writes_model_history_and_summary(tmp_path, prepared):
    epochs_seen = []
    summary = run_train(tmp_path, prepared, on_epoch=epochs_seen.append)
    assert (tmp_path / "models" / "model.keras").exists()
    history = (tmp_path / "reports" / "history.csv").read_text().splitlines()
    assert history[0] == "epoch,loss,accuracy,val_loss,val_accuracy"
    assert len(history) == 1 + summary["epochs_run"] == 1 + len(epochs_seen)
    assert 1 <= summary["best_epoch"] <= TINY.epochs
    assert read_json(tmp_path / "reports" / "train.json")["train_examples"] == 64
    assert not (tmp_path / "checkpoint").exists()  # removed once the model is written


def test_training_is_repeatable(tmp_path, prepared):
    run_train(tmp_path, prepared)
    first = (tmp_path / "reports" / "history.csv").read_bytes()
    run_train(tmp_path, prepared)
    assert (tmp_path / "reports" / "history.csv").read_bytes() == first


def test_resume_continues_from_the_checkpoint(tmp_path, prepared):
    params = dataclasses.replace(TINY, epochs=3, patience=5)
    run_train(tmp_path, prepared, params)
    uninterrupted = (tmp_path / "reports" / "history.csv").read_text()

    class Killed(Exception):
        pass

    def die_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run_train(tmp_path, prepared, params, on_epoch=die_after_two)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert len(state["history"]) == 2
    resumed_epochs = []
    run_train(tmp_path, prepared, params, on_epoch=resumed_epochs.append)
    assert [row["epoch"] for row in resumed_epochs] == [3]
    assert (tmp_path / "reports" / "history.csv").read_text() == uninterrupted
