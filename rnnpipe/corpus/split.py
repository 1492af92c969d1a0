"""Cleaning and splitting on a few bytes per document: exact duplicates and texts seen with two
labels are dropped, then each label is split with a seeded shuffle so it lands in train,
validation and test.

The first pass over a corpus keeps, per document, a 16-byte BLAKE2b hash of its text, its label
as an id and the length of its line in a split file (`Records`, ~22 bytes). Duplicates are found
by sorting hashes (`dedupe`), and each kept document's split and byte offset in its split file
follow from its index (`place`), with the same seeded permutations as splitting the documents
themselves, so the splits are byte-identical to reading every document into memory. The second
pass writes each document at its offset. `deduplicate` and `stratified_split` apply the same
functions to a list of documents.
"""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rnnpipe.corpus.readers import Document
from rnnpipe.errors import DataError
from rnnpipe.paths import SPLITS

MIN_DOCS_PER_LABEL = 3  # one each for train, validation and test
MAX_LABELS = 65535  # label ids are 16-bit
NOT_KEPT = 255
_BUCKET_BITS = 6  # duplicates are found in 64 slices of the hash space, to bound the sort's memory
_OFFSETS_BLOCK = 1 << 14


def line_bytes(label: str, text: str) -> bytes:
    """A document's line in a split file (`datafiles.write_split`'s format)."""
    return f"{label}\t{text}\n".encode()


class Records:
    """What the first pass keeps of each document: hash, label id, line length, order key."""

    def __init__(self) -> None:
        self.labels: dict[str, int] = {}
        self.hashes = bytearray()
        self.label_ids = array("H")
        self.sizes = array("I")
        self.keys: array | None = None  # a document's place in the corpus order, when it is
        # read in another order (a tar archive read front to back)

    def __len__(self) -> int:
        return len(self.label_ids)

    def add(self, doc: Document, key: int | None = None) -> None:
        """Record one document read; `key` is its place in the corpus order if not `len(self)`."""
        label = self.labels.get(doc.label)
        if label is None:
            if len(self.labels) >= MAX_LABELS:
                raise DataError(f"ingest: more than {MAX_LABELS} distinct labels (the label "
                                f"column looks like text; are the columns swapped? Lines are "
                                f"label<TAB>text)")
            label = self.labels[doc.label] = len(self.labels)
        data = doc.text.encode()
        self.hashes += hashlib.blake2b(data, digest_size=16).digest()
        self.label_ids.append(label)
        size = len(data) + len(doc.label.encode()) + 2
        if size >= 1 << 32:
            raise DataError(f"{doc.origin}: a document of {size:,} bytes; documents must be "
                            f"under 4 GB")
        self.sizes.append(size)
        if key is not None and (self.keys is not None or key != len(self.label_ids) - 1):
            if self.keys is None:
                self.keys = array("Q", range(len(self.label_ids) - 1))
            self.keys.append(key)

    def hash_array(self) -> np.ndarray:
        """The hashes as `[n, 2]` unsigned 64-bit integers."""
        return np.frombuffer(self.hashes, dtype="<u8").reshape(-1, 2)


@dataclass
class Dedupe:
    """Which documents are kept, and how many were dropped for what."""

    keep: np.ndarray  # bool per document, in corpus order
    duplicates: int
    conflicting: int
    distinct: int  # distinct (label, text) pairs


def dedupe(hashes: np.ndarray, labels: np.ndarray) -> Dedupe:
    """Keep the first of every text (in corpus order); drop later copies as duplicates and every
    copy of a text seen with two labels as conflicting."""
    n = len(labels)
    keep = np.zeros(n, dtype=bool)
    duplicates = conflicting = distinct = 0
    # The top bits of each hash's first (little-endian) word: its 8th byte, one byte per document.
    top = np.ascontiguousarray(hashes).view(np.uint8)[:, 7] >> np.uint8(8 - _BUCKET_BITS)
    for bucket in range(1 << _BUCKET_BITS):
        index = np.flatnonzero(top == bucket)
        if not len(index):
            continue
        h1, h2, label = hashes[index, 0], hashes[index, 1], labels[index]
        order = np.lexsort((label, h2, h1))  # stable: equal keys stay in corpus order
        h1, h2, label, index = h1[order], h2[order], label[order], index[order]
        new_text = np.ones(len(index), dtype=bool)
        new_text[1:] = (h1[1:] != h1[:-1]) | (h2[1:] != h2[:-1])
        new_pair = np.array(new_text)
        new_pair[1:] |= label[1:] != label[:-1]
        distinct += int(new_pair.sum())
        starts = np.flatnonzero(new_text)
        ends = np.append(starts[1:], len(index)) - 1
        conflict = (label[starts] != label[ends])[np.cumsum(new_text) - 1]
        first = new_text & ~conflict
        keep[index[first]] = True
        conflicting += int(conflict.sum())
        duplicates += int((~conflict).sum() - first.sum())
    return Dedupe(keep, duplicates, conflicting, distinct)


