"""Reading a corpus: `label<TAB>text` files, CSV and label folders; encodings (UTF-8 with or
without BOM, GB18030, a declared one); line endings; and the files that cannot be read."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from rnnpipe.config import IngestParams
from rnnpipe.corpus.readers import (
    READERS,
    STREAM_READERS,
    Decisions,
    ReadReport,
    Reread,
    add_document,
    decode,
    detect_format,
    normalize_text,
    tsv_documents,
)
from rnnpipe.errors import DataError


def read(path: Path, fmt: str | None = None, **params) -> tuple[list, ReadReport]:
    fmt = fmt or detect_format(path)
    report = ReadReport(format=fmt)
    return READERS[fmt](path, IngestParams(source=str(path), **params), report), report


def test_detect_format(tmp_path):
    (tmp_path / "folder").mkdir()
    assert detect_format(tmp_path / "folder") == "folder"
    assert detect_format(tmp_path / "news.CSV") == "csv"
    assert detect_format(tmp_path / "news.tsv") == "tsv"
    assert detect_format(tmp_path / "news.txt") == "tsv"


def test_normalize_text_collapses_every_kind_of_whitespace():
    assert normalize_text(" a\tb\r\nc\rd\n\n e\u3000f\x0b ") == "a b c d e f"


def test_add_document_records_empty_labels_and_texts():
    docs, report = [], ReadReport(format="tsv")
    add_document(docs, report, " pos ", " 好 \n 书 ", "f:1")
    add_document(docs, report, " ", "text", "f:2")
    add_document(docs, report, "neg", " \t ", "f:3")
    assert [(d.label, d.text, d.origin) for d in docs] == [("pos", "好 书", "f:1")]
    assert report.bad_lines == ["f:2"] and report.empty_texts == ["f:3"]


def test_tsv_with_bom_and_mixed_line_endings(tmp_path, corpora):
    rows = corpora.zh(5)
    body = "\ufeff" + "".join(f"{label}\t{text}" + ("\r\n" if i % 2 else "\n")
                              for i, (label, text) in enumerate(rows))
    path = tmp_path / "bom.tsv"
    path.write_bytes(body.encode("utf-8"))
    docs, report = read(path)
    assert [(d.label, d.text) for d in docs] == rows
    assert report.encodings == {"utf-8"}
    assert docs[0].origin == f"{path}:1" and docs[-1].origin == f"{path}:{len(rows)}"


def test_line_numbers_count_only_real_line_breaks(tmp_path):
    """A form feed or U+2028 inside a text does not start a line (editors agree)."""
    path = tmp_path / "c.tsv"
    path.write_text("pos\tone\x0cpage\u2028two\nneg\ttext\rneg\n\npos\tlast\n", encoding="utf-8")
    docs, report = read(path)
    assert [(d.text, d.origin) for d in docs] == [("one page two", f"{path}:1"),
                                                  ("text", f"{path}:2"),
                                                  ("last", f"{path}:5")]
    assert report.bad_lines == [f"{path}:3"]


def test_a_tab_inside_the_text_stays_in_the_text(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_text("pos\ta\tb\n", encoding="utf-8")
    docs, _ = read(path)
    assert docs[0].text == "a b"


def test_gb18030_is_detected(tmp_path, corpora):
    rows = corpora.zh(5)
    path = corpora.write(tmp_path / "gbk.tsv", rows, encoding="gb18030")
    docs, report = read(path)
    assert report.encodings == {"gb18030"}
    assert [(d.label, d.text) for d in docs] == rows


def test_a_declared_encoding_is_used(tmp_path):
    path = tmp_path / "big5.tsv"
    path.write_bytes("pos\t很好\nneg\t很差\n".encode("big5"))
    docs, report = read(path, encoding="big5")
    assert [d.text for d in docs] == ["很好", "很差"] and report.encodings == {"big5"}


def test_a_wrong_declared_encoding_names_file_and_line(tmp_path, corpora):
    path = corpora.write(tmp_path / "gbk.tsv", corpora.zh(5), encoding="gb18030")
    with pytest.raises(DataError, match=r"gbk\.tsv:1: not valid utf-8 .*set ingest\.encoding"):
        read(path, encoding="utf-8")


def test_neither_utf8_nor_gb18030_names_the_line(tmp_path):
    path = tmp_path / "c.tsv"
    path.write_bytes(b"pos\tfine\nneg\tfine too\npos\t\x80\xff\xfe\n")
    with pytest.raises(DataError, match=r"c\.tsv:3: neither UTF-8 nor GB18030"):
        read(path)


def test_nul_bytes_say_what_the_file_probably_is(tmp_path):
    path = tmp_path / "utf16.tsv"
    path.write_bytes("pos\tgood\nneg\tbad\n".encode("utf-16-le"))
    with pytest.raises(DataError, match=r"utf16\.tsv:1: contains NUL bytes.*UTF-16"):
        read(path)
    docs, _ = read(path, encoding="utf-16-le")
    assert [d.label for d in docs] == ["pos", "neg"]


def test_unknown_encoding_at_read_time():
    with pytest.raises(DataError, match="unknown encoding 'klingon'"):
        decode(b"x", "klingon", "c.tsv", ReadReport(format="tsv"))


def test_csv_with_quotes_commas_and_newlines(tmp_path, corpora):
    rows = corpora.en(n_per_class=2)
    path = tmp_path / "news.csv"
    path.write_text(" Label ,TEXT,id\n" + "".join(
        f'{label},"{text}, quoted\n""and"" more",{i}\n' for i, (label, text) in enumerate(rows)),
        encoding="utf-8")
    docs, report = read(path)
    assert report.format == "csv"
    assert [(d.label, d.text) for d in docs] == [
        (label, f'{text}, quoted "and" more') for label, text in rows]
    assert docs[1].origin == f"{path}:5"  # the reader's line: each record spans two lines


def test_csv_rows_missing_a_column_are_bad_lines(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("label,text\npos,good\nneg\n,no label\npos,\n", encoding="utf-8")
    docs, report = read(path)
    assert [d.text for d in docs] == ["good"]
    assert report.bad_lines == [f"{path}:3", f"{path}:4"]
    assert report.empty_texts == [f"{path}:5"]


def test_csv_without_the_columns(tmp_path):
    path = tmp_path / "c.csv"
    path.write_text("category,body\npos,good\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"c\.csv:1: a CSV corpus needs a header with 'label' "
                                        r"and 'text' columns, found \['category', 'body'\]"):
        read(path)


def test_label_folders(tmp_path, corpora):
    rows = corpora.en(n_per_class=2)
    folder = tmp_path / "folder"
    for i, (label, text) in enumerate(rows):
        (folder / label).mkdir(parents=True, exist_ok=True)
        (folder / label / f"{i:03}.txt").write_text(text + "\nsecond line\r\n", encoding="utf-8")
    (folder / ".git").mkdir()
    (folder / ".git" / "x.txt").write_text("not a label")
    (folder / "sports" / "notes.md").write_text("not a document")
    docs, report = read(folder)
    assert report.format == "folder"
    assert sorted(d.label for d in docs) == sorted(label for label, _ in rows)
    assert all(d.text.endswith(" second line") and "\n" not in d.text for d in docs)
    assert all(d.origin.endswith(".txt") for d in docs)


def test_a_folder_without_label_folders(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.txt").write_text("x")
    with pytest.raises(DataError, match="needs one sub-folder per label; found none"):
        read(tmp_path / "flat")


def test_unreadable_sources(tmp_path, corpora, monkeypatch):
    """Folders where a file is expected and FIFOs (which would block) fail at once. Tests may
    run as root, where `chmod 000` does not stop a read; the permission case is simulated."""
    folder = tmp_path / "folder.tsv"
    folder.mkdir()
    with pytest.raises(DataError, match=r"folder\.tsv: cannot read: a directory"):
        read(folder, "tsv")
    fifo = tmp_path / "pipe.tsv"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match=r"pipe\.tsv: cannot read: not a regular file"):
        read(fifo)
    corpus = tmp_path / "corpus"
    (corpus / "pos").mkdir(parents=True)
    (corpus / "pos" / "a.txt").mkdir()  # a folder named like a document
    with pytest.raises(DataError, match=r"a\.txt: cannot read: a directory"):
        read(corpus)

    path = corpora.write(tmp_path / "c.tsv", corpora.zh(5))
    (corpus / "pos" / "a.txt").rmdir()
    (corpus / "pos" / "b.txt").write_text("好")

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(Path, "read_bytes", denied)
    with pytest.raises(DataError, match=r"b\.txt: cannot read: permission denied"):
        read(corpus)
    monkeypatch.setattr("builtins.open", denied)
    with pytest.raises(DataError, match=r"c\.tsv: cannot read: permission denied"):
        read(path)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_permission_denied_for_real(tmp_path, corpora):
    path = corpora.write(tmp_path / "c.tsv", corpora.zh(5))
    path.chmod(0)
    with pytest.raises(DataError, match="permission denied"):
        read(path)


# --- streaming ------------------------------------------------------------------------------

def stream(data: bytes, block: int, fmt: str = "tsv", encoding: str = "auto") -> tuple[list,
                                                                                      ReadReport]:
    """Read `data` as a stream of `block`-byte blocks, starting over on `Reread` as ingest does."""
    decisions, params = Decisions(), IngestParams(encoding=encoding)
    blocks = [data[i:i + block] for i in range(0, len(data), block)]
    while True:
        report = ReadReport(format=fmt)
        try:
            return list(STREAM_READERS[fmt](lambda: iter(blocks), "c", params, report,
                                            decisions)), report
        except Reread:
            continue


def test_documents_come_one_at_a_time():
    """A reader is a generator: the first document is there before the stream is read on."""
    consumed = []

    def blocks():
        for i in range(1000):
            consumed.append(i)
            yield f"pos\t好评{i}\n".encode()

    docs = tsv_documents(blocks, "c", IngestParams(), ReadReport(format="tsv"), Decisions())
    assert next(docs).text == "好评0" and len(consumed) <= 2


@pytest.mark.parametrize("block", [1, 2, 3, 5, 64])
def test_any_block_size_reads_the_same(block):
    """Line breaks (`\\r\\n` too), multi-byte characters and a BOM split across blocks."""
    body = "\ufeffpos\t好\r\nneg\t差评\r\rpos\tok\u2028fine\nneg\t\n\t孤\rpos\t尾"
    whole, report = stream(body.encode(), 1 << 20)
    assert [(d.label, d.text, d.origin) for d in whole] == [
        ("pos", "好", "c:1"), ("neg", "差评", "c:2"), ("pos", "ok fine", "c:4"),
        ("pos", "尾", "c:7")]
    assert (report.bad_lines, report.empty_texts) == (["c:6"], ["c:5"])
    assert stream(body.encode(), block)[0] == whole
    csv_body = b'label,text\npos,"a\r\nb"\r\nneg,"c, d"\rpos,e'
    assert [(d.text, d.origin) for d in stream(csv_body, block, "csv")[0]] == [
        ("a b", "c:3"), ("c, d", "c:4"), ("e", "c:5")]


@pytest.mark.parametrize("block", [4, 1 << 20])
def test_auto_reads_a_stream_as_utf8_then_restarts_once_as_gb18030(block):
    """The first lines are ASCII (valid UTF-8, already yielded): the first GB18030 line makes the
    reader start over with GB18030, once."""
    body = "pos\tgood\nneg\tbad\n" * 3 + "pos\t质量很好\nneg\t太差了\n"
    docs, report = stream(body.encode("gb18030"), block)
    assert [d.text for d in docs][-2:] == ["质量很好", "太差了"] and len(docs) == 8
    assert report.encodings == {"gb18030"}
    with pytest.raises(DataError, match=r"^c:7: not valid utf-8 .*set ingest\.encoding"):
        stream(body.encode("gb18030"), block, encoding="utf-8")


def test_neither_encoding_names_the_line_where_utf8_failed():
    body = b"pos\tfine\n" * 5 + b"neg\t\x81\x30\n" + b"pos\t\xff\xff\n"  # not UTF-8, not GB18030
    with pytest.raises(DataError, match=r"^c:6: neither UTF-8 nor GB18030"):
        stream(body, 7)
