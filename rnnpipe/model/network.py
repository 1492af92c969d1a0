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
from rnnpipe.model.lstm import MaskedGlobalMaxPooling1D, build_lstm_stack


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
    inputs = keras.Input(shape=(config.max_len,), dtype="int32", name="token_ids")
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
    stack = build_lstm_stack(config.lstm_units, config.cell, timesteps=config.max_len)
    if config.pooling != "last":
        # Pool over every step's output instead of taking the last one; both poolings are
        # given the mask, so padding never counts.
        stack[-1].return_sequences = True
    for layer in stack:
        x = layer(x)
    if config.pooling == "max":
        x = MaskedGlobalMaxPooling1D(name="max_pool")(x)
    elif config.pooling == "mean":
        x = keras.layers.GlobalAveragePooling1D(name="mean_pool")(x)
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
