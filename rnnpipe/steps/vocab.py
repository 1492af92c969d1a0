"""Step 2, vocabulary: segment every split once, count train tokens, build the id maps, and write
the model's input as ragged token ids.

params: `vocab` → outputs: `data/ids/<split>/{ids,offsets,labels}.npy` (every document's token
ids end to end, where each starts, its label id: memory-mappable, so training and evaluation cut
any `max_len` from them without segmenting again), `data/vocab.json` (tokenizer, tokens by id
with `<PAD>`=0 and `<UNK>`=1, labels by id) and `reports/vocab.json` (sizes, coverage, lengths).

Memory stays flat: the splits are streamed in chunks through the segmentation processes (a few
chunks in flight). Each token gets a provisional id when first seen (the only thing that grows
is that map, with the number of distinct tokens) and the ids are written at once; when the
vocabulary is known, one pass over the written ids turns provisional ids into final ones.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator, Mapping
from itertools import islice
from pathlib import Path

import numpy as np

from rnnpipe.config import Params, VocabParams, load_params
from rnnpipe.datafiles import IdsWriter, count_documents, iter_split, write_ids
from rnnpipe.errors import DataError
from rnnpipe.heartbeat import Progress, heartbeat
from rnnpipe.io import write_json
from rnnpipe.model.text import segment
from rnnpipe.model.vocabulary import PAD, UNK, UNK_ID, Vocabulary
from rnnpipe.paths import DATA_DIR, IDS_DIR, SPLITS, VOCAB_FILE, VOCAB_REPORT, ids_dir, split_file

CHUNK_DOCUMENTS = 1000  # documents segmented per task...
CHUNK_CHARACTERS = 1_000_000  # ...or fewer, when they are long


def build_vocabulary(counts: Mapping[str, int], train_labels: set[str] | list[str],
                     params: VocabParams) -> Vocabulary:
    """From train token counts: keep tokens seen `min_count` times, most frequent first (ties by
    token), at most `max_size` entries including `<PAD>` and `<UNK>` (never counted)."""
    kept = sorted((t for t, c in counts.items() if c >= params.min_count and t not in (PAD, UNK)),
                  key=lambda t: (-counts[t], t))
    if params.max_size is not None:
        kept = kept[: max(0, params.max_size - 2)]
    if not kept:
        distinct = sum(1 for t in counts if t not in (PAD, UNK))
        raise DataError(f"vocab: the vocabulary is empty: no train token occurs "
                        f"vocab.min_count={params.min_count} times ({distinct} distinct "
                        f"tokens with tokenizer {params.tokenizer}); lower vocab.min_count or "
                        f"check vocab.tokenizer")
    return Vocabulary(params.tokenizer, [PAD, UNK, *kept], sorted(set(train_labels)))


def length_summary(lengths: np.ndarray) -> dict:
    """Tokens per document: what `train.max_len: auto` chooses from."""
    return {"mean": round(float(lengths.mean()), 1),
            **{f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)},
            "max": int(lengths.max())}


def _chunks(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    """(labels, texts) of a split, a chunk at a time."""
    lines = iter_split(path)
    while True:
        labels, texts, characters = [], [], 0
        for label, text in islice(lines, CHUNK_DOCUMENTS):
            labels.append(label)
            texts.append(text)
            characters += len(text)
            if characters >= CHUNK_CHARACTERS:
                break
        if not labels:
            return
        yield labels, texts


class _Provisional:
    """Token and label ids in order of first appearance, and train token counts."""

    def __init__(self) -> None:
        self.tokens: dict[str, int] = {}
        self.labels: dict[str, int] = {}
        self.counts = np.zeros(1024, dtype=np.int64)
        self.train_lengths: list[np.ndarray] = []

    def ids(self, local_tokens: list[str], local_ids: np.ndarray, count: bool) -> np.ndarray:
        """A chunk's ids (local to it) as provisional ids; counted if `count` (train)."""
        table = self.tokens
        mapping = np.fromiter((table.setdefault(t, len(table)) for t in local_tokens),
                              dtype=np.int64, count=len(local_tokens))
        if count:
            if len(table) > len(self.counts):
                grown = np.zeros(max(len(table), 2 * len(self.counts)), dtype=np.int64)
                grown[: len(self.counts)] = self.counts
                self.counts = grown
            # `mapping` holds each token once, so adding through it is exact.
            self.counts[mapping] += np.bincount(local_ids, minlength=len(local_tokens))
        return mapping[local_ids].astype(np.int32)

    def label_ids(self, labels: list[str], split: str, path: Path) -> np.ndarray:
        if split == "train":
            return np.array([self.labels.setdefault(x, len(self.labels)) for x in labels],
                            dtype=np.int32)
        try:
            return np.array([self.labels[x] for x in labels], dtype=np.int32)
        except KeyError as exc:
            raise DataError(f"{path}: label {exc.args[0]!r} never occurs in the train split; "
                            f"re-run ingest so every label is in train") from None


