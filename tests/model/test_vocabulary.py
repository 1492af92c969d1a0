"""The vocabulary file: ids, labels and tokenizer, and its round trip through JSON."""

from __future__ import annotations

import json

import pytest

from rnnpipe.errors import DataError
from rnnpipe.io import write_json
from rnnpipe.model.vocabulary import PAD, PAD_ID, UNK, UNK_ID, Vocabulary


def test_ids():
    vocab = Vocabulary("char", [PAD, UNK, "好", "书"], ["neg", "pos"])
    assert (vocab.tokens[PAD_ID], vocab.tokens[UNK_ID]) == ("<PAD>", "<UNK>")
    assert vocab.token_ids == {"<PAD>": 0, "<UNK>": 1, "好": 2, "书": 3}
    assert vocab.label_ids == {"neg": 0, "pos": 1}


def test_round_trip(tmp_path):
    vocab = Vocabulary("jieba", [PAD, UNK, "质量", "很好"], ["neg", "pos"])
    assert Vocabulary.from_dict(vocab.to_dict()) == vocab
    write_json(tmp_path / "vocab.json", vocab.to_dict())
    assert Vocabulary.load(tmp_path / "vocab.json") == vocab
    assert json.loads((tmp_path / "vocab.json").read_text(encoding="utf-8")) == {
        "labels": ["neg", "pos"], "tokenizer": "jieba", "tokens": ["<PAD>", "<UNK>", "质量", "很好"]}


def test_a_missing_vocabulary_names_the_step(tmp_path):
    with pytest.raises(DataError, match=r"vocab\.json: missing; run the vocabulary step first"):
        Vocabulary.load(tmp_path / "vocab.json")
