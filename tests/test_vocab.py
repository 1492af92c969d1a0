"""Vocabulary: tokenizers, ids, thresholds, parallel segmentation, and its errors."""

import json

import pytest

from rnnpipe.config import IngestParams, VocabParams
from rnnpipe.errors import DataError
from rnnpipe.ingest import ingest
from rnnpipe.text import PAD_ID, UNK_ID, encode, tokenize, tokenize_many
from rnnpipe.vocab import Vocabulary, build_vocabulary, read_tokens, vocabulary


def test_tokenizers():
    assert tokenize("Hello, World! It's 2026.", "word") == ["hello", "world", "it's", "2026"]
    assert tokenize("好 书！", "char") == ["好", "书", "！"]
    assert tokenize("这本书非常好看", "jieba") == ["这", "本书", "非常", "好看"]


def test_parallel_segmentation_matches_serial():
    texts = [f"第{i}本书非常好看，但是价格太贵了" for i in range(3000)]
    assert tokenize_many(texts, "jieba", workers=2) == tokenize_many(texts, "jieba", workers=1)


def test_pad_unk_ids_threshold_and_max_size():
    tokens = [["a", "b", "b"], ["b", "c", "c", "c", "c"], ["d"]]
    vocab, counts = build_vocabulary(tokens, ["x", "y", "x"], VocabParams(min_count=2))
    assert vocab.tokens == ["<PAD>", "<UNK>", "c", "b"]
    assert vocab.labels == ["x", "y"]
    assert counts["a"] == 1
    small, _ = build_vocabulary(tokens, ["x", "y", "x"], VocabParams(min_count=1, max_size=3))
    assert small.tokens == ["<PAD>", "<UNK>", "c"]
    ids = encode([["c", "b", "zzz"], []], vocab.token_ids, max_len=4)
    assert ids.tolist() == [[2, 3, UNK_ID, PAD_ID], [PAD_ID] * 4]
    assert encode([["c"] * 9], vocab.token_ids, max_len=4).tolist() == [[2] * 4]


def test_empty_vocabulary_is_an_error():
    with pytest.raises(DataError, match="vocabulary is empty.*min_count=5"):
        build_vocabulary([["a"], ["b"]], ["x", "y"], VocabParams(min_count=5))


@pytest.mark.parametrize("tokenizer", ["jieba", "char"])
def test_vocabulary_step_on_chinese(tmp_path, zh_tsv, tokenizer):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    summary = vocabulary(VocabParams(tokenizer=tokenizer, min_count=1, workers=1), tmp_path,
                         tmp_path / "vocab_summary.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.tokens[:2] == ["<PAD>", "<UNK>"] and vocab.labels == ["neg", "pos"]
    assert summary["size"] == len(vocab.tokens)
    labels, token_lists = read_tokens(tmp_path / "tokens" / "train.tsv")
    assert len(labels) == len(token_lists) > 0 and all(token_lists)
    assert json.loads((tmp_path / "vocab_summary.json").read_text())["tokenizer"] == tokenizer


def test_vocabulary_step_on_english_five_classes(tmp_path, en_tsv):
    ingest(IngestParams(source=str(en_tsv)), tmp_path, tmp_path / "ingest.json")
    vocabulary(VocabParams(tokenizer="word", min_count=1), tmp_path, tmp_path / "v.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.labels == ["business", "politics", "science", "sports", "tech"]
    assert all(t == t.lower() for t in vocab.tokens[2:])


def test_label_unseen_in_training_is_an_error(tmp_path, zh_tsv):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    with open(tmp_path / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("meh\t一般般\n")
    with pytest.raises(DataError, match="test.tsv: label 'meh' never occurs in the train split"):
        vocabulary(VocabParams(min_count=1), tmp_path, tmp_path / "v.json")


def test_missing_splits_name_the_step(tmp_path):
    with pytest.raises(DataError, match="run the ingest step first"):
        vocabulary(VocabParams(), tmp_path, tmp_path / "v.json")
