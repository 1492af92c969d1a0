"""The ingest step: every input format end to end, the split, the summary, bad lines (error or
skip), and the corpora it cannot use, each with a message that says why; a failure writes
nothing."""

from __future__ import annotations

import json
import random
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from rnnpipe import heartbeat
from rnnpipe.config import IngestParams, Params
from rnnpipe.corpus import readers, sources
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


# --- streaming: the same splits as holding every document, in a few bytes per document -------

def reference_splits(rows: list[tuple[str, str]], val_size: float, test_size: float,
                     seed: int) -> dict[str, bytes]:
    """The split files as ingest wrote them when it held every document (rnnpipe <= 0.2)."""
    labels_of: dict[str, set[str]] = {}
    for label, text in rows:
        labels_of.setdefault(text, set()).add(label)
    seen, kept = set(), []
    for label, text in rows:
        if len(labels_of[text]) == 1 and text not in seen:
            seen.add(text)
            kept.append((label, text))
    by_label: dict[str, list] = {}
    for row in kept:
        by_label.setdefault(row[0], []).append(row)
    rng = np.random.default_rng(seed)
    splits = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        order = rng.permutation(len(group))
        n_test = min(max(1, round(len(group) * test_size)), len(group) - 2)
        n_val = min(max(1, round(len(group) * val_size)), len(group) - n_test - 1)
        picked = [group[i] for i in order]
        splits["test"] += picked[:n_test]
        splits["val"] += picked[n_test:n_test + n_val]
        splits["train"] += picked[n_test + n_val:]
    for name in SPLITS:
        order = rng.permutation(len(splits[name]))
        splits[name] = [splits[name][i] for i in order]
    return {name: "".join(f"{l}\t{t}\n" for l, t in splits[name]).encode() for name in SPLITS}


@pytest.mark.parametrize("seed", range(6))
def test_splits_are_those_of_holding_every_document(tmp_path, seed):
    """Duplicates, conflicts, uneven labels: byte for byte the splits of the in-memory
    algorithm, and every label in every split in the same proportions."""
    rng = random.Random(seed)
    labels = ["体育", "财经", "科技", "a"][: rng.randint(2, 4)]
    rows = [(rng.choice(labels), f"文本 {rng.randint(0, 400)} {'好' * rng.randint(1, 3)}")
            for _ in range(rng.randint(100, 600))]
    path = tmp_path / "c.tsv"
    path.write_text("".join(f"{l}\t{t}\n" for l, t in rows), encoding="utf-8")
    val_size, test_size = rng.choice([(0.1, 0.1), (0.2, 0.15), (0.05, 0.3)])
    summary = run_ingest(tmp_path, path, val_size=val_size, test_size=test_size, seed=seed)
    expected = reference_splits(rows, val_size, test_size, seed)
    for name in SPLITS:
        assert (tmp_path / "data" / f"{name}.tsv").read_bytes() == expected[name], name
    for label, counts in summary["classes"].items():
        assert min(counts.values()) >= 1, label
    assert sum(summary["splits"].values()) == summary["documents_kept"]


def test_a_corpus_that_changes_between_the_two_readings(tmp_path, monkeypatch):
    path = tmp_path / "c.tsv"
    path.write_text("".join(f"{'pos' if i % 2 else 'neg'}\t第{i}条\n" for i in range(30)))
    readings = []
    original = sources.file_chunks

    def file_chunks(p):
        readings.append(p)
        if len(readings) == 2:  # the second pass reads other text
            return lambda: iter([b"pos\tchanged\n" * 30])
        return original(p)

    monkeypatch.setattr(sources, "file_chunks", file_chunks)
    with pytest.raises(DataError, match=r"c\.tsv: changed while it was being read; run ingest"):
        run_ingest(tmp_path, path)
    assert not (tmp_path / "ingest.json").exists()
    assert not [p for p in (tmp_path / "data").iterdir() if p.is_file()]


def test_progress_lines_in_a_log(tmp_path, zh_tsv, monkeypatch, capsys):
    monkeypatch.setattr(heartbeat, "LINE_EVERY_S", 0.0)
    run_ingest(tmp_path, zh_tsv)
    err = capsys.readouterr().err
    assert "ingest: reading: " in err and "documents/s" in err
    assert "ingest: writing splits: " in err and "of 80 (" in err and "s left" in err


def peak_bytes(tmp_path: Path, n: int) -> int:
    """tracemalloc's peak while ingesting `n` distinct documents."""
    path = tmp_path / f"c{n}.tsv"
    path.write_text("".join(f"{'pos' if i % 3 else 'neg'}\t文档 {i} {'内容' * (i % 20)}\n"
                            for i in range(n)), encoding="utf-8")
    tracemalloc.start()
    try:
        run_ingest(tmp_path / str(n), path)
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_per_document_is_a_few_bytes(tmp_path, monkeypatch):
    """Holding every document costs hundreds of bytes each; ingest keeps 22 (hash, label id,
    line length), ~28 at its peak. (Blocks of 4 kB: the lines of one 1 MB block,
    held while it is parsed, would hide the per-document cost at these sizes.)"""
    monkeypatch.setattr(readers, "BLOCK", 4096)
    peak_bytes(tmp_path, 200)  # the first run imports what the others find imported
    small, large = peak_bytes(tmp_path, 5_000), peak_bytes(tmp_path, 45_000)
    per_document = (large - small) / 40_000
    assert per_document < 40, f"{per_document:.0f} bytes per document"
