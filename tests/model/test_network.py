"""The classifier network: its shape, masking (padding never changes the answer, for every cell
and pooling), pretrained embeddings (set, and frozen on request), and saving with bytes that
depend only on the model."""

from __future__ import annotations

import dataclasses
import json
import time
import zipfile

import numpy as np
import pytest

from rnnpipe.errors import DataError
from rnnpipe.model.backend import keras
from rnnpipe.model.lstm import ManualLSTM
from rnnpipe.model.network import (
    LENGTH_STEP,
    NetworkConfig,
    bucketed_batches,
    build_model,
    cut,
    lengths_of,
    load_model,
    predict_proba,
    save_model,
)

TINY = NetworkConfig(vocab_size=40, num_classes=2, max_len=6, embedding_dim=8, lstm_units=[8],
                     fc_units=8, dropout=0.5, embedding_dropout=0.4)


@pytest.mark.parametrize(("cell", "units"), [("keras", [8]), ("keras", [8, 6]),
                                             ("manual", [5, 4, 3])])
def test_stacked_lstm_layers_are_real(cell, units):
    model = build_model(dataclasses.replace(TINY, num_classes=3, lstm_units=units, cell=cell))
    cls = keras.layers.LSTM if cell == "keras" else ManualLSTM
    recurrent = [layer for layer in model.layers if isinstance(layer, cls)]
    assert [layer.units for layer in recurrent] == units
    assert model.input_shape == (None, None)  # any length: batches are cut to their longest
    assert model.output_shape == (None, 3)
    assert model.get_layer("embedding").output_dim == TINY.embedding_dim
    assert model.get_layer("fc").units == TINY.fc_units


def test_poolings_and_dropouts_are_where_the_config_says():
    names = {layer.name for layer in build_model(TINY).layers}
    assert {"embedding_dropout", "max_pool", "dropout", "probabilities"} <= names
    names = {layer.name for layer in build_model(dataclasses.replace(
        TINY, pooling="mean", embedding_dropout=0.0)).layers}
    assert "mean_pool" in names and "embedding_dropout" not in names
    last = build_model(dataclasses.replace(TINY, pooling="last"))
    assert not any(name.endswith("pool") for name in (layer.name for layer in last.layers))


@pytest.mark.parametrize(("cell", "pooling"),
                         [("keras", "last"), ("manual", "last"), ("keras", "max"),
                          ("manual", "max"), ("keras", "mean"), ("manual", "mean")])
def test_padding_does_not_change_the_answer(cell, pooling):
    model = build_model(dataclasses.replace(TINY, cell=cell, pooling=pooling, lstm_units=[6, 4]))
    rng = np.random.default_rng(0)
    ids = rng.integers(2, 40, size=(4, 6)).astype("int32")
    ids[1, 3:] = 0  # a shorter document
    ids[2, 1:] = 0  # a one-token one
    padded = np.concatenate([ids, np.zeros((4, 4), dtype="int32")], axis=1)
    # Called eagerly (predict would trace a graph per shape: seconds each, the same answer).
    expected = np.asarray(model(ids, training=False))
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(np.asarray(model(padded, training=False)), expected, atol=1e-6)
    # Each row alone, cut to its own length, gives its row of the batch.
    for row, length in enumerate([6, 3, 1, 6]):
        alone = np.asarray(model(ids[row:row + 1, :length], training=False))
        np.testing.assert_allclose(alone[0], expected[row], atol=1e-6)


@pytest.mark.parametrize("pooling", ["last", "max", "mean"])
def test_an_empty_document_gets_finite_probabilities(pooling):
    """A text without any token (only punctuation for the word tokenizer, say) is all <PAD>."""
    model = build_model(dataclasses.replace(TINY, pooling=pooling))
    ids = np.array([[3, 4, 5, 0], [0, 0, 0, 0]], dtype="int32")
    probs = np.asarray(model(ids, training=False))
    assert np.isfinite(probs).all(), probs


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_an_empty_document_does_not_poison_training(pooling):
    """Keras' own average pooling gave 0/0 for it, and every weight became NaN."""
    model = build_model(dataclasses.replace(TINY, pooling=pooling))
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(5).integers(2, 40, size=(8, 6)).astype("int32")
    x[3] = 0
    model.fit(x, np.arange(8) % 2, epochs=1, batch_size=8, verbose=0)
    assert all(np.isfinite(w).all() for w in model.get_weights())


