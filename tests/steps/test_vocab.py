"""The vocabulary step: ids, thresholds and ties, the ragged ids and summary it writes (the same
whatever the chunking and the number of processes), and the splits it refuses."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from rnnpipe.config import IngestParams, Params, VocabParams
from rnnpipe.datafiles import IDS_FILES, read_ids, read_split
from rnnpipe.errors import DataError
from rnnpipe.model.text import tokenize
from rnnpipe.model.vocabulary import UNK_ID, Vocabulary
from rnnpipe.steps import vocab as vocab_step
from rnnpipe.steps.ingest import ingest
from rnnpipe.steps.vocab import build_vocabulary, length_summary, vocabulary


def counts_of(token_lists: list[list[str]]) -> Counter:
    return Counter(t for tokens in token_lists for t in tokens)


def test_pad_unk_ids_threshold_and_max_size():
    counts = counts_of([["a", "b", "b"], ["b", "c", "c", "c", "c"], ["d"]])
    vocab = build_vocabulary(counts, ["x", "y", "x"], VocabParams(min_count=2))
    assert vocab.tokens == ["<PAD>", "<UNK>", "c", "b"]
    assert vocab.labels == ["x", "y"]
    small = build_vocabulary(counts, ["x", "y", "x"], VocabParams(min_count=1, max_size=3))
    assert small.tokens == ["<PAD>", "<UNK>", "c"]
    unlimited = build_vocabulary(counts, ["x", "y", "x"], VocabParams(min_count=1, max_size=None))
    assert unlimited.tokens == ["<PAD>", "<UNK>", "c", "b", "a", "d"]


def test_ties_are_broken_by_token_and_reserved_tokens_are_not_counted():
    counts = counts_of([["z", "y", "<PAD>", "<UNK>"], ["x", "z", "y", "x", "<UNK>"]])
    vocab = build_vocabulary(counts, ["b", "a"], VocabParams(min_count=1, tokenizer="word"))
    assert vocab.tokens == ["<PAD>", "<UNK>", "x", "y", "z"]
    assert vocab.labels == ["a", "b"] and vocab.tokenizer == "word"


def test_empty_vocabulary_is_an_error():
    with pytest.raises(DataError, match=r"vocabulary is empty.*min_count=5 times \(2 distinct"):
        build_vocabulary(counts_of([["a"], ["b"]]), ["x", "y"], VocabParams(min_count=5))


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
    token_ids = vocab.token_ids
    for split in ("train", "val", "test"):
        data = read_ids(tmp_path / "ids" / split)
        labels, texts = read_split(tmp_path / f"{split}.tsv")
        assert len(data) == len(texts) > 0
        assert [vocab.labels[i] for i in data.labels.tolist()] == labels
        for i, text in enumerate(texts):  # every document's tokens, as ids
            assert data.row(i).tolist() == [token_ids.get(t, UNK_ID)
                                            for t in tokenize(text, tokenizer)]
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


OUTPUTS = ("vocab.json", "v.json", *(f"ids/{s}/{n}" for s in ("train", "val", "test")
                                        for n in IDS_FILES))


def test_the_step_is_repeatable_whatever_the_chunks_and_processes(tmp_path, corpora,
                                                                   monkeypatch):
    source = corpora.write(tmp_path / "c.tsv", corpora.zh(n_per_class=150))
    ingest(IngestParams(source=str(source)), tmp_path, tmp_path / "ingest.json")
    vocabulary(VocabParams(min_count=2, workers=1), tmp_path, tmp_path / "v.json")
    first = [(tmp_path / rel).read_bytes() for rel in OUTPUTS]
    monkeypatch.setattr(vocab_step, "CHUNK_DOCUMENTS", 7)  # many chunks, two processes
    vocabulary(VocabParams(min_count=2, workers=2), tmp_path, tmp_path / "v.json")
    assert [(tmp_path / rel).read_bytes() for rel in OUTPUTS] == first
    summary = json.loads((tmp_path / "v.json").read_text())
    assert 0 < summary["train_coverage"] <= 1


def test_label_unseen_in_training_is_an_error(tmp_path, zh_tsv):
    ingest(IngestParams(source=str(zh_tsv)), tmp_path, tmp_path / "ingest.json")
    with open(tmp_path / "test.tsv", "a", encoding="utf-8") as fh:
        fh.write("meh\t一般般\n")
    with pytest.raises(DataError, match="test.tsv: label 'meh' never occurs in the train split"):
        vocabulary(VocabParams(min_count=1), tmp_path, tmp_path / "v.json")
    assert not (tmp_path / "vocab.json").exists() and not (tmp_path / "ids").exists()


def test_missing_splits_name_the_step(tmp_path):
    with pytest.raises(DataError, match="run the ingest step first"):
        vocabulary(VocabParams(), tmp_path, tmp_path / "v.json")
    assert not (tmp_path / "ids").exists()


def test_main_prints_one_summary_line(tmp_path, zh_tsv, in_dir, capsys):
    in_dir(tmp_path)
    ingest(IngestParams(source=str(zh_tsv)), tmp_path / "data", tmp_path / "reports" / "i.json")
    vocab_step.main(Params(vocab=VocabParams(min_count=1, workers=1)))
    out = capsys.readouterr().out
    assert out.startswith("vocab: ") and "labels ['neg', 'pos']" in out and "p95 length" in out
    assert len(out.splitlines()) == 1
    assert (tmp_path / "data" / "vocab.json").exists()
    assert (tmp_path / "reports" / "vocab.json").exists()


def test_tokens_seen_only_in_val_and_test_are_unknown(tmp_path):
    """Every val and test token the train split lacks becomes `<UNK>`, and the summary's
    val_oov_rate counts them."""
    rows = {"train": [("pos", "好 书 好"), ("neg", "坏 书")] * 3,
            "val": [("pos", "好 新词"), ("neg", "坏 另一个 词")],
            "test": [("pos", "好"), ("neg", "没见过")]}
    for split, lines in rows.items():
        (tmp_path / f"{split}.tsv").write_text("".join(f"{l}\t{t}\n" for l, t in lines))
    summary = vocabulary(VocabParams(tokenizer="word", min_count=1, workers=1), tmp_path,
                         tmp_path / "v.json")
    vocab = Vocabulary.load(tmp_path / "vocab.json")
    assert vocab.tokens == ["<PAD>", "<UNK>", "书", "好", "坏"]
    val = read_ids(tmp_path / "ids" / "val")
    assert [val.row(i).tolist() for i in range(2)] == [[3, UNK_ID], [4, UNK_ID, UNK_ID]]
    assert read_ids(tmp_path / "ids" / "test").row(1).tolist() == [UNK_ID]
    assert summary["val_oov_rate"] == round(3 / 5, 4)
    assert summary["distinct_train_tokens"] == 3
    assert summary["train_tokens_per_doc"]["max"] == 3
