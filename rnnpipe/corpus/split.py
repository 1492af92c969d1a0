"""Cleaning and splitting: exact duplicates and texts seen with two labels are dropped, then each
label is split with a seeded shuffle so it lands in train, validation and test. The split files
(`label<TAB>text` lines) are written and read here.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from rnnpipe.corpus.readers import Document
from rnnpipe.errors import DataError
from rnnpipe.paths import SPLITS

MIN_DOCS_PER_LABEL = 3  # one each for train, validation and test

def deduplicate(docs: list[Document]) -> tuple[list[Document], int, int]:
    """Drop exact duplicates (keeping the first) and every copy of a text seen with two labels.

    Returns the kept documents, the number of duplicates dropped and of conflicting ones dropped.
    """
    labels_of: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        labels_of[doc.text].add(doc.label)
    seen: set[str] = set()
    kept: list[Document] = []
    duplicates = conflicting = 0
    for doc in docs:
        if len(labels_of[doc.text]) > 1:
            conflicting += 1
        elif doc.text in seen:
            duplicates += 1
        else:
            seen.add(doc.text)
            kept.append(doc)
    return kept, duplicates, conflicting


def stratified_split(docs: list[Document], val_size: float, test_size: float,
                     seed: int) -> dict[str, list[Document]]:
    """Split per label with a seeded shuffle; every label lands in all three splits."""
    by_label: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        by_label[doc.label].append(doc)
    if not by_label:
        raise DataError("ingest: the corpus has no usable documents")
    if len(by_label) < 2:
        only = next(iter(by_label))
        raise DataError(f"ingest: the corpus has a single label ({only!r}); "
                        f"a classifier needs at least two")
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < MIN_DOCS_PER_LABEL:
            raise DataError(f"ingest: label {label!r} has {len(group)} document(s); each label "
                            f"needs at least {MIN_DOCS_PER_LABEL} to appear in train, validation "
                            f"and test (first at {group[0].origin})")
        order = rng.permutation(len(group))
        n_test = max(1, round(len(group) * test_size))
        n_val = max(1, round(len(group) * val_size))
        n_test = min(n_test, len(group) - 2)
        n_val = min(n_val, len(group) - n_test - 1)
        picked = [group[i] for i in order]
        splits["test"] += picked[:n_test]
        splits["val"] += picked[n_test:n_test + n_val]
        splits["train"] += picked[n_test + n_val:]
    for name in SPLITS:
        order = rng.permutation(len(splits[name]))
        splits[name] = [splits[name][i] for i in order]
    return splits
