"""The tutorial's hand-written LSTM, as a serializable Keras 3 layer.

The tutorial rnnpipe grew from (a Chinese text-classification walk-through that wrote its LSTM by
hand in TensorFlow) builds its LSTM from four named gate groups, each with
an input weight ``x_weight [E, H]``, a recurrent weight ``h_weight [H, H]`` and a bias ``[H]``::

    input     i = sigmoid(x @ Wx_input  + h @ Wh_input  + b_input)
    forget    f = sigmoid(x @ Wx_forget + h @ Wh_forget + b_forget)
    output    o = sigmoid(x @ Wx_output + h @ Wh_output + b_output)
    mid_state m = tanh   (x @ Wx_mid    + h @ Wh_mid    + b_mid)
    c = f * c + i * m
    h = o * tanh(c)          # the tutorial wrote `o + tanh(c)`: a bug, fixed here

:class:`ManualLSTM` keeps exactly that cell, but stores each kind of parameter for the four gates
side by side in one fused variable (``x_weight [E, 4H]``, ``h_weight [H, 4H]``, ``bias [4H]``,
columns in the order of :data:`GATES`), because one ``[., 4H]`` matrix product per step is much
cheaper than four ``[., H]`` ones. :meth:`ManualLSTM.gate` returns any gate's three tensors by name.

Speed (measured on a shared 2-core CPU, see ``benchmarks/lstm_cell.py``): the cell is bound by
its many small matrix products and the chain of small ops that each step must wait for. So
each step's work is arranged to keep that chain short: the input half of the gates
(``x_t @ x_weight + bias``) does not depend on the previous step, so TensorFlow computes it on the
other core while the recurrence runs; the recurrent weight is read once, not once per step; and
the loop is unrolled into the graph when the sequence is short and its length known
(:data:`UNROLL_MAX_STEPS`), otherwise it is the backend's own symbolic RNN loop (the one
``keras.layers.RNN`` runs). Hoisting the input projection for all steps into one big product was
measured and is slower here: the ``[T, B, 4H]`` intermediate costs more in memory traffic than
the per-step products it saves.

Masks (``Embedding(mask_zero=True)`` upstream) are honoured like ``keras.layers.LSTM``: on a masked
step the state does not change, so the output is the state after each sequence's last real token
(for right padding and for arbitrary masks alike), and a fully padded row gives zeros.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Sequence
from typing import Any

from rnnpipe.model.backend import keras, ops

_backend = keras.src.backend  # backend.rnn: the loop keras.layers.RNN itself runs

# Column blocks of the fused weights, in storage order: the tutorial's order.
GATES: tuple[str, ...] = ("input", "output", "forget", "mid_state")
# keras.layers.LSTM stores the same four blocks as i, f, c, o ("c" is the tutorial's mid_state).
KERAS_GATES: tuple[str, ...] = ("input", "forget", "mid_state", "output")

# Unroll the time loop into the graph up to this many (statically known) steps. Unrolling removes
# the per-step cost of the symbolic loop (about 1.3-2x on 50 steps); beyond ~64 steps the graph
# and its build time grow while the gain fades (measured with benchmarks/lstm_cell.py).
UNROLL_MAX_STEPS = 64

# Steps unrolled inside each iteration of the symbolic loop (long or unknown-length sequences):
# the largest of these that divides the length. Larger chunks mean fewer, larger products and
# less loop overhead, but a larger graph to build (measured on 200 steps: chunk 4, 8, 20, 40 ->
# 446, 404, 388, 360 CPU-ms per training step, and 4, 5, 10, 19 s to build).
LOOP_CHUNKS: tuple[int, ...] = (20, 16, 10, 8, 5, 4, 2)

INITIALIZERS = ("keras", "tutorial")


def _loop_chunk(timesteps: int) -> int:
    """Steps per iteration of the symbolic loop: the largest of LOOP_CHUNKS dividing T."""
    return next(k for k in (*LOOP_CHUNKS, 1) if timesteps % k == 0)


def _resolve_unroll(unroll: bool | str, timesteps: int | None) -> bool:
    """Decide whether to unroll: ``"auto"`` unrolls short, statically known sequences."""
    if unroll == "auto":
        return timesteps is not None and timesteps <= UNROLL_MAX_STEPS
    if unroll and timesteps is None:
        raise ValueError("Cannot unroll an LSTM over a sequence of unknown length.")
    return bool(unroll)


# Stacked unrolled layers hand each other their per-step outputs directly, not only as one
# stacked [B, T, H] tensor: stacking then unstacking would make layer k+1 wait for all of layer k.
# Without that barrier, TensorFlow runs layer k+1's step t alongside layer k's step t+1 (and the
# same in the backward pass), so a 2-layer stack keeps both cores busy. The stacked tensor is
# still returned (it is the layer's output); nothing uses it inside the stack, so the graph
# drops it. The slices travel as an attribute of that tensor, like Keras' own `_keras_mask`.
_STEPS_ATTR = "_rnnpipe_step_slices"


def _with_step_slices(stacked: Any, steps: list[Any]) -> Any:
    """Attach the per-step tensors that ``stacked`` [B, T, ...] was stacked from."""
    # Some backends' arrays take no attributes: then the next layer just unstacks.
    with contextlib.suppress(AttributeError, TypeError):
        setattr(stacked, _STEPS_ATTR, tuple(steps))
    return stacked


def _step_slices(inputs: Any) -> list[Any]:
    """``inputs`` [B, T, ...] split into T tensors [B, ...], reusing attached slices if any."""
    steps = getattr(inputs, _STEPS_ATTR, None)
    if steps is not None and len(steps) == inputs.shape[1]:
        return list(steps)
    return ops.unstack(inputs, axis=1)


@keras.saving.register_keras_serializable(package="rnnpipe")
class ManualLSTM(keras.layers.Layer):
    """The tutorial's LSTM cell over a whole sequence, with the ``h = o * tanh(c)`` fix.

    Args:
        units: size ``H`` of the hidden and cell states.
        return_sequences: return the hidden state at every step ``[B, T, H]`` (to stack another
            recurrent layer on top; the mask is passed on) instead of the last one ``[B, H]``.
        initializer: ``"keras"`` (default; as ``keras.layers.LSTM``: Glorot-uniform input weights,
            orthogonal recurrent weights, zero biases with the forget bias at 1), ``"tutorial"``
            (the tutorial's uniform ``±1/sqrt(E + H)/3`` for both weights, zero biases), or any
            Keras initializer identifier, used for both weights (zero biases).
        unit_forget_bias: start the forget-gate bias at 1. Default: only for ``"keras"``.
        unroll: ``"auto"`` (default) unrolls sequences of at most :data:`UNROLL_MAX_STEPS` known
            steps; ``True``/``False`` force it.
        seed: seed for the weight initialisers (``None``: Keras' global seed).
        **kwargs: passed to ``keras.layers.Layer`` (``name``, ``dtype``, ...).
    """

    def __init__(
        self,
        units: int,
        return_sequences: bool = False,
        initializer: str | dict[str, Any] | keras.initializers.Initializer = "keras",
        unit_forget_bias: bool | None = None,
        unroll: bool | str = "auto",
        seed: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if int(units) <= 0:
            raise ValueError(f"units must be positive, got {units}")
        if unroll not in (True, False, "auto"):
            raise ValueError(f"unroll must be True, False or 'auto', got {unroll!r}")
        self.units = int(units)
        self.return_sequences = bool(return_sequences)
        self.initializer = initializer
        self.unit_forget_bias = (
            initializer == "keras" if unit_forget_bias is None else bool(unit_forget_bias)
        )
        self.unroll = unroll
        self.seed = seed
        self.supports_masking = True
        self.input_spec = keras.layers.InputSpec(ndim=3)

    # ----------------------------------------------------------------------------------- weights
    def _weight_initializers(self, input_dim: int) -> tuple[Any, Any]:
        """Initialisers for ``x_weight`` and ``h_weight``."""
        seeds = (None, None) if self.seed is None else (self.seed, self.seed + 1)
        if self.initializer == "tutorial":
            scale = 1.0 / math.sqrt(input_dim + self.units) / 3.0
            return tuple(
                keras.initializers.RandomUniform(-scale, scale, seed=s) for s in seeds
            )  # type: ignore[return-value]
        if self.initializer == "keras":
            return (
                keras.initializers.GlorotUniform(seed=seeds[0]),
                keras.initializers.Orthogonal(seed=seeds[1]),
            )
        init = keras.initializers.get(self.initializer)
        return init, init

    def build(self, input_shape: Sequence[int | None]) -> None:
        input_dim = input_shape[-1]
        if input_dim is None:
            raise ValueError("ManualLSTM needs a known feature dimension.")
        units = self.units
        x_init, h_init = self._weight_initializers(int(input_dim))

        def bias_init(shape: Any, dtype: Any = None) -> Any:
            # Zeros, except a forget-gate bias of 1 (Jozefowicz et al. 2015) when asked.
            parts = [ops.zeros((units,), dtype=dtype) for _ in GATES]
            if self.unit_forget_bias:
                parts[GATES.index("forget")] = ops.ones((units,), dtype=dtype)
            return ops.concatenate(parts)

        self.x_weight = self.add_weight(
            shape=(input_dim, 4 * units), initializer=x_init, name="x_weight"
        )
        self.h_weight = self.add_weight(
            shape=(units, 4 * units), initializer=h_init, name="h_weight"
        )
        self.bias = self.add_weight(shape=(4 * units,), initializer=bias_init, name="bias")
        self.built = True

    def gate(self, name: str) -> dict[str, Any]:
        """The tutorial's parameter group ``name``: its ``x_weight``, ``h_weight`` and ``bias``.

        Returns tensors (slices of the fused variables); to change a gate, assign to the slice
        ``[:, k*H:(k+1)*H]`` of the fused variable, with ``k = GATES.index(name)``.
        """
        k = GATES.index(name)
        cols = slice(k * self.units, (k + 1) * self.units)
        return {
            "x_weight": ops.convert_to_tensor(self.x_weight)[:, cols],
            "h_weight": ops.convert_to_tensor(self.h_weight)[:, cols],
            "bias": ops.convert_to_tensor(self.bias)[cols],
        }

    # ------------------------------------------------------------------------------------- cell
    def input_projection(self, x: Any, x_weight: Any, bias: Any) -> Any:
        """The input half of the four gates' pre-activations: ``x @ x_weight + bias``.

        ``x`` is one step ``[B, E]`` or a block of steps ``[B, k, E]``. It does not depend on the
        recurrence, so the loop computes it apart from :meth:`cell`: per step alongside the
        recurrence, or for several steps in one larger (more efficient) product.
        """
        return ops.matmul(x, x_weight) + bias

    def cell(self, x_part: Any, h: Any, c: Any, h_weight: Any) -> tuple[Any, Any]:
        """One time step of the tutorial's cell: the new ``(h, c)``.

        ``x_part`` is this step's :meth:`input_projection` ``[B, 4H]``. Change this method (in a
        subclass) to change the cell, e.g. add peepholes or layer norm; the loop in :meth:`call`
        does not care what happens here.
        """
        z = x_part + ops.matmul(h, h_weight)  # the four gates' pre-activations, [B, 4H]
        # input, output and forget are adjacent (GATES order): one sigmoid covers all three,
        # which saves two ops per step forward and two backward.
        z_sigmoid, z_mid = ops.split(z, [3 * self.units], axis=-1)
        input_gate, output_gate, forget_gate = ops.split(ops.sigmoid(z_sigmoid), 3, axis=-1)
        mid_state = ops.tanh(z_mid)
        c = forget_gate * c + input_gate * mid_state
        h = output_gate * ops.tanh(c)  # the tutorial's `o + tanh(c)` was a bug
        return h, c

    # ------------------------------------------------------------------------------------- loop
    def call(self, inputs: Any, mask: Any = None, training: bool | None = None) -> Any:
        unroll = _resolve_unroll(self.unroll, inputs.shape[1])
        # Read each variable once, as a tensor in the compute dtype (not once per step).
        x_weight, h_weight, bias = (
            ops.cast(v, self.compute_dtype) for v in (self.x_weight, self.h_weight, self.bias)
        )
        zeros = ops.zeros((ops.shape(inputs)[0], self.units), dtype=self.compute_dtype)

        def step(x_part: Any, keep_t: Any, h: Any, c: Any) -> tuple[Any, Any]:
            h_new, c_new = self.cell(x_part, h, c, h_weight)
            if keep_t is None:
                return h_new, c_new
            # A masked step leaves the state unchanged (as keras.layers.LSTM does), so the final
            # state is the one after each row's last real token; an all-padding row stays 0.
            return ops.where(keep_t, h_new, h), ops.where(keep_t, c_new, c)

        keep = None
        if mask is not None:
            keep = ops.expand_dims(ops.cast(mask, "bool"), -1)  # [B, T, 1]: broadcasts, no tiling

        if unroll:
            h, c = zeros, zeros
            outputs = []
            xs = _step_slices(inputs)
            keeps = [None] * len(xs) if keep is None else ops.unstack(keep, axis=1)
            for x_t, keep_t in zip(xs, keeps, strict=True):
                # Per step, so that step t starts as soon as its input exists (see
                # _with_step_slices); TensorFlow runs it on the other core.
                h, c = step(self.input_projection(x_t, x_weight, bias), keep_t, h, c)
                outputs.append(h)
            if not self.return_sequences:
                return h
            return _with_step_slices(ops.stack(outputs, axis=1), outputs)

        timesteps = inputs.shape[1]
        if timesteps is None:
            # Unknown length: one step per iteration, and backend.rnn applies the mask itself
            # (it can't take the length from a tuple of inputs); the same semantics.
            def one_step(x_t: Any, states: Any) -> tuple[Any, list[Any]]:
                h, c = step(self.input_projection(x_t, x_weight, bias), None, *states[:2])
                return h, [h, c]

            last, outputs, _ = _backend.rnn(
                one_step, inputs, [zeros, zeros], mask=mask,
                return_all_outputs=self.return_sequences,
            )
            return outputs if self.return_sequences else last

        # Each iteration of the symbolic loop runs `chunk` steps unrolled: the loop's own cost
        # (control flow, reading and writing its per-step tensors) is paid once per chunk, and
        # the input projection is one [chunk*B, E] @ [E, 4H] product per chunk rather than
        # `chunk` small ones (small products run well below the CPU's arithmetic peak). Doing
        # it for the whole sequence at once was slower: the [T, B, 4H] result is large.
        # Time-major ([T, B, ...]) so that a chunk's steps are contiguous: splitting them apart
        # then copies nothing.
        chunk = _loop_chunk(timesteps)
        batch = ops.shape(inputs)[0]

        def chunked(t: Any) -> Any:  # [B, T, ...] -> [T / chunk, chunk, B, ...]
            t = ops.transpose(t, (1, 0, *range(2, len(t.shape))))
            return ops.reshape(t, (timesteps // chunk, chunk, batch, *t.shape[2:]))

        def rnn_step(step_inputs: Any, states: Any) -> tuple[Any, list[Any]]:
            x_chunk, keep_chunk = step_inputs if keep is not None else (step_inputs, None)
            x_parts = ops.unstack(self.input_projection(x_chunk, x_weight, bias), axis=0)
            keeps = [None] * chunk if keep_chunk is None else ops.unstack(keep_chunk, axis=0)
            h, c = states[:2]
            hs = []
            for x_part, keep_t in zip(x_parts, keeps, strict=True):
                h, c = step(x_part, keep_t, h, c)
                hs.append(h)
            return (ops.stack(hs) if self.return_sequences else h), [h, c]

        last, outputs, _ = _backend.rnn(
            rnn_step,
            chunked(inputs) if keep is None else (chunked(inputs), chunked(keep)),
            [zeros, zeros],
            unroll=False,
            time_major=True,
            # backend.rnn would take the length from axis 1 (the batch, when time-major).
            input_length=timesteps // chunk,
            return_all_outputs=self.return_sequences,
        )
        if self.return_sequences:  # [T / chunk, chunk, B, H] -> [B, T, H]
            outputs = ops.reshape(outputs, (timesteps, batch, self.units))
            return ops.transpose(outputs, (1, 0, 2))
        return last

    def compute_mask(self, inputs: Any, mask: Any = None) -> Any:
        return mask if self.return_sequences else None

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        if self.return_sequences:
            return (input_shape[0], input_shape[1], self.units)
        return (input_shape[0], self.units)

    def get_config(self) -> dict[str, Any]:
        initializer = self.initializer
        if initializer not in INITIALIZERS:
            initializer = keras.initializers.serialize(keras.initializers.get(initializer))
        return {
            **super().get_config(),
            "units": self.units,
            "return_sequences": self.return_sequences,
            "initializer": initializer,
            "unit_forget_bias": self.unit_forget_bias,
            "unroll": self.unroll,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="rnnpipe")
class MaskedGlobalMaxPooling1D(keras.layers.Layer):
    """Max over each sequence's real steps: ``[B, T, H]`` with its mask → ``[B, H]``.

    ``keras.layers.GlobalMaxPooling1D`` ignores the mask (and warns, at every call, that it drops
    it). After either LSTM the answer would be the same, since a masked step repeats the last
    real output, but this layer does not rely on that: masked steps never win, and a sequence
    with no real step (an empty text) pools to zeros, as the LSTM's outputs on it are.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return ops.max(inputs, axis=1)
        real = ops.expand_dims(ops.cast(mask, "bool"), -1)
        pooled = ops.max(ops.where(real, inputs, ops.full_like(inputs, float("-inf"))), axis=1)
        return ops.where(ops.any(real, axis=1), pooled, ops.zeros_like(pooled))

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[2])


