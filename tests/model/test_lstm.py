"""The tutorial's hand-written LSTM (`rnnpipe.model.lstm`) is exactly `keras.layers.LSTM`.

Weights are copied between the two layers (both directions); outputs and the gradients w.r.t.
inputs and every weight must then agree to float32 tolerance, for random inputs, several sizes,
with and without masks (including a fully padded row), one and two stacked layers, unrolled and
symbolic loops. Shapes are tiny so the file runs in seconds.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import tensorflow as tf

from rnnpipe.model.backend import keras, ops
from rnnpipe.model.lstm import (
    GATES,
    KERAS_GATES,
    UNROLL_MAX_STEPS,
    ManualLSTM,
    MaskedGlobalAveragePooling1D,
    MaskedGlobalMaxPooling1D,
    build_lstm_stack,
    copy_lstm_weights,
)

ATOL = 2e-5  # float32: outputs and gradients are O(1); observed differences are ~1e-7


def to_keras_order(fused: np.ndarray) -> np.ndarray:
    """Reorder the last axis of a fused [., 4H] ManualLSTM array into keras' i, f, c, o."""
    blocks = np.split(fused, 4, axis=-1)
    return np.concatenate([blocks[GATES.index(name)] for name in KERAS_GATES], axis=-1)


def make_mask(batch: int, steps: int, kind: str, rng: np.random.Generator) -> np.ndarray | None:
    """None, right padding (random lengths, one row fully padded) or arbitrary holes."""
    if kind == "none":
        return None
    if kind == "right":
        lengths = rng.integers(1, steps + 1, size=batch)
        lengths[0] = 0  # a fully padded row
        lengths[-1] = steps  # and a full one
        return np.arange(steps)[None, :] < lengths[:, None]
    mask = rng.random((batch, steps)) < 0.6
    mask[0] = False
    mask[1, 0] = False  # a row that starts with padding
    return mask


def run_pair(units, batch, steps, features, mask_kind, unroll, direction, seed=0):
    """Build a keras stack and a manual stack with equal weights; return both runs' results."""
    rng = np.random.default_rng(seed)
    x = tf.constant(rng.normal(size=(batch, steps, features)).astype("float32"))
    mask_np = make_mask(batch, steps, mask_kind, rng)
    mask = None if mask_np is None else tf.constant(mask_np)
    keras.utils.set_random_seed(seed)
    stacks = {
        cell: build_lstm_stack(units, cell, unroll=unroll) for cell in ("keras", "manual")
    }
    for layers in stacks.values():
        dim = features
        for layer in layers:
            layer.build((None, steps, dim))
            dim = layer.units
    src, dst = ("keras", "manual") if direction == "keras->manual" else ("manual", "keras")
    for a, b in zip(stacks[src], stacks[dst], strict=True):
        copy_lstm_weights(a, b)
    out_weights = rng.normal(size=(batch, units[-1])).astype("float32")

    results = {}
    for cell, layers in stacks.items():
        with tf.GradientTape() as tape:
            tape.watch(x)
            h, m = x, mask
            for layer in layers:
                h = layer(h, mask=m, training=True)
                m = layer.compute_mask(h, m)
            loss = tf.reduce_sum(h * out_weights)
        weights = [w for layer in layers for w in layer.trainable_weights]
        grads = tape.gradient(loss, [x, *weights])
        grads = [g.numpy() for g in grads]
        if cell == "manual":
            grads = [grads[0]] + [to_keras_order(g) for g in grads[1:]]
        results[cell] = (h.numpy(), grads)
    return results, mask_np


def assert_same(results):
    (out_k, grads_k), (out_m, grads_m) = results["keras"], results["manual"]
    assert not np.isnan(out_m).any()
    np.testing.assert_allclose(out_m, out_k, atol=ATOL, rtol=0)
    assert len(grads_k) == len(grads_m)
    for g_k, g_m in zip(grads_k, grads_m, strict=True):
        assert g_k.shape == g_m.shape
        assert not np.isnan(g_m).any()
        np.testing.assert_allclose(g_m, g_k, atol=ATOL, rtol=0)


