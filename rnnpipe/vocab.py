"""Step 2, vocabulary: segment every split once, count train tokens, build the id maps.

Outputs: `data/tokens/{train,val,test}.tsv` (`label<TAB>space-separated tokens`, so training
never segments again), `data/vocab.json` (tokenizer, tokens by id with `<PAD>`=0 and `<UNK>`=1,
labels by id) and `reports/vocab.json` (sizes, coverage, lengths).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from rnnpipe.config import VocabParams, load_params
from rnnpipe.errors import DataError
from rnnpipe.ingest import DATA_DIR, SPLITS, read_split
from rnnpipe.io import atomic_open, read_json, write_json
from rnnpipe.text import PAD, UNK, tokenize_many

TOKENS_DIR = DATA_DIR / "tokens"
VOCAB_PATH = DATA_DIR / "vocab.json"
SUMMARY_PATH = Path("reports/vocab.json")


@dataclass(frozen=True)
class Vocabulary:
    """Token and label ids plus the tokenizer that produced the tokens."""

    tokenizer: str
    tokens: list[str]
    labels: list[str]

    @property
    def token_ids(self) -> dict[str, int]:
        """Token → id."""
        return {t: i for i, t in enumerate(self.tokens)}

    @property
    def label_ids(self) -> dict[str, int]:
        """Label → id."""
        return {label: i for i, label in enumerate(self.labels)}

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return {"tokenizer": self.tokenizer, "tokens": self.tokens, "labels": self.labels}

    @classmethod
    def from_dict(cls, data: dict) -> Vocabulary:
        """Inverse of `to_dict`."""
        return cls(tokenizer=data["tokenizer"], tokens=list(data["tokens"]),
                   labels=list(data["labels"]))

    def save(self, path: str | Path) -> None:
        """Write atomically as JSON."""
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Vocabulary:
        """Read a vocabulary written by `save`."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"{path}: missing; run the vocabulary step first (rnnpipe vocab)")
        return cls.from_dict(read_json(path))


def build_vocabulary(train_tokens: list[list[str]], train_labels: list[str],
                     params: VocabParams) -> tuple[Vocabulary, Counter]:
    """Count train tokens; keep those seen `min_count` times, most frequent first (ties by token),
    at most `max_size` entries including `<PAD>` and `<UNK>`."""
    counts = Counter(t for tokens in train_tokens for t in tokens)
    counts.pop(PAD, None)
    counts.pop(UNK, None)
    kept = sorted((t for t, c in counts.items() if c >= params.min_count),
                  key=lambda t: (-counts[t], t))
    if params.max_size is not None:
        kept = kept[: max(0, params.max_size - 2)]
    if not kept:
        raise DataError(f"vocab: the vocabulary is empty: no train token occurs "
                        f"vocab.min_count={params.min_count} times ({len(counts)} distinct "
                        f"tokens with tokenizer {params.tokenizer}); lower vocab.min_count or "
                        f"check vocab.tokenizer")
    return Vocabulary(params.tokenizer, [PAD, UNK, *kept], sorted(set(train_labels))), counts


def write_tokens(path: Path, labels: list[str], token_lists: list[list[str]]) -> None:
    """Write `label<TAB>tokens` lines atomically."""
    with atomic_open(path) as fh:
        for label, tokens in zip(labels, token_lists, strict=True):
            fh.write(f"{label}\t{' '.join(tokens)}\n")


def read_tokens(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read a file written by `write_tokens` into (labels, token lists)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run the vocabulary step first (rnnpipe vocab)")
    labels, token_lists = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            label, _, tokens = line.rstrip("\n").partition("\t")
            labels.append(label)
            token_lists.append(tokens.split(" ") if tokens else [])
    return labels, token_lists


def vocabulary(params: VocabParams, data_dir: Path = DATA_DIR,
               summary_path: Path = SUMMARY_PATH) -> dict:
    """Segment the three splits, build the vocabulary from train, write tokens and summary."""
    splits = {name: read_split(data_dir / f"{name}.tsv") for name in SPLITS}
    all_texts = [text for name in SPLITS for text in splits[name][1]]
    all_tokens = tokenize_many(all_texts, params.tokenizer, params.workers)
    tokens: dict[str, list[list[str]]] = {}
    start = 0
    for name in SPLITS:
        n = len(splits[name][1])
        tokens[name] = all_tokens[start:start + n]
        start += n
    vocab, counts = build_vocabulary(tokens["train"], splits["train"][0], params)
    known = set(vocab.labels)
    for name in ("val", "test"):
        unseen = sorted(set(splits[name][0]) - known)
        if unseen:
            raise DataError(f"{data_dir / f'{name}.tsv'}: label {unseen[0]!r} never occurs in "
                            f"the train split; re-run ingest so every label is in train")
    for name in SPLITS:
        write_tokens(data_dir / "tokens" / f"{name}.tsv", splits[name][0], tokens[name])
    vocab.save(data_dir / "vocab.json")
    token_ids = vocab.token_ids
    train_total = sum(counts.values())
    val_tokens = [t for doc in tokens["val"] for t in doc]
    lengths = np.array([len(doc) for doc in tokens["train"]])
    summary = {
        "tokenizer": params.tokenizer,
        "size": len(vocab.tokens),
        "distinct_train_tokens": len(counts),
        "labels": vocab.labels,
        "train_coverage": round(sum(counts[t] for t in vocab.tokens[2:]) / max(1, train_total), 4),
        "val_oov_rate": round(sum(t not in token_ids for t in val_tokens)
                              / max(1, len(val_tokens)), 4),
        "train_tokens_per_doc": {
            "mean": round(float(lengths.mean()), 1),
            "p50": int(np.percentile(lengths, 50)),
            "p95": int(np.percentile(lengths, 95)),
            "max": int(lengths.max()),
        },
        "most_frequent": vocab.tokens[2:22],
    }
    write_json(summary_path, summary)
    return summary


def main() -> None:
    """`rnnpipe vocab`: run the step with the `vocab` section of `params.yaml`."""
    from rnnpipe import tracking

    params = load_params()
    with tracking.step_run("vocab", params) as run:
        summary = vocabulary(params.vocab)
        run.log_vocab(summary)
    print(f"vocab: {summary['size']} tokens ({params.vocab.tokenizer}), labels {summary['labels']},"
          f" train coverage {summary['train_coverage']:.1%}, "
          f"p95 length {summary['train_tokens_per_doc']['p95']} tokens")