def _segment_splits(params: VocabParams, data_dir: Path,
                    writers: dict[str, IdsWriter]) -> _Provisional:
    """Pass 1: segment each split in chunks, writing provisional ids; count train tokens."""
    found = _Provisional()
    total = sum(count_documents(split_file(name, data_dir)) for name in SPLITS)
    progress = Progress("vocab: segmenting", total=total)
    try:
        for name in SPLITS:  # train first: val and test labels are checked against it
            path = split_file(name, data_dir)
            for labels, tokens, local_ids, lengths in segment(_chunks(path), params.tokenizer,
                                                              params.workers):
                ids = found.ids(tokens, local_ids, count=name == "train")
                if name == "train":
                    found.train_lengths.append(np.array(lengths))
                writers[name].add(ids, lengths, found.label_ids(labels, name, path))
                progress.update(len(labels))
    finally:
        progress.finish()
    return found


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in [root, *root.rglob("*")] if p.is_dir()),
                         key=lambda p: len(p.parts), reverse=True):
        with contextlib.suppress(OSError):
            folder.rmdir()


def vocabulary(params: VocabParams, data_dir: Path = DATA_DIR,
               summary_path: Path = VOCAB_REPORT) -> dict:
    """Segment the three splits, build the vocabulary from train, write ids and summary."""
    ids_root = data_dir / IDS_DIR.name
    created = not ids_root.exists()
    oov = {"tokens": 0, "unknown": 0}
    try:
        with contextlib.ExitStack() as stack:
            writers = {name: stack.enter_context(write_ids(ids_dir(name, ids_root)))
                       for name in SPLITS}
            found = _segment_splits(params, data_dir, writers)
            tokens_by_id = list(found.tokens)
            counts = np.zeros(len(tokens_by_id), dtype=np.int64)  # val/test tokens: 0
            counts[: min(len(counts), len(found.counts))] = found.counts[: len(counts)]
            train_counts = Counter({t: int(c) for t, c in zip(tokens_by_id, counts.tolist(),
                                                             strict=True) if c})
            for reserved in (PAD, UNK):
                train_counts.pop(reserved, None)
            vocab = build_vocabulary(train_counts, found.labels, params)
            final = np.full(len(tokens_by_id), UNK_ID, dtype=np.int32)
            known = np.zeros(len(tokens_by_id), dtype=bool)
            for i, token in enumerate(vocab.tokens):
                if token in found.tokens:
                    final[found.tokens[token]] = i
                    known[found.tokens[token]] = True
            label_map = np.array([vocab.label_ids[x] for x in found.labels], dtype=np.int32)

            def remap_val(ids: np.ndarray) -> np.ndarray:
                oov["tokens"] += len(ids)
                oov["unknown"] += int(np.count_nonzero(~known[ids]))
                return final[ids]

            for name, writer in writers.items():  # pass 2: provisional ids → final ids
                writer.ids.transform(remap_val if name == "val" else final.__getitem__)
                writer.labels.transform(label_map.__getitem__)
    except BaseException:
        if created and ids_root.exists():
            _remove_empty_folders(ids_root)
        raise
    write_json(data_dir / VOCAB_FILE.name, vocab.to_dict())
    train_total = sum(train_counts.values())
    lengths = np.concatenate(found.train_lengths) if found.train_lengths else np.zeros(1)
    summary = {
        "tokenizer": params.tokenizer,
        "size": len(vocab.tokens),
        "distinct_train_tokens": len(train_counts),
        "labels": vocab.labels,
        "train_coverage": round(sum(train_counts[t] for t in vocab.tokens[2:])
                                / max(1, train_total), 4),
        "val_oov_rate": round(oov["unknown"] / max(1, oov["tokens"]), 4),
        "train_tokens_per_doc": length_summary(lengths),
        "most_frequent": vocab.tokens[2:22],
    }
    write_json(summary_path, summary)
    return summary


def main(params: Params | None = None) -> None:
    """`rnnpipe vocab`: run the step with the `vocab` section of `params.yaml`."""
    params = params or load_params()
    with heartbeat("vocab"):
        summary = vocabulary(params.vocab)
    print(f"vocab: {summary['size']} tokens ({params.vocab.tokenizer}), labels {summary['labels']},"
          f" train coverage {summary['train_coverage']:.1%}, "
          f"p95 length {summary['train_tokens_per_doc']['p95']} tokens", flush=True)