def test_lengths_and_cuts():
    x = np.array([[5, 6, 7, 0, 0, 0, 0, 0, 0, 0],
                  [5, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                  [0, 0, 0, 0, 0, 0, 0, 0, 0, 0],  # empty: length 1 (a step for the mask)
                  [5, 6, 7, 8, 9, 5, 6, 7, 8, 9]], dtype="int32")
    lengths = lengths_of(x)
    assert lengths.tolist() == [3, 1, 1, 10]
    assert cut(x, np.array([0, 1]), lengths).shape == (2, LENGTH_STEP)  # rounded up to a step
    assert cut(x, np.array([3, 0]), lengths).shape == (2, 10)  # never wider than x
    np.testing.assert_array_equal(cut(x, np.array([1, 0]), lengths), x[[1, 0], :LENGTH_STEP])


def test_bucketed_batches():
    lengths = np.array([9, 1, 5, 3, 7, 2, 8, 4, 6, 10])
    inference = bucketed_batches(lengths, 4)
    assert [b.tolist() for b in inference] == [[1, 5, 3, 7], [2, 8, 4, 6], [0, 9]]
    rng = np.random.default_rng(3)
    training = bucketed_batches(lengths, 4, rng, pool=1)
    assert sorted(np.concatenate(training).tolist()) == list(range(10))
    assert all(1 <= len(b) <= 4 for b in training)
    for batch in training:  # sorted by length within its pool (here: within itself)
        assert lengths[batch].tolist() == sorted(lengths[batch].tolist())
    again = bucketed_batches(lengths, 4, np.random.default_rng(3), pool=1)
    assert [b.tolist() for b in again] == [b.tolist() for b in training]


def test_predict_proba_in_buckets_equals_one_padded_batch():
    model = build_model(dataclasses.replace(TINY, pooling="mean"))
    rng = np.random.default_rng(4)
    x = np.zeros((7, 20), dtype="int32")
    for row, length in enumerate([20, 3, 2, 9, 1, 17, 5]):
        x[row, :length] = rng.integers(2, 40, size=length)
    expected = np.asarray(model(x, training=False))
    np.testing.assert_allclose(predict_proba(model, x, batch_size=3), expected, atol=1e-6)
    assert predict_proba(model, x[:0]).shape == (0, 2)


def test_a_pretrained_matrix_is_set_and_frozen_when_not_trainable():
    config = dataclasses.replace(TINY, embedding_dropout=0.0, dropout=0.0)
    matrix = np.random.default_rng(1).normal(size=(40, 8)).astype("float32")
    matrix[0] = 0
    frozen = build_model(config, matrix, embeddings_trainable=False)
    embedding = frozen.get_layer("embedding")
    np.testing.assert_array_equal(embedding.get_weights()[0], matrix)
    assert not embedding.trainable
    assert not any(w is embedding.embeddings for w in frozen.trainable_weights)
    # The matrix is not written into the model's config (it would bloat config.json).
    assert len(json.dumps(embedding.get_config())) < 1000
    frozen.compile(optimizer=keras.optimizers.Adam(0.1), loss="sparse_categorical_crossentropy")
    x = np.random.default_rng(2).integers(1, 40, size=(16, 6)).astype("int32")
    y = np.arange(16) % 2
    before_fc = frozen.get_layer("fc").get_weights()[0].copy()
    frozen.fit(x, y, epochs=1, batch_size=8, verbose=0)
    np.testing.assert_array_equal(embedding.get_weights()[0], matrix)
    assert not np.array_equal(frozen.get_layer("fc").get_weights()[0], before_fc)

    tuned = build_model(config, matrix, embeddings_trainable=True)
    assert tuned.get_layer("embedding").trainable
    np.testing.assert_array_equal(tuned.get_layer("embedding").get_weights()[0], matrix)


def test_identical_weights_save_to_identical_bytes(tmp_path):
    """Same weights and config, same bytes (and DVC hash), whenever and wherever it is saved."""
    keras.backend.clear_session()  # layer names count up per process: start where one would
    first = build_model(TINY)
    save_model(first, tmp_path / "a.keras")
    time.sleep(1.1)  # Keras stamps the save time in seconds
    save_model(first, tmp_path / "b.keras")
    keras.backend.clear_session()
    second = build_model(TINY)  # another object: other memory addresses
    second.set_weights(first.get_weights())
    save_model(second, tmp_path / "c.keras")
    data = [(tmp_path / f"{n}.keras").read_bytes() for n in "abc"]
    assert data[0] == data[1] == data[2]
    with zipfile.ZipFile(tmp_path / "a.keras") as archive:
        assert {i.date_time for i in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert "date_saved" not in json.loads(archive.read("metadata.json"))
    third = build_model(TINY)  # other weights: other bytes
    save_model(third, tmp_path / "d.keras")
    assert (tmp_path / "d.keras").read_bytes() != data[0]


def test_saved_models_load_in_safe_mode_and_predict_the_same(tmp_path):
    model = build_model(dataclasses.replace(TINY, cell="manual", pooling="max"))
    save_model(model, tmp_path / "model.keras")
    loaded = load_model(tmp_path / "model.keras")
    x = np.array([[3, 4, 5, 0, 0, 0], [0] * 6], dtype="int32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


def test_a_missing_model_says_how_to_make_one(tmp_path):
    with pytest.raises(DataError, match=r"model\.keras: no trained model; run the pipeline"):
        load_model(tmp_path / "model.keras")
