"""The vocabulary step: ids, thresholds and ties, the token files and summary it writes, and the
splits it refuses."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rnnpipe.config import IngestParams, Params, VocabParams
from rnnpipe.datafiles import read_tokens
from rnnpipe.errors import DataError
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.steps import vocab as vocab_step
from rnnpipe.steps.ingest import ingest
from rnnpipe.steps.vocab import build_vocabulary, length_summary, vocabulary


def test_pad_unk_ids_threshold_and_max_size():
    tokens = [["a", "b", "b"], ["b", "c", "c", "c", "c"], ["d"]]
    vocab, counts = build_vocabulary(tokens, ["x", "y", "x"], VocabParams(min_count=2))
    assert vocab.tokens == ["<PAD>", "<UNK>", "c", "b"]
    assert vocab.labels == ["x", "y"]
    assert counts["a"] == 1
    small, _ = build_vocabulary(tokens, ["x", "y", "x"], VocabParams(min_count=1, max_size=3))
    assert small.tokens == ["<PAD>", "<UNK>", "c"]
    unlimited, _ = build_vocabulary(tokens, ["x", "y", "x"],
                                    VocabParams(min_count=1, max_size=None))
    assert unlimited.tokens == ["<PAD>", "<UNK>", "c", "b", "a", "d"]


def test_ties_are_broken_by_token_and_reserved_tokens_are_not_counted():
    tokens = [["z", "y", "<PAD>", "<UNK>"], ["x", "z", "y", "x", "<UNK>"]]
    vocab, counts = build_vocabulary(tokens, ["b", "a"], VocabParams(min_count=1, tokenizer="word"))
    assert vocab.tokens == ["<PAD>", "<UNK>", "x", "y", "z"]
    assert vocab.labels == ["a", "b"] and vocab.tokenizer == "word"
    assert "<PAD>" not in counts and "<UNK>" not in counts


def test_empty_vocabulary_is_an_error():
    with pytest.raises(DataError, match="vocabulary is empty.*min_count=5"):
        build_vocabulary([["a"], ["b"]], ["x", "y"], VocabParams(min_count=5))


def test_length_summary():
    summary = length_summary(np.arange(1, 101))
    assert summary == {"mean": 50.5, "p50": 50, "p90": 90, "p95": 95, "p99": 99, "max": 100}


@pytest.mark.parametrize("tokenizer", ["jieba", "char"])
def test_vocabulary_step_on_chinese(tmp_path, zh_tsv, tokenizer):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    summary = vocabulary(VocabParams(tokenizer=tokenizer, min_count=1, workers=1), tmp_path,
                         tmp_path / "vocab_summary.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.tokens[:2] == ["<PAD>", "<UNK>"] and vocab.labels == ["neg", "pos"]
    assert vocab.tokenizer == tokenizer
    assert summary["size"] == len(vocab.tokens)
    for split in ("train", "val", "test"):
        labels, token_lists = read_tokens(tmp_path / "tokens" / f"{split}.tsv")
        assert len(labels) == len(token_lists) > 0 and all(token_lists)
    saved = json.loads((tmp_path / "vocab_summary.json").read_text())
    assert saved == summary
    assert saved["tokenizer"] == tokenizer and saved["labels"] == ["neg", "pos"]
    assert saved["train_coverage"] == 1.0  # min_count 1: every train token is in
    assert 0 <= saved["val_oov_rate"] <= 1
    assert set(saved["train_tokens_per_doc"]) == {"mean", "p50", "p90", "p95", "p99", "max"}
    assert saved["most_frequent"] == vocab.tokens[2:22]


def test_vocabulary_step_on_english_five_classes(tmp_path, en_tsv):
    ingest(IngestParams(source=str(en_tsv)), tmp_path, tmp_path / "ingest.json")
    vocabulary(VocabParams(tokenizer="word", min_count=1), tmp_path, tmp_path / "v.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.labels == ["business", "politics", "science", "sports", "tech"]
    assert all(t == t.lower() for t in vocab.tokens[2:])


def test_the_step_is_repeatable(tmp_path, zh_tsv):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    params = VocabParams(min_count=1, workers=1)
    vocabulary(params, tmp_path, tmp_path / "v.json")
    first = [(tmp_path / rel).read_bytes() for rel in ("vocab.json", "tokens/train.tsv", "v.json")]
    vocabulary(params, tmp_path, tmp_path / "v.json")
    assert [(tmp_path / rel).read_bytes() for rel in ("vocab.json", "tokens/train.tsv",
                                                       "v.json")] == first


def test_label_unseen_in_training_is_an_error(tmp_path, zh_tsv):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    with open(tmp_path / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("meh\t一般般\n")
    with pytest.raises(DataError, match="test.tsv: label 'meh' never occurs in the train split"):
        vocabulary(VocabParams(min_count=1), tmp_path, tmp_path / "v.json")
    assert not (tmp_path / "vocab.json").exists() and not (tmp_path / "tokens").exists()


def test_missing_splits_name_the_step(tmp_path):
    with pytest.raises(DataError, match="run the ingest step first"):
        vocabulary(VocabParams(), tmp_path, tmp_path / "v.json")


def test_main_prints_one_summary_line(tmp_path, zh_tsv, in_dir, capsys):
    in_dir(tmp_path)
    ingest(IngestParams(source=str(zh_tsv)), tmp_path / "data", tmp_path / "reports" / "i.json")
    vocab_step.main(Params(vocab=VocabParams(min_count=1, workers=1)))
    out = capsys.readouterr().out
    assert out.startswith("vocab: ") and "labels ['neg', 'pos']" in out and "p95 length" in out
    assert len(out.splitlines()) == 1
    assert (tmp_path / "data" / "vocab.json").exists()
    assert (tmp_path / "reports" / "vocab.json").exists()
