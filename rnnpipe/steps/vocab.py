"""Step 2, vocabulary: segment every split once, count train tokens, build the id maps.

params: `vocab` → outputs: `data/tokens/{train,val,test}.tsv` (`label<TAB>space-separated
tokens`, so training never segments again), `data/vocab.json` (tokenizer, tokens by id with
`<PAD>`=0 and `<UNK>`=1, labels by id) and `reports/vocab.json` (sizes, coverage, lengths).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from rnnpipe.config import Params, VocabParams, load_params
from rnnpipe.datafiles import read_split, write_tokens
from rnnpipe.errors import DataError
from rnnpipe.io import write_json
from rnnpipe.model.text import tokenize_many
from rnnpipe.model.vocabulary import PAD, UNK, Vocabulary
from rnnpipe.paths import DATA_DIR, SPLITS, VOCAB_FILE, VOCAB_REPORT, split_file, tokens_file


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


def length_summary(lengths: np.ndarray) -> dict:
    """Tokens per document: what `train.max_len: auto` chooses from."""
    return {"mean": round(float(lengths.mean()), 1),
            **{f"p{q}": int(np.percentile(lengths, q)) for q in (50, 90, 95, 99)},
            "max": int(lengths.max())}


def vocabulary(params: VocabParams, data_dir: Path = DATA_DIR,
               summary_path: Path = VOCAB_REPORT) -> dict:
    """Segment the three splits, build the vocabulary from train, write tokens and summary."""
    splits = {name: read_split(split_file(name, data_dir)) for name in SPLITS}
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
            raise DataError(f"{split_file(name, data_dir)}: label {unseen[0]!r} never occurs in "
                            f"the train split; re-run ingest so every label is in train")
    for name in SPLITS:
        write_tokens(tokens_file(name, data_dir / "tokens"), splits[name][0], tokens[name])
    write_json(data_dir / VOCAB_FILE.name, vocab.to_dict())
    token_ids = vocab.token_ids
    train_total = sum(counts.values())
    val_tokens = [t for doc in tokens["val"] for t in doc]
    summary = {
        "tokenizer": params.tokenizer,
        "size": len(vocab.tokens),
        "distinct_train_tokens": len(counts),
        "labels": vocab.labels,
        "train_coverage": round(sum(counts[t] for t in vocab.tokens[2:]) / max(1, train_total), 4),
        "val_oov_rate": round(sum(t not in token_ids for t in val_tokens)
                              / max(1, len(val_tokens)), 4),
        "train_tokens_per_doc": length_summary(np.array([len(d) for d in tokens["train"]])),
        "most_frequent": vocab.tokens[2:22],
    }
    write_json(summary_path, summary)
    return summary


def main(params: Params | None = None) -> None:
    """`rnnpipe vocab`: run the step with the `vocab` section of `params.yaml`."""
    params = params or load_params()
    summary = vocabulary(params.vocab)
    print(f"vocab: {summary['size']} tokens ({params.vocab.tokenizer}), labels {summary['labels']},"
          f" train coverage {summary['train_coverage']:.1%}, "
          f"p95 length {summary['train_tokens_per_doc']['p95']} tokens", flush=True)
