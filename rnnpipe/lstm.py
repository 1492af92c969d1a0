"""The tutorial's hand-written LSTM, as a serializable Keras 3 layer.

The tutorial (see ``shared/notes/seed.md``) builds its LSTM from four named gate groups, each with
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

Speed (measured on a 2-core CPU, see ``benchmarks/lstm_cell.py``) comes from the loop, not the
arithmetic: at these sizes every graph op costs more than its FLOPs. So the layer

- hoists the input half of all gates out of the loop: one ``[T*B, E] @ [E, 4H]`` product,
- reads the recurrent weight once, not once per step,
- applies one ``sigmoid`` to the three sigmoid gates at once (they are adjacent columns),
- unrolls the loop into the graph when the sequence is short and its length known
  (:data:`UNROLL_MAX_STEPS`), and otherwise runs the backend's symbolic RNN loop.

Masks (``Embedding(mask_zero=True)`` upstream) are honoured like ``keras.layers.LSTM``: on a masked
step the state does not change, so the output is the state after each sequence's last real token
(for right padding and for arbitrary masks alike), and a fully padded row gives zeros.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import keras
from keras import ops
from keras.src import backend as _backend  # backend.rnn: the loop keras.layers.RNN itself runs

# Column blocks of the fused weights, in storage order. The three sigmoid gates come first so a
# single sigmoid covers them; mid_state (tanh) is last.
GATES: tuple[str, ...] = ("input", "forget", "output", "mid_state")
# keras.layers.LSTM stores the same four blocks as i, f, c, o ("c" is the tutorial's mid_state).
KERAS_GATES: tuple[str, ...] = ("input", "forget", "mid_state", "output")

# Unroll the time loop into the graph up to this many (statically known) steps. Unrolling removes
# the per-step cost of the symbolic loop (about 1.3-2x on 50 steps); beyond ~64 steps the graph
# and its build time grow while the gain fades (see shared/notes/performance.md).
UNROLL_MAX_STEPS = 64

INITIALIZERS = ("keras", "tutorial")


def _resolve_unroll(unroll: bool | str, timesteps: int | None) -> bool:
    """Decide whether to unroll: ``"auto"`` unrolls short, statically known sequences."""
    if unroll == "auto":
        return timesteps is not None and timesteps <= UNROLL_MAX_STEPS
    if unroll and timesteps is None:
        raise ValueError("Cannot unroll an LSTM over a sequence of unknown length.")
    return bool(unroll)


def _cumsum(values: Sequence[int]) -> list[int]:
    """Running totals: the split points of concatenated per-step inputs."""
    out, total = [], 0
    for v in values:
        total += v
        out.append(total)
    return out


def _steps(*seqs: Any) -> list[list[Any]]:
    """Per-step slices ``[B, ...]`` of batch-major sequences ``[B, T, ...]`` (``None`` passes)."""
    timesteps = next(s for s in seqs if s is not None).shape[1]
    return [[None] * timesteps if s is None else ops.unstack(s, axis=1) for s in seqs]


def _join_inputs(xz: Any, keep: Any) -> Any:
    """One loop input per step: the mask rides along as a last column (one read, not two)."""
    if keep is None:
        return xz
    return ops.concatenate([xz, ops.cast(keep, xz.dtype)], axis=-1)


def _split_step_inputs(step_inputs: Any, keep: Any) -> tuple[Any, Any]:
    """Undo :func:`_join_inputs` for one step: ``(xz_t, keep_t)``, ``keep_t`` a [B, 1] bool."""
    if keep is None:
        return step_inputs, None
    xz_t, keep_t = ops.split(step_inputs, [step_inputs.shape[-1] - 1], axis=-1)
    return xz_t, keep_t > 0.5



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
        fused_backward: train with the hand-derived backward pass of the cell (fast; the
            default) rather than automatic differentiation of :meth:`cell` (same gradients).
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
        fused_backward: bool = True,
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
        self.fused_backward = bool(fused_backward)
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
    def cell(self, xz_t: Any, h: Any, c: Any, h_weight: Any) -> tuple[Any, Any]:
        """One time step of the tutorial's cell; ``xz_t = x_t @ x_weight + bias`` (precomputed).

        Returns the new ``(h, c)``. This is the reference cell: change it (in a subclass) to
        change the cell (peepholes, layer norm, another gate); the loop in :meth:`call` does not
        care what happens here. The fused training path (:meth:`_fused_step`) hand-derives the
        backward pass of exactly this cell, so a subclass that overrides ``cell`` trains with
        automatic differentiation instead (as does ``fused_backward=False``).
        """
        units = self.units
        z = xz_t + ops.matmul(h, h_weight)  # the four gates' pre-activations, [B, 4H]
        # One sigmoid for the three adjacent sigmoid gates, one tanh for mid_state.
        sigmoid_part, mid_part = ops.split(z, [3 * units], axis=-1)
        input_gate, forget_gate, output_gate = ops.split(ops.sigmoid(sigmoid_part), 3, axis=-1)
        mid_state = ops.tanh(mid_part)
        c = forget_gate * c + input_gate * mid_state
        h = output_gate * ops.tanh(c)  # the tutorial's `o + tanh(c)` was a bug
        return h, c

    # ------------------------------------------------------------------------------------- loop
    def call(self, inputs: Any, mask: Any = None, training: bool | None = None) -> Any:
        unroll = _resolve_unroll(self.unroll, inputs.shape[1])
        x_weight, h_weight, bias = (
            ops.convert_to_tensor(v) for v in (self.x_weight, self.h_weight, self.bias)
        )
        # Hoisted out of the loop: the input half of every gate at every step in one product.
        xz = ops.matmul(inputs, x_weight) + bias  # [B, T, 4H]
        keep = None if mask is None else ops.expand_dims(ops.cast(mask, "bool"), -1)  # [B, T, 1]
        fused = (
            self.fused_backward
            and training is not False  # inference needs no saved activations
            and type(self).cell is ManualLSTM.cell  # the hand-derived backward is of this cell
        )
        if fused:
            return self._fused_sequence(xz, h_weight, keep, unroll)
        hs = self._reference_loop(xz, h_weight, keep, unroll)
        return hs if self.return_sequences else hs[:, -1]

    def _reference_loop(self, xz: Any, h_weight: Any, keep: Any, unroll: bool) -> Any:
        """Run :meth:`cell` over the sequence; returns every step's hidden state, [B, T, H]."""

        def step(xz_t: Any, keep_t: Any, h: Any, c: Any) -> tuple[Any, Any]:
            h_new, c_new = self.cell(xz_t, h, c, h_weight)
            if keep_t is None:
                return h_new, c_new
            # A masked step leaves the state unchanged (as keras.layers.LSTM does), so the final
            # state is the one after each row's last real token; an all-padding row stays 0.
            return ops.where(keep_t, h_new, h), ops.where(keep_t, c_new, c)

        zeros = ops.zeros_like(xz[:, 0, : self.units])
        if unroll:
            h, c = zeros, zeros
            outputs = []
            for xz_t, keep_t in zip(*_steps(xz, keep), strict=True):
                h, c = step(xz_t, keep_t, h, c)
                outputs.append(h)
            return ops.stack(outputs, axis=1)

        def rnn_step(step_inputs: Any, states: Any) -> tuple[Any, list[Any]]:
            xz_t, keep_t = _split_step_inputs(step_inputs, keep)
            h, c = step(xz_t, keep_t, *states[:2])
            return h, [h, c]

        _, hs, _ = _backend.rnn(rnn_step, _join_inputs(xz, keep), [zeros, zeros], unroll=False)
        return hs

    # ------------------------------------------------------------------------ fused training path
    # Automatic differentiation of the loop costs ~25 small ops per step (and, in a symbolic
    # loop, stacks every intermediate). At these sizes each op costs more than its arithmetic,
    # so training uses this hand-derived backpropagation through time of :meth:`cell`:
    # everything that does not depend on the recurrence is computed for all steps at once
    # outside the loop, the loop itself does ~6 ops per step, and the recurrent-weight gradient
    # is one [H, B*T] @ [B*T, 4H] product instead of one product per step.

    def _fused_step(self, xz_t: Any, keep_t: Any, h: Any, c: Any, h_weight: Any) -> tuple:
        """:meth:`cell` (masked), also returning the gate activations the backward pass needs."""
        sigmoid_part, mid_part = ops.split(xz_t + ops.matmul(h, h_weight), [3 * self.units], -1)
        gates = ops.sigmoid(sigmoid_part)  # input, forget, output
        mid_state = ops.tanh(mid_part)
        input_gate, forget_gate, output_gate = ops.split(gates, 3, axis=-1)
        c_new = forget_gate * c + input_gate * mid_state
        h_new = output_gate * ops.tanh(c_new)
        if keep_t is not None:
            h_new, c_new = ops.where(keep_t, h_new, h), ops.where(keep_t, c_new, c)
        return h_new, c_new, gates, mid_state

    def _fused_sequence(self, xz: Any, h_weight: Any, keep: Any, unroll: bool) -> Any:
        """The layer's output, with a hand-written gradient w.r.t. ``xz`` and ``h_weight``."""
        units, return_sequences = self.units, self.return_sequences

        def forward(xz: Any, h_weight: Any) -> tuple[Any, ...]:
            zeros = ops.zeros_like(xz[:, 0, :units])
            if unroll:
                h, c = zeros, zeros
                saved: list[tuple[Any, ...]] = []
                for xz_t, keep_t in zip(*_steps(xz, keep), strict=True):
                    h, c, gates, mid = self._fused_step(xz_t, keep_t, h, c, h_weight)
                    saved.append((h, c, gates, mid))
                return tuple(ops.stack(seq, axis=1) for seq in zip(*saved, strict=True))

            def rnn_step(step_inputs: Any, states: Any) -> tuple[Any, list[Any]]:
                xz_t, keep_t = _split_step_inputs(step_inputs, keep)
                h, c, gates, mid = self._fused_step(xz_t, keep_t, *states[:2], h_weight)
                return (h, c, gates, mid), [h, c]

            _, saved_seq, _ = _backend.rnn(
                rnn_step, _join_inputs(xz, keep), [zeros, zeros], unroll=False
            )
            return tuple(saved_seq)

        def backward(dy: Any, saved: tuple[Any, ...], h_weight: Any) -> tuple[Any, Any]:
            hs, cs, gates, mids = saved  # [B, T, H], [B, T, H], [B, T, 3H], [B, T, H]
            # Everything that does not depend on the recurrence, for all steps at once.
            input_gate, forget_gate, output_gate = ops.split(gates, 3, axis=-1)
            tanh_c = ops.tanh(cs)
            zero_step = ops.zeros_like(hs[:, :1])
            c_prev = ops.concatenate([zero_step, cs[:, :-1]], axis=1)
            h_prev = ops.concatenate([zero_step, hs[:, :-1]], axis=1)
            # dz = [dc, dc, dh, dc] * q: the pre-activation gradients of input, forget, output,
            # mid_state given the gradients dh of h and dc of c at that step.
            q = ops.concatenate(
                [
                    ops.concatenate([mids, c_prev, tanh_c], axis=-1) * gates * (1.0 - gates),
                    input_gate * (1.0 - mids * mids),
                ],
                axis=-1,
            )
            p = output_gate * (1.0 - tanh_c * tanh_c)  # dc += dh * p
            carry_c = forget_gate  # dc_prev = dc * f
            if keep is not None:
                # A masked step is the identity on (h, c): no gate gradient, dh and dc pass on.
                keep_f = ops.cast(keep, q.dtype)
                q, p = q * keep_f, p * keep_f
                carry_c = ops.where(keep, forget_gate, 1.0)
            h_weight_t = ops.transpose(h_weight)

            def step(seq_t: tuple[Any, ...], dh: Any, dc: Any) -> tuple[Any, Any, Any]:
                q_t, p_t, carry_t, dy_t, keep_t = seq_t
                if dy_t is not None:
                    dh = dh + dy_t
                dc = dc + dh * p_t
                dz = ops.concatenate([dc, dc, dh, dc], axis=-1) * q_t
                dh_prev = ops.matmul(dz, h_weight_t)
                if keep_t is not None:
                    dh_prev = ops.where(keep_t, dh_prev, dh)
                return dz, dh_prev, dc * carry_t

            zeros = ops.zeros_like(hs[:, 0])
            # Only the last output has a gradient without return_sequences: it starts dh.
            dh0 = zeros if return_sequences else dy
            seqs = [q, p, carry_c, dy if return_sequences else None, keep]
            if unroll:
                dh, dc = dh0, zeros
                dzs = []
                for seq_t in reversed(list(zip(*_steps(*seqs), strict=True))):
                    dz, dh, dc = step(seq_t, dh, dc)
                    dzs.append(dz)
                dzs = ops.stack(dzs[::-1], axis=1)
            else:
                present = [s for s in seqs if s is not None]
                widths = [s.shape[-1] for s in present]

                def rnn_step(step_inputs: Any, states: Any) -> tuple[Any, list[Any]]:
                    parts = iter(ops.split(step_inputs, list(_cumsum(widths[:-1])), axis=-1))
                    seq_t = tuple(None if s is None else next(parts) for s in seqs)
                    if keep is not None:
                        seq_t = (*seq_t[:-1], seq_t[-1] > 0.5)
                    dz, dh, dc = step(seq_t, *states[:2])
                    return dz, [dh, dc]

                joined = ops.concatenate([ops.cast(s, q.dtype) for s in present], axis=-1)
                _, dzs, _ = _backend.rnn(rnn_step, joined, [dh0, zeros], go_backwards=True)
                dzs = ops.flip(dzs, axis=1)  # the loop ran backwards: restore time order
            flat = (-1, 4 * units)
            dh_weight = ops.matmul(
                ops.transpose(ops.reshape(h_prev, (-1, units))), ops.reshape(dzs, flat)
            )
            return dzs, dh_weight

        @ops.custom_gradient
        def lstm(xz: Any, h_weight: Any) -> tuple[Any, Any]:
            saved = forward(xz, h_weight)
            hs = saved[0]

            def grad(*args: Any, upstream: Any = None) -> tuple[Any, Any]:
                dy = args[0] if upstream is None else upstream
                return backward(dy, saved, h_weight)

            return (hs if return_sequences else hs[:, -1]), grad

        return lstm(xz, h_weight)

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
            "fused_backward": self.fused_backward,
        }


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
    if not layer.built:
        raise ValueError(f"layer {layer.name!r} must be built before its weights are copied")
    if isinstance(layer, ManualLSTM):
        order, kernel, recurrent, bias = GATES, layer.x_weight, layer.h_weight, layer.bias
    elif isinstance(layer, keras.layers.LSTM):
        cell = layer.cell
        if not cell.use_bias:
            raise ValueError("copying needs an LSTM with use_bias=True")
        order, kernel, recurrent, bias = KERAS_GATES, cell.kernel, cell.recurrent_kernel, cell.bias
    else:
        raise TypeError(f"expected ManualLSTM or keras.layers.LSTM, got {type(layer).__name__}")
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