@keras.saving.register_keras_serializable(package="rnnpipe")
class MaskedGlobalAveragePooling1D(keras.layers.Layer):
    """Mean over each sequence's real steps: ``[B, T, H]`` with its mask → ``[B, H]``.

    ``keras.layers.GlobalAveragePooling1D`` divides by the number of real steps, so a sequence
    with none (an empty text, all ``<PAD>``) gives 0/0 = NaN, and one such document in a batch
    turns every weight into NaN while training. Here it pools to zeros, as max pooling does.
    """

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.supports_masking = True

    def call(self, inputs: Any, mask: Any = None) -> Any:
        if mask is None:
            return ops.mean(inputs, axis=1)
        real = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        return ops.sum(inputs * real, axis=1) / ops.maximum(ops.sum(real, axis=1), 1.0)

    def compute_mask(self, inputs: Any, mask: Any = None) -> None:
        return None

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return (input_shape[0], input_shape[2])


def build_lstm_stack(units: Sequence[int], cell: str, **opts: Any) -> list[keras.layers.Layer]:
    """The stacked recurrent layers of an ``lstm_units`` list, for ``cell`` ``keras`` or ``manual``.

    Every layer but the last returns sequences (and passes the mask on). Both cells get the same
    loop setting: unrolled when the sequence is short and known. Pass ``unroll=True/False`` to
    force it; ``keras.layers.LSTM`` needs a concrete bool, so ``"auto"`` is resolved here from
    ``timesteps=`` (default: not unrolled). Other ``opts`` go to every layer's constructor.
    """
    units = [int(u) for u in units]
    if not units:
        raise ValueError("units must list at least one layer size")
    if cell not in ("keras", "manual"):
        raise ValueError(f"cell must be 'keras' or 'manual', got {cell!r}")
    opts = dict(opts)
    timesteps = opts.pop("timesteps", None)
    unroll = opts.pop("unroll", "auto")
    layers: list[keras.layers.Layer] = []
    for k, n in enumerate(units):
        seq = k < len(units) - 1
        if cell == "manual":
            if timesteps is not None and unroll == "auto":
                layer_unroll: bool | str = _resolve_unroll("auto", timesteps)
            else:
                layer_unroll = unroll
            layers.append(ManualLSTM(n, return_sequences=seq, unroll=layer_unroll, **opts))
        else:
            keras_unroll = unroll if unroll != "auto" else _resolve_unroll("auto", timesteps)
            layers.append(keras.layers.LSTM(n, return_sequences=seq, unroll=keras_unroll, **opts))
    return layers