@dataclass
class Placement:
    """Where each kept document goes: its split (`NOT_KEPT` if dropped) and byte offset in the
    split file; and each split's size."""

    split: np.ndarray  # uint8 per document: index into SPLITS, or NOT_KEPT
    offset: np.ndarray  # uint32 (uint64 for splits of 4 GB or more) per document
    documents: dict[str, int]
    bytes: dict[str, int]
    classes: dict[str, dict[str, int]]  # label → split → documents


def _permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """`rng.permutation(n)` in 4 bytes an entry (the same numbers: it shuffles `arange(n)`)."""
    order = np.arange(n, dtype=np.uint32)
    rng.shuffle(order)
    return order


def place(keep: np.ndarray, labels: np.ndarray, sizes: np.ndarray, names: Sequence[str],
          val_size: float, test_size: float, seed: int,
          origin_of: Callable[[int], str]) -> Placement:
    """Split the kept documents per label with a seeded shuffle (every label lands in all three
    splits), shuffle each split, and lay each out as its file: document → split and offset.
    `names` are the labels by id; `origin_of(i)` says where document `i` came from (only for
    an error, so it may read the corpus again)."""
    present = sorted(names[i] for i in np.flatnonzero(np.bincount(labels[keep],
                                                                  minlength=len(names))))
    if not present:
        raise DataError("ingest: the corpus has no usable documents")
    if len(present) < 2:
        raise DataError(f"ingest: the corpus has a single label ({present[0]!r}); "
                        f"a classifier needs at least two")
    ids = {name: i for i, name in enumerate(names)}
    rng = np.random.default_rng(seed)
    members: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    classes: dict[str, dict[str, int]] = {}
    for label in present:
        mask = labels == ids[label]
        mask &= keep
        group = np.flatnonzero(mask).astype(np.uint32)
        del mask
        if len(group) < MIN_DOCS_PER_LABEL:
            raise DataError(f"ingest: label {label!r} has {len(group)} document(s); each label "
                            f"needs at least {MIN_DOCS_PER_LABEL} to appear in train, validation "
                            f"and test (first at {origin_of(int(group[0]))})")
        size = len(group)
        picked = group[_permutation(rng, size)]
        del group
        n_test = max(1, round(size * test_size))
        n_val = max(1, round(size * val_size))
        n_test = min(n_test, size - 2)
        n_val = min(n_val, size - n_test - 1)
        parts = {"test": picked[:n_test], "val": picked[n_test:n_test + n_val],
                 "train": picked[n_test + n_val:]}
        for name, part in parts.items():
            members[name].append(part)
        classes[label] = {name: len(parts[name]) for name in SPLITS}
    split = np.full(len(keep), NOT_KEPT, dtype=np.uint8)
    # Offsets take 4 bytes a document unless a split file reaches 4 GB.
    wide = int(sizes[keep].sum(dtype=np.uint64)) >= 1 << 32
    offset = np.zeros(len(keep), dtype=np.uint64 if wide else np.uint32)
    documents, total = {}, {}
    for code, name in enumerate(SPLITS):
        together = np.concatenate(members.pop(name))
        order = together[_permutation(rng, len(together))]
        del together
        written = 0
        for start in range(0, len(order), _OFFSETS_BLOCK):  # a block at a time: no n-long sums
            block = order[start:start + _OFFSETS_BLOCK]
            ends = np.cumsum(sizes[block], dtype=np.uint64) + np.uint64(written)
            offset[block] = ends - sizes[block]
            written = int(ends[-1])
        split[order] = code
        documents[name], total[name] = len(order), written
    return Placement(split, offset, documents, total, classes)


def _records(docs: Sequence[Document]) -> Records:
    records = Records()
    for doc in docs:
        records.add(doc)
    return records


def deduplicate(docs: list[Document]) -> tuple[list[Document], int, int]:
    """Drop exact duplicates (keeping the first) and every copy of a text seen with two labels.

    Returns the kept documents, the number of duplicates dropped and of conflicting ones dropped.
    """
    records = _records(docs)
    result = dedupe(records.hash_array(), np.frombuffer(records.label_ids, dtype=np.uint16))
    kept = [doc for doc, keep in zip(docs, result.keep.tolist(), strict=True) if keep]
    return kept, result.duplicates, result.conflicting


def stratified_split(docs: list[Document], val_size: float, test_size: float,
                     seed: int) -> dict[str, list[Document]]:
    """Split per label with a seeded shuffle; every label lands in all three splits."""
    records = _records(docs)
    names = list(records.labels)
    placement = place(np.ones(len(docs), dtype=bool),
                      np.frombuffer(records.label_ids, dtype=np.uint16),
                      np.frombuffer(records.sizes, dtype=np.uint32), names, val_size, test_size,
                      seed, lambda i: docs[i].origin)
    splits: dict[str, list[Document]] = {}
    for code, name in enumerate(SPLITS):
        chosen = np.flatnonzero(placement.split == code)
        chosen = chosen[np.argsort(placement.offset[chosen], kind="stable")]
        splits[name] = [docs[i] for i in chosen]
    return splits