@pytest.mark.parametrize("unroll", [True, False], ids=["unrolled", "symbolic"])
@pytest.mark.parametrize("mask_kind", ["none", "right", "holes"])
@pytest.mark.parametrize(
    ("units", "batch", "steps", "features", "direction"),
    [
        ([3], 4, 6, 5, "keras->manual"),
        ([8], 3, 5, 2, "manual->keras"),
        ([4, 6], 5, 4, 3, "keras->manual"),
        ([6, 3], 2, 7, 4, "manual->keras"),
    ],
    ids=["1layer-a", "1layer-b", "2layers-a", "2layers-b"],
)
def test_matches_keras_lstm(units, batch, steps, features, direction, mask_kind, unroll):
    results, _ = run_pair(units, batch, steps, features, mask_kind, unroll, direction)
    assert_same(results)


@pytest.mark.parametrize("unroll", [True, False])
def test_fully_padded_row_gives_zeros_and_last_real_token_state(unroll):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6, 4)).astype("float32")
    mask = np.array([[False] * 6, [True] * 4 + [False] * 2, [True] * 6])
    layer = ManualLSTM(5, unroll=unroll)
    out = layer(tf.constant(x), mask=tf.constant(mask)).numpy()
    assert not np.isnan(out).any()
    np.testing.assert_array_equal(out[0], 0.0)
    # A right-padded row ends in the state after its last real token.
    truncated = layer(tf.constant(x[1:2, :4])).numpy()
    np.testing.assert_allclose(out[1], truncated[0], atol=1e-6)


def test_fully_padded_batch_has_finite_gradients():
    x = tf.constant(np.ones((2, 4, 3), "float32"))
    layer = ManualLSTM(3, return_sequences=True)
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = tf.reduce_sum(layer(x, mask=tf.zeros((2, 4), bool)))
    grads = tape.gradient(loss, [x, *layer.trainable_weights])
    assert all(np.isfinite(g.numpy()).all() for g in grads)
    np.testing.assert_array_equal(grads[0].numpy(), 0.0)


@pytest.mark.parametrize("masked", [False, True])
def test_unknown_sequence_length_uses_the_symbolic_loop(masked):
    rng = np.random.default_rng(4)
    inputs = keras.Input((None, 3))
    mask = keras.Input((None,), dtype="bool")
    keras_layer, manual_layer = keras.layers.LSTM(4), ManualLSTM(4)
    kwargs = {"mask": mask} if masked else {}
    keras_model = keras.Model([inputs, mask], keras_layer(inputs, **kwargs))
    manual_model = keras.Model([inputs, mask], manual_layer(inputs, **kwargs))
    copy_lstm_weights(keras_layer, manual_layer)
    x = tf.constant(rng.normal(size=(3, 5, 3)).astype("float32"))
    m = tf.constant([[True] * 5, [True] * 2 + [False] * 3, [False] * 5])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        outs = [keras_model([x, m]), manual_model([x, m], training=True)]
    np.testing.assert_allclose(outs[1], outs[0], atol=ATOL)
    np.testing.assert_allclose(tape.gradient(outs[1], x), tape.gradient(outs[0], x), atol=ATOL)


def test_inside_tf_function_and_model_fit():
    """The graph the trainer builds (static shapes, tf.function) gives the same results."""
    rng = np.random.default_rng(5)
    x = tf.constant(rng.normal(size=(4, 5, 3)).astype("float32"))
    keras_layer, manual_layer = keras.layers.LSTM(4, unroll=True), ManualLSTM(4, unroll=True)
    keras_layer.build(x.shape)
    manual_layer.build(x.shape)
    copy_lstm_weights(keras_layer, manual_layer)

    @tf.function
    def grads(layer, training):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.sin(layer(x, training=training)))
        return tape.gradient(loss, layer.trainable_weights)

    ref = [w.numpy() for w in grads(keras_layer, True)]
    got = [to_keras_order(g.numpy()) for g in grads(manual_layer, True)]
    for g_m, g_k in zip(got, ref, strict=True):
        np.testing.assert_allclose(g_m, g_k, atol=ATOL)

    model = keras.Sequential(
        [keras.Input((6,), dtype="int32"), keras.layers.Embedding(20, 4, mask_zero=True),
         *build_lstm_stack([5, 3], "manual"), keras.layers.Dense(2)]
    )
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = model.fit(
        rng.integers(0, 20, size=(16, 6)), rng.integers(0, 2, size=16), epochs=2, verbose=0
    )
    assert np.isfinite(history.history["loss"]).all()


