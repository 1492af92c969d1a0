"""The ingest step: every input format end to end, the split, the summary, bad lines (error or
skip), and the corpora it cannot use, each with a message that says why; a failure writes
nothing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rnnpipe.config import IngestParams, Params
from rnnpipe.datafiles import read_split
from rnnpipe.errors import DataError
from rnnpipe.paths import SPLITS
from rnnpipe.steps import ingest as ingest_step
from rnnpipe.steps.ingest import describe, ingest


def run_ingest(tmp_path: Path, source, **kwargs) -> dict:
    params = IngestParams(source=str(source), **kwargs)
    return ingest(params, data_dir=tmp_path / "data", summary_path=tmp_path / "ingest.json")


def nothing_written(tmp_path: Path) -> bool:
    return not (tmp_path / "data").exists() and not (tmp_path / "ingest.json").exists()


def test_tsv_split_is_stratified_complete_and_seeded(tmp_path, zh_tsv):
    summary = run_ingest(tmp_path, zh_tsv, val_size=0.2, test_size=0.2)
    assert summary["splits"] == {"train": 48, "val": 16, "test": 16}
    assert summary["classes"] == {"neg": {"train": 24, "val": 8, "test": 8},
                                  "pos": {"train": 24, "val": 8, "test": 8}}
    texts = {name: read_split(tmp_path / "data" / f"{name}.tsv")[1] for name in SPLITS}
    assert not set(texts["train"]) & set(texts["test"])
    first = (tmp_path / "data" / "train.tsv").read_bytes()
    run_ingest(tmp_path, zh_tsv, val_size=0.2, test_size=0.2)
    assert (tmp_path / "data" / "train.tsv").read_bytes() == first
    saved = json.loads((tmp_path / "ingest.json").read_text())
    assert saved == summary
    assert saved["source"] == str(zh_tsv) and saved["format"] == "tsv"
    assert saved["encoding"] == ["utf-8"] and saved["archive"] is None
    assert saved["documents_read"] == saved["documents_kept"] == 80
    assert saved["dropped"] == {"duplicate": 0, "conflicting_label": 0, "bad_line": 0,
                                "empty_text": 0}
    run_ingest(tmp_path, zh_tsv, val_size=0.2, test_size=0.2, seed=1)
    assert (tmp_path / "data" / "train.tsv").read_bytes() != first


def test_csv_and_folder_formats(tmp_path, corpora):
    rows = corpora.en(n_per_class=5)
    csv_path = tmp_path / "news.csv"
    csv_path.write_text("label,text\n" + "".join(f'{l},"{t}, quoted"\n' for l, t in rows))
    summary = run_ingest(tmp_path, csv_path)
    assert summary["format"] == "csv" and summary["documents_kept"] == 25
    folder = tmp_path / "folder"
    for i, (label, text) in enumerate(rows):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i:03}.txt").write_text(text + "\nsecond line\n")
    summary = run_ingest(tmp_path, folder)
    assert summary["format"] == "folder" and set(summary["classes"]) == {l for l, _ in rows}
    labels, texts = read_split(tmp_path / "data" / "train.tsv")
    assert all("\n" not in t and t.endswith("second line") for t in texts)


def test_duplicates_and_conflicts_are_counted(tmp_path):
    rows = [("pos", f"好评{i}") for i in range(5)] + [("neg", f"差评{i}") for i in range(5)]
    extra = [rows[0], rows[0], rows[6], ("neg", "好评1")]  # 3 duplicates, 1 conflict with a row
    path = tmp_path / "c.tsv"
    path.write_text("".join(f"{l}\t{t}\n" for l, t in rows + extra), encoding="utf-8")
    summary = run_ingest(tmp_path, path)
    assert summary["documents_read"] == 14
    assert summary["dropped"]["duplicate"] == 3
    assert summary["dropped"]["conflicting_label"] == 2  # both copies of 好评1
    assert summary["documents_kept"] == 9
    assert "3 duplicates, 2 conflicting labels" in describe(summary)


def test_gb18030_corpus_is_detected(tmp_path, corpora):
    path = corpora.write(tmp_path / "gbk.tsv", corpora.zh(10), encoding="gb18030")
    summary = run_ingest(tmp_path, path)
    assert summary["encoding"] == ["gb18030"]
    assert "encoding gb18030" in describe(summary)
    text = (tmp_path / "data" / "train.tsv").read_text(encoding="utf-8")
    assert "质量" in text or "满意" in text or "失望" in text


def test_bom_and_mixed_line_endings(tmp_path, corpora):
    rows = corpora.zh(5)
    body = "\ufeff" + "".join(f"{l}\t{t}" + ("\r\n" if i % 2 else "\n") for i, (l, t) in
                              enumerate(rows))
    path = tmp_path / "bom.tsv"
    path.write_bytes(body.encode("utf-8"))
    run_ingest(tmp_path, path)
    labels, texts = read_split(tmp_path / "data" / "train.tsv")
    assert set(labels) == {"pos", "neg"} and not any("\r" in t or "\ufeff" in t for t in texts)


def test_bad_lines_error_or_skip(tmp_path, corpora):
    rows = corpora.zh(5)
    lines = [f"{l}\t{t}" for l, t in rows]
    lines.insert(3, "no separator here")
    lines.insert(6, "\tno label")
    path = tmp_path / "bad.tsv"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=r"bad\.tsv:4: malformed line .* 2 such line\(s\) in all"
                                        r"\. Fix them or set ingest\.on_bad_line: skip"):
        run_ingest(tmp_path, path)
    assert nothing_written(tmp_path)
    summary = run_ingest(tmp_path, path, on_bad_line="skip")
    assert summary["dropped"]["bad_line"] == 2
    assert summary["first_bad_lines"] == [f"{path}:4", f"{path}:7"]
    assert summary["documents_read"] == 12 and summary["documents_kept"] == 10


def test_empty_texts_error_or_skip(tmp_path, corpora):
    path = tmp_path / "c.tsv"
    path.write_text("".join(f"{l}\t{t}\n" for l, t in corpora.zh(5)) + "pos\t \n")
    with pytest.raises(DataError, match=r"c\.tsv:11: empty text; 1 such document\(s\) in all"):
        run_ingest(tmp_path, path)
    summary = run_ingest(tmp_path, path, on_bad_line="skip")
    assert summary["dropped"]["empty_text"] == 1
    assert summary["first_empty_texts"] == [f"{path}:11"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the corpus is empty"),
        ("\n \r\n\t\n", "the corpus is empty"),
        ("pos\t好的\npos\t很好\npos\t不错\npos\t棒\n", r"single label \('pos'\)"),
        ("pos\t好的\npos\t很好\npos\t不错\nneg\t差\nneg\t坏\n",
         r"label 'neg' has 2 document\(s\).*first at .*corpus\.tsv:4"),
        ("pos\t\nneg\t差\n", "empty text"),
    ],
)
def test_unusable_corpora(tmp_path, content, message):
    path = tmp_path / "corpus.tsv"
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        run_ingest(tmp_path, path)
    assert nothing_written(tmp_path)


def test_nothing_kept_says_what_was_dropped(tmp_path):
    """Every line bad, skipped: the message counts what was read and why each was dropped."""
    path = tmp_path / "c.tsv"
    path.write_text("one\ntwo\nthree\npos\t \n")
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, path, on_bad_line="skip")
    assert str(error.value) == (f"ingest.source: {path}: no document kept of 4 read (3 bad line, "
                                f"1 empty text)")
    assert nothing_written(tmp_path)
    path.write_text("pos\t好\npos\t好\nneg\t好\n")
    with pytest.raises(DataError, match=r"no document kept of 3 read \(3 conflicting label\)"):
        run_ingest(tmp_path, path)


@pytest.mark.parametrize("copies", [1, 2])
def test_swapped_columns_are_recognised(tmp_path, corpora, copies):
    """text<TAB>label instead of label<TAB>text: every "label" is a different sentence (and
    every "text" a real label, seen with many "labels": all of them conflicts)."""
    path = tmp_path / "swapped.tsv"
    path.write_text("".join(f"{text}\t{label}\n" for label, text in corpora.zh(20)) * copies)
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, path)
    message = str(error.value)
    assert message.startswith(f"ingest.source: {path}: ")
    assert "distinct labels among" in message
    assert "the label column looks like text; are the columns swapped? Lines are label<TAB>text" \
        in message
    assert nothing_written(tmp_path)


def test_many_real_labels_are_not_mistaken_for_swapped_columns(tmp_path):
    path = tmp_path / "many.tsv"
    path.write_text("".join(f"topic{i}\tdocument {i} number {j}\n" for i in range(25)
                            for j in range(3)))
    summary = run_ingest(tmp_path, path)
    assert len(summary["classes"]) == 25


def test_missing_source_and_wrong_declared_encoding(tmp_path, corpora):
    with pytest.raises(DataError, match="no such file"):
        run_ingest(tmp_path, tmp_path / "nope.tsv")
    path = corpora.write(tmp_path / "gbk.tsv", corpora.zh(5), encoding="gb18030")
    with pytest.raises(DataError, match=r"gbk\.tsv:1: not valid utf-8"):
        run_ingest(tmp_path, path, encoding="utf-8")
    assert nothing_written(tmp_path)


def test_main_notes_a_source_dvc_cannot_see(tmp_path, corpora, in_dir, capsys):
    in_dir(tmp_path)
    corpora.write(tmp_path / "outside.tsv", corpora.zh(5))
    corpora.write(tmp_path / "corpus" / "inside.tsv", corpora.zh(5))
    ingest_step.main(Params(ingest=IngestParams(source="outside.tsv")))
    captured = capsys.readouterr()
    assert "ingest: note: outside.tsv is outside corpus/, so DVC does not version it" \
        in captured.err
    assert captured.out.startswith("ingest: 10 read, 10 kept (0 duplicates")
    assert (tmp_path / "data" / "train.tsv").exists()
    assert (tmp_path / "reports" / "ingest.json").exists()
    ingest_step.main(Params(ingest=IngestParams(source="corpus/inside.tsv")))
    assert "note" not in capsys.readouterr().err
