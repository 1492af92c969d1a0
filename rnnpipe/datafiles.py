"""The files one step writes and the next reads, in one place: the splits ingest writes
(`label<TAB>text`, read as a stream) and the ragged token ids the vocabulary step writes
(`data/ids/<split>/{ids,offsets,labels}.npy`, read memory-mapped: see `rnnpipe.model.ragged`).

The `.npy` files are written as a stream: a fixed-size header first, the values appended, the
header rewritten with the final length at the end (a 1-D `.npy` header is 128 bytes for any
length), so no split is ever held in memory to be written.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING

import numpy as np

from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open, atomic_path
from rnnpipe.model.ragged import RaggedIds
from rnnpipe.model.vocabulary import Vocabulary

if TYPE_CHECKING:
    from rnnpipe.corpus.readers import Document

IDS_FILES = ("ids.npy", "offsets.npy", "labels.npy")
_HEADER = 128
_BLOCK = 1 << 20


def write_split(path: Path, docs: Iterable[Document]) -> None:
    """Write `label<TAB>text` lines atomically."""
    with atomic_open(path) as fh:
        for doc in docs:
            fh.write(f"{doc.label}\t{doc.text}\n")


def _missing_split(path: Path) -> DataError:
    return DataError(f"{path}: missing; run the ingest step first (rnnpipe ingest)")


def iter_split(path: str | Path) -> Iterator[tuple[str, str]]:
    """The (label, text) of each line of a split written by ingest, as a stream."""
    path = Path(path)
    if not path.exists():
        raise _missing_split(path)
    with open(path, encoding="utf-8", newline="\n") as fh:
        for number, line in enumerate(fh, start=1):
            label, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise DataError(f"{path}:{number}: expected label<TAB>text")
            yield label, text


def read_split(path: str | Path) -> tuple[list[str], list[str]]:
    """A whole split as (labels, texts): for small data; steps stream with `iter_split`."""
    labels, texts = [], []
    for label, text in iter_split(path):
        labels.append(label)
        texts.append(text)
    return labels, texts


def count_documents(path: str | Path) -> int:
    """How many documents (lines) a split holds, without decoding it."""
    path = Path(path)
    if not path.exists():
        raise _missing_split(path)
    with open(path, "rb") as fh:
        return sum(block.count(b"\n") for block in iter(lambda: fh.read(_BLOCK), b""))


class NpyStream:
    """A 1-D `.npy` file written by appending (see the module docstring)."""

    def __init__(self, fh: IO[bytes], dtype: str) -> None:
        self.fh, self.dtype, self.count = fh, np.dtype(dtype), 0
        fh.write(b"\0" * _HEADER)

    def append(self, values: np.ndarray) -> None:
        """Append values (converted to this file's type)."""
        self.fh.write(np.ascontiguousarray(values, dtype=self.dtype).tobytes())
        self.count += len(values)

    def transform(self, change: Callable[[np.ndarray], np.ndarray],
                  block: int = _BLOCK) -> None:
        """Replace every value by `change(values)`, block by block, in place."""
        size = self.dtype.itemsize
        for start in range(0, self.count, block):
            self.fh.seek(_HEADER + start * size)
            values = np.frombuffer(self.fh.read(min(block, self.count - start) * size),
                                   dtype=self.dtype)
            self.fh.seek(_HEADER + start * size)
            self.fh.write(np.ascontiguousarray(change(values), dtype=self.dtype).tobytes())
        self.fh.seek(0, io.SEEK_END)

    def finish(self) -> None:
        """Write the real header."""
        header = io.BytesIO()
        np.lib.format.write_array_header_1_0(header, {"descr": self.dtype.str,
                                                      "fortran_order": False,
                                                      "shape": (self.count,)})
        if len(header.getvalue()) != _HEADER:  # pragma: no cover (holds for any 1-D length)
            raise AssertionError(f"unexpected .npy header length {len(header.getvalue())}")
        self.fh.seek(0)
        self.fh.write(header.getvalue())
        self.fh.flush()


class IdsWriter:
    """Appends documents to a split's ragged ids (`ids`, `offsets`, `labels`)."""

    def __init__(self, ids: IO[bytes], offsets: IO[bytes], labels: IO[bytes]) -> None:
        self.ids = NpyStream(ids, "<i4")
        self.offsets = NpyStream(offsets, "<i8")
        self.labels = NpyStream(labels, "<i4")
        self.offsets.append(np.zeros(1))
        self.tokens = 0

    def add(self, ids: np.ndarray, lengths: np.ndarray, labels: np.ndarray) -> None:
        """Append documents: their ids end to end, each one's length, their label ids."""
        self.ids.append(ids)
        ends = self.tokens + np.cumsum(lengths, dtype=np.int64)
        self.offsets.append(ends)
        self.tokens = int(ends[-1]) if len(ends) else self.tokens
        self.labels.append(labels)

    def finish(self) -> None:
        for stream in (self.ids, self.offsets, self.labels):
            stream.finish()


@contextlib.contextmanager
def write_ids(folder: Path) -> Iterator[IdsWriter]:
    """An `IdsWriter` whose files replace `folder`'s only when the block succeeds."""
    with contextlib.ExitStack() as stack:
        handles = []
        for name in IDS_FILES:
            tmp = stack.enter_context(atomic_path(folder / name))
            handles.append(stack.enter_context(open(tmp, "w+b")))
        writer = IdsWriter(*handles)
        yield writer
        writer.finish()


def read_ids(folder: str | Path) -> RaggedIds:
    """A split's ragged ids, memory-mapped (nothing is read until used)."""
    folder = Path(folder)
    paths = [folder / name for name in IDS_FILES]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DataError(f"{missing[0]}: missing; run the vocabulary step first (rnnpipe vocab)")
    arrays = []
    for path in paths:
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except ValueError as exc:  # not a .npy file, or a truncated one
            raise DataError(f"{path}: not a readable ids file ({exc}); run the vocabulary step "
                            f"again (rnnpipe vocab)") from None
    data = RaggedIds(*arrays)
    if len(data.offsets) < 1 or len(data.labels) != len(data) or \
            int(data.offsets[-1]) != len(data.ids):
        raise DataError(f"{folder}: ids, offsets and labels do not agree; run the vocabulary "
                        f"step again (rnnpipe vocab)")
    return data


def label_ids(labels: np.ndarray, vocab: Vocabulary, path: Path) -> np.ndarray:
    """A split's label ids (in memory), or a `DataError` if one is not in the vocabulary (ids
    written by another vocabulary than the one read)."""
    labels = np.asarray(labels, dtype=np.int32)
    unknown = labels[(labels < 0) | (labels >= len(vocab.labels))]
    if len(unknown):
        raise DataError(f"{path}: label id {int(unknown[0])} is not in the vocabulary's label "
                        f"map ({len(vocab.labels)} labels); re-run the vocabulary step")
    return np.array(labels)