def test_a_subclass_can_change_the_cell():
    """The extension point users are promised: override `cell`, the loop and masks still work."""

    class NoOutputGate(ManualLSTM):
        def cell(self, x_part, h, c, h_weight):
            z = x_part + ops.matmul(h, h_weight)
            z_input, _, z_forget, z_mid = ops.split(z, 4, axis=-1)
            c = ops.sigmoid(z_forget) * c + ops.sigmoid(z_input) * ops.tanh(z_mid)
            return ops.tanh(c), c

    rng = np.random.default_rng(6)
    x = tf.constant(rng.normal(size=(2, 4, 3)).astype("float32"))
    mask = tf.constant([[True] * 4, [True, True, False, False]])
    stock, custom = ManualLSTM(3), NoOutputGate(3)
    stock.build(x.shape)
    custom.build(x.shape)
    copy_lstm_weights(stock, custom)
    custom.bias.assign(np.concatenate([np.zeros(3), np.full(3, 50.0), np.zeros(6)]))
    stock.bias.assign(custom.bias)  # output gate saturated at 1: the two cells then agree
    for layer in (stock, custom):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(x, mask=mask) ** 2)
        assert all(np.isfinite(g).all() for g in tape.gradient(loss, layer.trainable_weights))
    np.testing.assert_allclose(custom(x, mask=mask), stock(x, mask=mask), atol=1e-6)


def test_tutorial_initializer_range():
    features, units = 16, 32
    layer = ManualLSTM(units, initializer="tutorial", seed=1)
    layer.build((None, 10, features))
    bound = 1.0 / np.sqrt(features + units) / 3.0
    for weight in (layer.x_weight, layer.h_weight):
        values = weight.numpy()
        assert np.abs(values).max() <= bound
        assert np.abs(values).max() > 0.9 * bound  # uniform over the whole range
        assert abs(values.mean()) < 0.1 * bound
    np.testing.assert_array_equal(layer.bias.numpy(), 0.0)


def test_keras_initializer_has_unit_forget_bias_and_named_gates():
    layer = ManualLSTM(4)
    layer.build((None, 3, 2))
    assert layer.x_weight.shape == (2, 16)
    assert layer.h_weight.shape == (4, 16)
    assert layer.bias.shape == (16,)
    for name in GATES:
        gate = layer.gate(name)
        assert tuple(gate["x_weight"].shape) == (2, 4)
        assert tuple(gate["h_weight"].shape) == (4, 4)
        expected = 1.0 if name == "forget" else 0.0
        np.testing.assert_array_equal(np.asarray(gate["bias"]), expected)
    with pytest.raises(ValueError):
        layer.gate("peephole")


def test_h_is_o_times_tanh_c():
    """The tutorial's `h = o + tanh(c)` bug is fixed: one step by hand."""
    rng = np.random.default_rng(7)
    layer = ManualLSTM(3, initializer="tutorial")
    x = rng.normal(size=(2, 1, 4)).astype("float32")
    layer.build(x.shape)
    layer.bias.assign(rng.normal(size=12).astype("float32"))
    g = {name: {k: np.asarray(v) for k, v in layer.gate(name).items()} for name in GATES}

    def pre(name):
        return x[:, 0] @ g[name]["x_weight"] + g[name]["bias"]  # h_0 = 0

    sig = lambda v: 1 / (1 + np.exp(-v))  # noqa: E731
    c = sig(pre("input")) * np.tanh(pre("mid_state"))  # c_0 = 0
    h = sig(pre("output")) * np.tanh(c)
    np.testing.assert_allclose(layer(x).numpy(), h, atol=1e-6)


