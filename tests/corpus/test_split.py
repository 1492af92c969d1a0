"""Cleaning and splitting: duplicates and conflicting labels dropped and counted; a seeded,
stratified split with every label in every split; the corpora that cannot be split."""

from __future__ import annotations

from collections import Counter

import pytest

from rnnpipe.corpus.readers import Document
from rnnpipe.corpus.split import MIN_DOCS_PER_LABEL, deduplicate, stratified_split
from rnnpipe.errors import DataError
from rnnpipe.paths import SPLITS


def docs_of(counts: dict[str, int]) -> list[Document]:
    return [Document(label, f"{label} {i}", f"c.tsv:{i}") for label, n in counts.items()
            for i in range(n)]


def test_duplicates_and_conflicting_labels_are_dropped_and_counted():
    docs = [Document("pos", "好", "f:1"), Document("pos", "好", "f:2"), Document("neg", "差", "f:3"),
            Document("pos", "一般", "f:4"), Document("neg", "一般", "f:5"),
            Document("neg", "一般", "f:6")]
    kept, duplicates, conflicting = deduplicate(docs)
    assert [(d.text, d.origin) for d in kept] == [("好", "f:1"), ("差", "f:3")]
    assert (duplicates, conflicting) == (1, 3)


def test_split_is_stratified_complete_and_disjoint():
    docs = docs_of({"a": 50, "b": 20, "c": 3})
    splits = stratified_split(docs, 0.2, 0.1, seed=42)
    assert sorted(d.origin + d.label for s in SPLITS for d in splits[s]) == \
        sorted(d.origin + d.label for d in docs)
    counts = {s: Counter(d.label for d in splits[s]) for s in SPLITS}
    assert counts["test"] == {"a": 5, "b": 2, "c": 1}
    assert counts["val"] == {"a": 10, "b": 4, "c": 1}
    assert counts["train"] == {"a": 35, "b": 14, "c": 1}


def test_split_is_seeded():
    docs = docs_of({"a": 30, "b": 30})
    first = stratified_split(docs, 0.2, 0.2, seed=1)
    assert stratified_split(docs, 0.2, 0.2, seed=1) == first
    assert stratified_split(docs, 0.2, 0.2, seed=2) != first
    # Splits are shuffled across labels, not one label after the other.
    assert [d.label for d in first["train"]] != sorted(d.label for d in first["train"])


@pytest.mark.parametrize(("counts", "message"), [
    ({}, "no usable documents"),
    ({"pos": 10}, r"single label \('pos'\); a classifier needs at least two"),
    ({"pos": 10, "neg": 2}, r"label 'neg' has 2 document\(s\); each label needs at least 3 .*"
                            r"\(first at c\.tsv:0\)"),
])
def test_corpora_that_cannot_be_split(counts, message):
    with pytest.raises(DataError, match=message):
        stratified_split(docs_of(counts), 0.1, 0.1, seed=0)


def test_the_smallest_label_still_lands_everywhere():
    splits = stratified_split(docs_of({"a": MIN_DOCS_PER_LABEL, "b": 100}), 0.45, 0.45, seed=0)
    for name in SPLITS:
        assert {d.label for d in splits[name]} == {"a", "b"}
