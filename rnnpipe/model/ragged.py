"""Ragged token ids: what the model reads a split from, in flat memory.

A split is three arrays (the vocabulary step writes them as `.npy` files, read memory-mapped):
every document's token ids end to end (`ids`, int32), where each document starts (`offsets`,
int64, one more than documents) and the label ids (`labels`, int32). Any `max_len` and any
truncation (`head`, `tail`, `head+tail`, as `text.truncated`) is cut from them when a batch is
built, with NumPy, without strings or a padded `[documents, max_len]` matrix of the split.

`Inputs` is what training and prediction take: `RaggedInputs` (a split cut at `max_len`) or
`PaddedInputs` (an already padded matrix, as `text.encode` makes); both give each row's length
and a batch of rows cut to its longest, rounded up to `network.LENGTH_STEP`.

`network` (and with it Keras) is imported only where a batch is cut or a model run: the
vocabulary step writes these files without loading TensorFlow.
"""

from __future__ import annotations

import mmap
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

RELEASE_EVERY = 16  # batches between handing mapped pages back (see `RaggedIds.release`)


@dataclass(frozen=True)
class RaggedIds:
    """A split's token ids, row offsets and label ids (arrays or memory maps)."""

    ids: np.ndarray
    offsets: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def lengths(self) -> np.ndarray:
        """Tokens per document (before any cut)."""
        return np.diff(np.asarray(self.offsets))

    def row(self, i: int) -> np.ndarray:
        """The token ids of document `i`."""
        return np.asarray(self.ids[self.offsets[i]:self.offsets[i + 1]])

    @classmethod
    def from_rows(cls, rows: Sequence[Sequence[int]], labels: Sequence[int]) -> RaggedIds:
        """From one list of ids per document (tests, small data)."""
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(r) for r in rows])
        ids = np.fromiter((i for r in rows for i in r), dtype=np.int32, count=int(offsets[-1]))
        return cls(ids, offsets, np.asarray(labels, dtype=np.int32))

    def release(self) -> None:
        """Drop the memory-mapped pages this process has touched from its resident memory (they
        stay in the page cache): reading a split in random order would otherwise count all of
        it, by the end of an epoch, as this process's memory."""
        for array in (self.ids, self.offsets):
            mapped = getattr(array, "_mmap", None)  # np.memmap's mapping
            if mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
                try:
                    mapped.madvise(mmap.MADV_DONTNEED)
                except (OSError, ValueError):
                    return


def cut_lengths(lengths: np.ndarray, max_len: int) -> np.ndarray:
    """Tokens a document keeps at `max_len`, at least 1 (an empty document is one `<PAD>`)."""
    return np.clip(np.minimum(lengths, max_len), 1, None)


def _head(truncate: str, max_len: int) -> int:
    """How many leading tokens a long document keeps before the tail starts (`text.truncated`:
    all of `max_len` for `head`, none for `tail`, a quarter for `head+tail`)."""
    return {"head": max_len, "tail": 0, "head+tail": max_len // 4}[truncate]


def gather(data: RaggedIds, rows: np.ndarray, max_len: int, truncate: str = "head",
           width: int | None = None) -> np.ndarray:
    """Rows `rows` cut at `max_len` (as `truncate` says) and right-padded with `<PAD>` (0) to
    `width` (default: `max_len`): `text.encode` of those documents, from ids."""
    width = max_len if width is None else width
    rows = np.asarray(rows, dtype=np.int64)
    starts = np.asarray(data.offsets[rows], dtype=np.int64)
    lengths = np.asarray(data.offsets[rows + 1], dtype=np.int64) - starts
    kept = np.minimum(lengths, max_len)
    skip = np.maximum(lengths - max_len, 0)  # tokens a long document drops before its tail
    step = np.arange(width, dtype=np.int64)
    source = starts[:, None] + step + np.where(step >= _head(truncate, max_len), skip[:, None], 0)
    valid = step < kept[:, None]
    out = np.zeros((len(rows), width), dtype=np.int32)
    out[valid] = data.ids[source[valid]]
    return out


class Inputs:
    """Rows a model reads: each row's length (at least 1) and batches of rows."""

    lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, rows: np.ndarray) -> np.ndarray:
        """Rows `rows`, cut to the longest of them (rounded up to `LENGTH_STEP`)."""
        raise NotImplementedError

    def release(self) -> None:
        """Hand back memory-mapped pages read so far (a no-op for arrays in memory)."""


class RaggedInputs(Inputs):
    """A ragged split cut at `max_len` with `truncate`."""

    def __init__(self, data: RaggedIds, max_len: int, truncate: str = "head") -> None:
        self.data, self.max_len, self.truncate = data, max_len, truncate
        self.lengths = cut_lengths(data.lengths(), max_len)

    def batch(self, rows: np.ndarray) -> np.ndarray:
        from rnnpipe.model.network import LENGTH_STEP

        longest = int(self.lengths[rows].max()) if len(rows) else 1
        width = min(self.max_len, -(-longest // LENGTH_STEP) * LENGTH_STEP)
        return gather(self.data, rows, self.max_len, self.truncate, width)

    def release(self) -> None:
        self.data.release()


class PaddedInputs(Inputs):
    """Right-padded ids `[n, max_len]` (`text.encode`)."""

    def __init__(self, x: np.ndarray) -> None:
        from rnnpipe.model.network import lengths_of

        self.x = x
        self.lengths = lengths_of(x)

    def batch(self, rows: np.ndarray) -> np.ndarray:
        from rnnpipe.model.network import cut

        return cut(self.x, rows, self.lengths)


def as_inputs(x: Inputs | np.ndarray) -> Inputs:
    """`x` as `Inputs` (a padded matrix is wrapped)."""
    return x if isinstance(x, Inputs) else PaddedInputs(np.asarray(x))


def predict_proba(model, inputs: Inputs | np.ndarray, batch_size: int = 512,
                  progress: Callable[[int], None] | None = None) -> np.ndarray:
    """Class probabilities for every row, predicted in batches of similar lengths, each cut to
    its longest row (`network.predict_proba` for any `Inputs`); `progress(n)` after each batch."""
    from rnnpipe.model.network import bucketed_batches

    inputs = as_inputs(inputs)
    out = np.zeros((len(inputs), model.output_shape[-1]), dtype=np.float32)
    for number, rows in enumerate(bucketed_batches(inputs.lengths, batch_size), start=1):
        out[rows] = np.asarray(model.predict_on_batch(inputs.batch(rows)))
        if number % RELEASE_EVERY == 0:
            inputs.release()
        if progress is not None:
            progress(len(rows))
    inputs.release()
    return out