def _to_gate_blocks(layer: keras.layers.Layer) -> dict[str, dict[str, Any]]:
    """Per-gate numpy blocks of a built ``ManualLSTM`` or ``keras.layers.LSTM``."""
    if not isinstance(layer, (ManualLSTM, keras.layers.LSTM)):
        raise TypeError(f"expected ManualLSTM or keras.layers.LSTM, got {type(layer).__name__}")
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} must be built before its weights are copied")
    if isinstance(layer, ManualLSTM):
        order, kernel, recurrent, bias = GATES, layer.x_weight, layer.h_weight, layer.bias
    else:
        cell = layer.cell
        if not cell.use_bias:
            raise ValueError("copying needs an LSTM with use_bias=True")
        order, kernel, recurrent, bias = KERAS_GATES, cell.kernel, cell.recurrent_kernel, cell.bias
    kernel, recurrent, bias = (ops.convert_to_numpy(v) for v in (kernel, recurrent, bias))
    h = recurrent.shape[0]
    return {
        name: {
            "x_weight": kernel[:, k * h : (k + 1) * h],
            "h_weight": recurrent[:, k * h : (k + 1) * h],
            "bias": bias[k * h : (k + 1) * h],
        }
        for k, name in enumerate(order)
    }


def copy_lstm_weights(src: keras.layers.Layer, dst: keras.layers.Layer) -> None:
    """Copy the weights of one LSTM layer into another, gate by gate.

    ``src`` and ``dst`` are each a built :class:`ManualLSTM` or ``keras.layers.LSTM`` (with its
    default sigmoid/tanh activations and a bias) of the same sizes. ``keras.layers.LSTM`` keeps
    its gates in the order i, f, c, o and ``ManualLSTM`` in :data:`GATES` order; this maps them
    by name, so the two layers then compute the same function.
    """
    import numpy as np

    for layer in (src, dst):
        if isinstance(layer, keras.layers.LSTM):
            act = keras.activations.serialize(layer.cell.activation)
            rec = keras.activations.serialize(layer.cell.recurrent_activation)
            if (act, rec) != ("tanh", "sigmoid"):
                raise ValueError("ManualLSTM matches only keras.layers.LSTM(tanh, sigmoid)")
    blocks = _to_gate_blocks(src)
    dst_blocks = _to_gate_blocks(dst)  # also checks dst is built and of a supported type
    for name in GATES:
        for part, value in blocks[name].items():
            if value.shape != dst_blocks[name][part].shape:
                raise ValueError(
                    f"shape mismatch for {name}.{part}: {value.shape} vs "
                    f"{dst_blocks[name][part].shape}"
                )
    order = GATES if isinstance(dst, ManualLSTM) else KERAS_GATES
    fused = {
        part: np.concatenate([blocks[name][part] for name in order], axis=-1)
        for part in ("x_weight", "h_weight", "bias")
    }
    if isinstance(dst, ManualLSTM):
        dst.x_weight.assign(fused["x_weight"])
        dst.h_weight.assign(fused["h_weight"])
        dst.bias.assign(fused["bias"])
    else:
        dst.cell.kernel.assign(fused["x_weight"])
        dst.cell.recurrent_kernel.assign(fused["h_weight"])
        dst.cell.bias.assign(fused["bias"])
