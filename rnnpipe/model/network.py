"""The classifier network and how it is saved: embedding → stacked LSTM → pooling → dense →
softmax, in Keras 3 on TensorFlow. Imports nothing from the pipeline (nanoGPT's model.py style):
`NetworkConfig` is everything the network needs to know.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from rnnpipe.errors import DataError
from rnnpipe.model.backend import keras
from rnnpipe.model.lstm import (
    MaskedGlobalAveragePooling1D,
    MaskedGlobalMaxPooling1D,
    build_lstm_stack,
)


@dataclass(frozen=True)
class NetworkConfig:
    """The shape of the network (the `train` params that are about the model, not the fit)."""

    vocab_size: int
    num_classes: int
    max_len: int
    embedding_dim: int = 128
    embedding_dropout: float = 0.4
    lstm_units: Sequence[int] = field(default_factory=lambda: [128])
    cell: str = "keras"
    pooling: str = "max"
    fc_units: int = 64
    dropout: float = 0.5
    seed: int = 42


def build_model(config: NetworkConfig, embedding_matrix: np.ndarray | None = None,
                embeddings_trainable: bool = True) -> keras.Model:
    """The (uncompiled) classifier: masked embedding (from `embedding_matrix` if given) →
    `lstm_units` stacked LSTM layers → (the last real step's output, or max/mean over steps:
    `pooling`) → ReLU dense with dropout → softmax. `cell` picks `keras.layers.LSTM` or rnnpipe's
    hand-written cell."""
    # Any length: batches are cut to their longest document (`bucketed_batches`), so a batch of
    # short texts does not pay for `max_len` steps.
    inputs = keras.Input(shape=(None,), dtype="int32", name="token_ids")
    embedding = keras.layers.Embedding(config.vocab_size, config.embedding_dim, mask_zero=True,
                                       trainable=embeddings_trainable, name="embedding")
    x = embedding(inputs)
    if embedding_matrix is not None:
        # Set, not passed as a Constant initializer: that would write the whole matrix into the
        # saved model's config.json.
        embedding.set_weights([embedding_matrix])
    if config.embedding_dropout:
        # Drops whole embedding channels: the strongest guard against memorising rare words.
        x = keras.layers.SpatialDropout1D(config.embedding_dropout, seed=config.seed,
                                          name="embedding_dropout")(x)
    stack = build_lstm_stack(config.lstm_units, config.cell, timesteps=None)
    if config.pooling != "last":
        # Pool over every step's output instead of taking the last one; both poolings are
        # given the mask, so padding never counts.
        stack[-1].return_sequences = True
    for layer in stack:
        x = layer(x)
    if config.pooling == "max":
        x = MaskedGlobalMaxPooling1D(name="max_pool")(x)
    elif config.pooling == "mean":
        x = MaskedGlobalAveragePooling1D(name="mean_pool")(x)
    x = keras.layers.Dense(config.fc_units, activation="relu", name="fc")(x)
    x = keras.layers.Dropout(config.dropout, seed=config.seed, name="dropout")(x)
    outputs = keras.layers.Dense(config.num_classes, activation="softmax",
                                 name="probabilities")(x)
    return keras.Model(inputs, outputs, name="rnnpipe_classifier")


def load_model(path: str | Path, compile: bool = False) -> keras.Model:
    """Load a `.keras` model in safe mode (no arbitrary code; rnnpipe's layers are registered
    by importing this module)."""
    if not Path(path).exists():
        raise DataError(f"{path}: no trained model; run the pipeline first (make run)")
    return keras.saving.load_model(path, safe_mode=True, compile=compile)


LENGTH_STEP = 8  # batches are cut to a multiple of this many steps (fewer distinct shapes)


def lengths_of(x: np.ndarray) -> np.ndarray:
    """Real tokens per row of right-padded ids (`<PAD>` = 0), at least 1."""
    nonzero = x != 0
    last = np.where(nonzero.any(axis=1), x.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 1)
    return np.maximum(last, 1)


def cut(x: np.ndarray, rows: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """`x[rows]` without the padding columns none of them needs (rounded up to LENGTH_STEP)."""
    longest = int(lengths[rows].max()) if len(rows) else 1
    width = min(x.shape[1], -(-longest // LENGTH_STEP) * LENGTH_STEP)
    return x[rows, :width]


def bucketed_batches(lengths: np.ndarray, batch_size: int,
                     rng: np.random.Generator | None = None, pool: int = 50) -> list[np.ndarray]:
    """Row indices in batches of similar lengths. With `rng` (training): shuffled, then sorted
    by length within pools of `pool` batches, and the batches shuffled, so every epoch mixes
    the data differently; without (inference): sorted by length."""
    if rng is None:
        order = np.argsort(lengths, kind="stable")
        return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    order = rng.permutation(len(lengths))
    batches = []
    for start in range(0, len(order), batch_size * pool):
        chunk = order[start:start + batch_size * pool]
        chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
        batches += [chunk[i:i + batch_size] for i in range(0, len(chunk), batch_size)]
    return [batches[i] for i in rng.permutation(len(batches))]


def predict_proba(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Class probabilities for padded ids `x`, predicted in batches of similar lengths, each cut
    to its longest row (padding is masked, so the answer is the same, only cheaper)."""
    lengths = lengths_of(x)
    out = np.zeros((len(x), model.output_shape[-1]), dtype=np.float32)
    for rows in bucketed_batches(lengths, batch_size):
        out[rows] = np.asarray(model.predict_on_batch(cut(x, rows, lengths)))
    return out


_SHARED_OBJECT_ID = re.compile(rb'"shared_object_id": (\d+)')
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can hold


def save_model(model: keras.Model, path: str | Path) -> None:
    """Save `model` to `path` (a `.keras` name) with bytes that depend only on the model."""
    model.save(path)
    normalize_keras_archive(Path(path))


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
