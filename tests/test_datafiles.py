"""The files steps hand each other: splits (`label<TAB>text`, streamed) and ragged token ids
(`ids`, `offsets`, `labels` as `.npy` written as a stream), written atomically and read back
exactly."""

from __future__ import annotations

import numpy as np
import pytest

from rnnpipe.corpus.readers import Document
from rnnpipe.datafiles import (
    IDS_FILES,
    count_documents,
    iter_split,
    read_ids,
    read_split,
    write_ids,
    write_split,
)
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
    assert list(iter_split(path)) == [("pos", "质量很好，非常满意"), ("neg", "too bad"),
                                      ("pos", "a,b \"quoted\"")]
    assert count_documents(path) == 3


def test_an_empty_split(tmp_path):
    write_split(tmp_path / "val.tsv", [])
    assert read_split(tmp_path / "val.tsv") == ([], [])
    assert count_documents(tmp_path / "val.tsv") == 0


def test_a_missing_split_names_the_step_to_run(tmp_path):
    for read in (read_split, count_documents, lambda p: list(iter_split(p))):
        with pytest.raises(DataError, match=r"train\.tsv: missing; run the ingest step first"):
            read(tmp_path / "train.tsv")


def test_a_line_without_a_tab_names_file_and_line(tmp_path):
    (tmp_path / "train.tsv").write_text("pos\tgood\nno tab here\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"train\.tsv:2: expected label<TAB>text"):
        read_split(tmp_path / "train.tsv")


def test_a_line_separator_inside_a_text_is_not_a_line_break(tmp_path):
    (tmp_path / "train.tsv").write_text("pos\tone\u2028two\x0cthree\n", encoding="utf-8")
    assert read_split(tmp_path / "train.tsv") == (["pos"], ["one\u2028two\x0cthree"])


def test_ragged_ids_round_trip_in_chunks(tmp_path):
    folder = tmp_path / "ids" / "train"
    rows = [[5, 6, 7], [], [2], [9, 9, 9, 9]]
    with write_ids(folder) as writer:
        writer.add(np.array([5, 6, 7]), np.array([3, 0]), np.array([1, 0]))
        writer.add(np.array([2, 9, 9, 9, 9]), np.array([1, 4]), np.array([1, 1]))
        assert not (folder / "ids.npy").exists()  # nothing in place until the block ends
    data = read_ids(folder)
    assert isinstance(data.ids, np.memmap)  # memory-mapped, not read
    assert [data.row(i).tolist() for i in range(len(data))] == rows
    assert data.offsets.tolist() == [0, 3, 3, 4, 8] and data.labels.tolist() == [1, 0, 1, 1]
    assert (data.ids.dtype, data.offsets.dtype, data.labels.dtype) == (np.int32, np.int64,
                                                                      np.int32)
    for name in IDS_FILES:  # plain .npy files
        np.testing.assert_array_equal(np.load(folder / name), np.asarray(getattr(
            data, name.removesuffix(".npy"))))
    assert sorted(p.name for p in folder.iterdir()) == sorted(IDS_FILES)


def test_ids_are_changed_in_place_block_by_block(tmp_path):
    folder = tmp_path / "val"
    with write_ids(folder) as writer:
        writer.add(np.arange(10), np.array([4, 6]), np.array([0, 1]))
        writer.ids.transform(lambda ids: ids * 10, block=3)
        writer.labels.transform(np.array([7, 8]).__getitem__)
    data = read_ids(folder)
    assert data.ids.tolist() == [i * 10 for i in range(10)] and data.labels.tolist() == [7, 8]


def test_an_empty_ids_split(tmp_path):
    with write_ids(tmp_path / "test"):
        pass
    data = read_ids(tmp_path / "test")
    assert len(data) == 0 and data.offsets.tolist() == [0] and data.lengths().tolist() == []


def test_a_failed_writer_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), write_ids(tmp_path / "train") as writer:
        writer.add(np.array([1]), np.array([1]), np.array([0]))
        raise RuntimeError("boom")
    assert not [p for p in (tmp_path / "train").iterdir()]


def test_missing_or_broken_ids_name_the_step_to_run(tmp_path):
    with pytest.raises(DataError, match=r"ids\.npy: missing; run the vocabulary step first"):
        read_ids(tmp_path / "train")
    with write_ids(tmp_path / "train") as writer:
        writer.add(np.array([1, 2]), np.array([2]), np.array([0]))
    (tmp_path / "train" / "labels.npy").write_bytes(b"not numpy")
    with pytest.raises(DataError, match=r"labels\.npy: not a readable ids file"):
        read_ids(tmp_path / "train")
    np.save(tmp_path / "train" / "labels.npy", np.array([0, 1], dtype=np.int32))
    with pytest.raises(DataError, match="ids, offsets and labels do not agree"):
        read_ids(tmp_path / "train")
