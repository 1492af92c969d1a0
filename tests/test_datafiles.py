"""The files steps hand each other: splits (`label<TAB>text`) and token files
(`label<TAB>tokens`), written atomically and read back exactly."""

from __future__ import annotations

import pytest

from rnnpipe.corpus.readers import Document
from rnnpipe.datafiles import read_split, read_tokens, write_split, write_tokens
from rnnpipe.errors import DataError


def test_split_round_trip(tmp_path):
    docs = [Document("pos", "质量很好，非常满意", "a:1"), Document("neg", "too bad", "a:2"),
            Document("pos", "a,b \"quoted\"", "a:3")]
    path = tmp_path / "data" / "train.tsv"
    write_split(path, docs)
    assert path.read_text(encoding="utf-8") == \
        "pos\t质量很好，非常满意\nneg\ttoo bad\npos\ta,b \"quoted\"\n"
    assert read_split(path) == (["pos", "neg", "pos"],
                                ["质量很好，非常满意", "too bad", "a,b \"quoted\""])


def test_an_empty_split(tmp_path):
    write_split(tmp_path / "val.tsv", [])
    assert read_split(tmp_path / "val.tsv") == ([], [])


def test_a_missing_split_names_the_step_to_run(tmp_path):
    with pytest.raises(DataError, match=r"train\.tsv: missing; run the ingest step first"):
        read_split(tmp_path / "train.tsv")


def test_a_line_without_a_tab_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("pos\tgood\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:2: expected label<TAB>text"):
        read_split(tmp_path / "train.tsv")


def test_tokens_round_trip(tmp_path):
    path = tmp_path / "tokens" / "train.tsv"
    write_tokens(path, ["pos", "neg", "pos"], [["质量", "很", "好"], [], ["it's", "ok"]])
    assert path.read_text(encoding="utf-8") == "pos\t质量 很 好\nneg\t\npos\tit's ok\n"
    assert read_tokens(path) == (["pos", "neg", "pos"], [["质量", "很", "好"], [], ["it's", "ok"]])


def test_tokens_and_labels_must_match(tmp_path):
    with pytest.raises(ValueError):
        write_tokens(tmp_path / "t.tsv", ["pos"], [["a"], ["b"]])
    assert not (tmp_path / "t.tsv").exists()


def test_missing_tokens_name_the_step_to_run(tmp_path):
    with pytest.raises(DataError, match="run the vocabulary step first"):
        read_tokens(tmp_path / "tokens" / "train.tsv")