def test_saved_model_loads_in_safe_mode_and_predicts_the_same(tmp_path):
    rng = np.random.default_rng(8)
    model = keras.Sequential(
        [
            keras.Input((7,), dtype="int32"),
            keras.layers.Embedding(30, 5, mask_zero=True),
            ManualLSTM(6, return_sequences=True, initializer="tutorial", seed=3),
            ManualLSTM(4, unroll=False),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    x = rng.integers(0, 30, size=(5, 7))
    x[0] = 0  # all padding
    x[1, 3:] = 0
    expected = model.predict(x, verbose=0)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)
    config = loaded.layers[1].get_config()
    assert config["initializer"] == "tutorial"
    assert config["return_sequences"] is True
    assert loaded.layers[2].get_config()["unroll"] is False


def test_masked_max_pooling_ignores_masked_steps_and_empty_rows():
    values = np.array([[[1.0, -5.0], [3.0, -2.0], [99.0, 99.0]],   # last step masked
                       [[-4.0, -6.0], [-3.0, -7.0], [-1.0, -1.0]],  # nothing masked
                       [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0]]],  # everything masked
                      dtype="float32")
    mask = np.array([[True, True, False], [True, True, True], [False, False, False]])
    pool = MaskedGlobalMaxPooling1D()
    np.testing.assert_allclose(ops.convert_to_numpy(pool(values, mask=mask)),
                               [[3.0, -2.0], [-1.0, -1.0], [0.0, 0.0]])
    np.testing.assert_allclose(ops.convert_to_numpy(pool(values)), values.max(axis=1))
    assert pool.compute_mask(values, mask) is None


def test_masked_max_pooling_keeps_keras_quiet_and_saves(tmp_path):
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(20, 4, mask_zero=True),
        keras.layers.LSTM(3, return_sequences=True),
        MaskedGlobalMaxPooling1D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    x = np.array([[3, 4, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype="int32")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Keras warns when a layer drops a mask
        expected = model.predict(x, verbose=0)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_masked_average_pooling_ignores_masked_steps_and_empty_rows(tmp_path):
    values = np.array([[[1.0, -5.0], [3.0, -2.0], [99.0, 99.0]],   # last step masked
                       [[-4.0, -6.0], [-3.0, -7.0], [-1.0, -1.0]],  # nothing masked
                       [[50.0, 50.0], [50.0, 50.0], [50.0, 50.0]]],  # everything masked
                      dtype="float32")
    mask = np.array([[True, True, False], [True, True, True], [False, False, False]])
    pool = MaskedGlobalAveragePooling1D()
    np.testing.assert_allclose(ops.convert_to_numpy(pool(values, mask=mask)),
                               [[2.0, -3.5], [-8 / 3, -14 / 3], [0.0, 0.0]], rtol=1e-6)
    np.testing.assert_allclose(ops.convert_to_numpy(pool(values)), values.mean(axis=1),
                               rtol=1e-6)
    assert pool.compute_mask(values, mask) is None
    model = keras.Sequential([
        keras.Input((6,), dtype="int32"),
        keras.layers.Embedding(20, 4, mask_zero=True),
        keras.layers.LSTM(3, return_sequences=True),
        MaskedGlobalAveragePooling1D(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    x = np.array([[3, 4, 5, 0, 0, 0], [0, 0, 0, 0, 0, 0]], dtype="int32")
    expected = model.predict(x, verbose=0)
    assert np.isfinite(expected).all()
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", safe_mode=True)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), expected, atol=1e-6)


def test_build_lstm_stack():
    for cell, cls in (("keras", keras.layers.LSTM), ("manual", ManualLSTM)):
        layers = build_lstm_stack([8, 6, 4], cell, timesteps=UNROLL_MAX_STEPS)
        assert [type(layer) for layer in layers] == [cls] * 3
        assert [layer.return_sequences for layer in layers] == [True, True, False]
        assert all(layer.unroll is True for layer in layers)
        long = build_lstm_stack([8], cell, timesteps=UNROLL_MAX_STEPS + 1)
        assert long[0].unroll is False
    assert build_lstm_stack([8], "manual")[0].unroll == "auto"
    with pytest.raises(ValueError):
        build_lstm_stack([8], "gru")
    with pytest.raises(ValueError):
        build_lstm_stack([], "manual")


def test_copy_lstm_weights_checks_its_arguments():
    unbuilt = ManualLSTM(3)
    built = ManualLSTM(3)
    built.build((None, 2, 4))
    other = keras.layers.LSTM(5)
    other.build((None, 2, 4))
    with pytest.raises(ValueError, match="built"):
        copy_lstm_weights(unbuilt, built)
    with pytest.raises(ValueError, match="shape"):
        copy_lstm_weights(other, built)
    with pytest.raises(TypeError):
        copy_lstm_weights(keras.layers.GRU(3), built)
    relu = keras.layers.LSTM(3, activation="relu")
    relu.build((None, 2, 4))
    with pytest.raises(ValueError, match="tanh"):
        copy_lstm_weights(relu, built)
