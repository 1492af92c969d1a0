"""Reading a labelled corpus as a stream of documents: `label<TAB>text` files, CSV with `label`
and `text` columns, and folders with one sub-folder per label holding one `.txt` per document.

Readers are generators over byte streams (`Chunks`: a function returning an iterator of byte
blocks), so a corpus of any size is read in flat memory, and can be read twice (ingest does).
Every problem a user can fix raises `DataError` naming the file and line. `encoding: auto` reads a
stream as UTF-8 (with or without BOM); if that fails part-way, reading restarts once with
GB18030/GBK (`Reread`), and the report says which was used.
"""

from __future__ import annotations

import codecs
import csv
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rnnpipe.config import IngestParams
from rnnpipe.errors import DataError

_WHITESPACE = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"(\r\n|\r|\n)")  # only these start a line (editors agree)
BLOCK = 1 << 20  # bytes read at a time
FIRST_ORIGINS = 10  # how many bad lines / empty texts a report names

Chunks = Callable[[], Iterator[bytes]]  # opens a byte stream (again) as blocks


@dataclass(frozen=True)
class Document:
    """One labelled text and where it came from (`file:line`, for error messages)."""

    label: str
    text: str
    origin: str


@dataclass
class ReadReport:
    """What reading the raw corpus found besides documents: counts, and the first few origins."""

    format: str
    archive: str | None = None
    encodings: set[str] = field(default_factory=set)
    bad_lines: list[str] = field(default_factory=list)  # the first FIRST_ORIGINS
    empty_texts: list[str] = field(default_factory=list)
    bad_line_count: int = 0
    empty_text_count: int = 0

    def bad(self, origin: str) -> None:
        """Count a malformed line (no separator, empty label)."""
        self.bad_line_count += 1
        if len(self.bad_lines) < FIRST_ORIGINS:
            self.bad_lines.append(origin)

    def empty(self, origin: str) -> None:
        """Count a document whose text is empty."""
        self.empty_text_count += 1
        if len(self.empty_texts) < FIRST_ORIGINS:
            self.empty_texts.append(origin)


class Reread(Exception):
    """Raised by a reader in `encoding: auto` when a stream it began as UTF-8 turns out not to
    be: whoever iterates the documents starts over (once); the stream is then read as GB18030."""


def normalize_text(text: str) -> str:
    """Collapse all whitespace (tabs, newlines, mixed line endings) to single spaces."""
    return _WHITESPACE.sub(" ", text).strip()


def make_document(report: ReadReport, label: str, text: str, origin: str) -> Document | None:
    """A normalized document, or None after recording an empty label or text in `report`."""
    label, text = normalize_text(label), normalize_text(text)
    if not label:
        report.bad(origin)
    elif not text:
        report.empty(origin)
    else:
        return Document(label, text, origin)
    return None


def add_document(docs: list[Document], report: ReadReport, label: str, text: str,
                 origin: str) -> None:
    """Append a normalized document, or record an empty label or text in `report`."""
    doc = make_document(report, label, text, origin)
    if doc is not None:
        docs.append(doc)


def _check_regular(path: Path) -> None:
    """Only regular files are read: a FIFO or a device would block or never end (`/dev/zero`)."""
    try:
        mode = path.stat().st_mode
    except PermissionError:
        raise DataError(f"{path}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
        raise DataError(f"{path}: cannot read: {kind} (expected a text file)")


def _read_bytes(path: Path) -> bytes:
    """The bytes of the regular file `path` (one document of a folder corpus)."""
    _check_regular(path)
    try:
        return path.read_bytes()
    except PermissionError:
        raise DataError(f"{path}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def file_chunks(path: Path) -> Chunks:
    """`path` as a re-openable stream of blocks, with one-line errors."""
    def chunks() -> Iterator[bytes]:
        _check_regular(path)
        try:
            with open(path, "rb") as fh:
                while block := fh.read(BLOCK):
                    yield block
        except PermissionError:
            raise DataError(f"{path}: cannot read: permission denied") from None
        except OSError as exc:
            raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None
    return chunks


def _candidates(encoding: str) -> list[str]:
    return ["utf-8-sig", "gb18030"] if encoding == "auto" else [encoding]


def _report_encoding(report: ReadReport, codec: str) -> None:
    report.encodings.add("utf-8" if codec == "utf-8-sig" else codec)


def decode(raw: bytes, encoding: str, name: str, report: ReadReport) -> str:
    """Decode `raw` (one small file); `auto` tries UTF-8 (with or without BOM), then GB18030
    (a superset of GBK). The encoding that worked is recorded in `report` (it ends up in the
    summary and the CLI's last line), so a corpus silently read as GB18030 is visible."""
    first_error = ""
    for candidate in _candidates(encoding):
        try:
            text = raw.decode(candidate)
        except LookupError:
            raise DataError(f"ingest.encoding: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            if encoding != "auto":
                raise _not_valid(name, line, encoding, exc) from None
            first_error = first_error or f"{name}:{line}"
            continue
        if "\x00" in text:
            raise _nul(name, text[: text.index("\x00")].count("\n") + 1)
        _report_encoding(report, candidate)
        return text
    raise _neither(first_error)


def _not_valid(name: str, line: int, encoding: str, exc: UnicodeDecodeError) -> DataError:
    return DataError(f"{name}:{line}: not valid {encoding} ({exc.reason}); set ingest.encoding to "
                     f"the file's encoding or to auto")


def _nul(name: str, line: int) -> DataError:
    return DataError(f"{name}:{line}: contains NUL bytes; is it a text file (UTF-16 is read only "
                     f"with ingest.encoding: utf-16)?")


def _neither(where: str) -> DataError:
    return DataError(f"{where}: neither UTF-8 nor GB18030 text (first invalid byte on this line); "
                     f"set ingest.encoding to the file's encoding")


@dataclass
class Decisions:
    """The encoding each stream turned out to have (`auto`), kept across readings of a corpus:
    name → (codec, where UTF-8 first failed)."""

    codecs: dict[str, tuple[str, str]] = field(default_factory=dict)


def lines(chunks: Chunks, encoding: str, name: str, report: ReadReport,
          decisions: Decisions) -> Iterator[str]:
    r"""The decoded lines of a stream, each with its line break (`\n`, `\r\n` or a lone `\r`;
    `str.splitlines` would also split on form feeds and U+2028, and then line numbers in messages
    would not be the ones an editor shows). Blocks are cut after their last `\n` byte, which
    never occurs inside a UTF-8 or GB18030 character, so a decoding error is placed exactly."""
    codec, first_error = decisions.codecs.get(name, (_candidates(encoding)[0], ""))
    try:
        decoder = codecs.getincrementaldecoder(codec)()
    except LookupError:
        raise DataError(f"ingest.encoding: unknown encoding {encoding!r}") from None
    newlines = 0  # `\n` bytes before the block (for the line of a decoding error)
    text_newlines = 0  # `\n` characters before the block (for the line of a NUL)
    carry, pending = "", b""
    blocks = chunks()
    while True:
        block = next(blocks, None)
        final = block is None
        data = pending + (block or b"")
        cut = len(data) if final else data.rfind(b"\n") + 1
        data, pending = data[:cut], data[cut:]
        if not data and not final:
            continue
        try:
            text = decoder.decode(data, final)
        except UnicodeDecodeError as exc:
            line = newlines + data[: max(0, exc.start)].count(b"\n") + 1
            if encoding != "auto":
                raise _not_valid(name, line, encoding, exc) from None
            if codec != "utf-8-sig":
                raise _neither(first_error) from None
            decisions.codecs[name] = ("gb18030", f"{name}:{line}")
            raise Reread(name) from None
        newlines += data.count(b"\n")
        if "\x00" in text:
            raise _nul(name, text_newlines + text[: text.index("\x00")].count("\n") + 1)
        text_newlines += text.count("\n")
        buffer = carry + text
        hold = ""
        if not final and buffer.endswith("\r"):  # maybe the first half of `\r\n`
            buffer, hold = buffer[:-1], "\r"
        parts = _LINE_BREAK.split(buffer)
        carry = parts.pop() + hold
        for i in range(0, len(parts), 2):
            yield parts[i] + parts[i + 1]
        if final:
            if carry:
                yield carry
            _report_encoding(report, codec)
            return


def tsv_documents(chunks: Chunks, name: str, params: IngestParams, report: ReadReport,
                  decisions: Decisions) -> Iterator[Document]:
    """`label<TAB>text` lines; a line without a tab (or with an empty label) is a bad line."""
    number = 0
    for number, line in enumerate(lines(chunks, params.encoding, name, report, decisions), 1):
        line = line.rstrip("\r\n")
        if not line.strip():
            continue
        label, sep, body = line.partition("\t")
        if not sep:
            report.bad(f"{name}:{number}")
            continue
        doc = make_document(report, label, body, f"{name}:{number}")
        if doc is not None:
            yield doc


def csv_documents(chunks: Chunks, name: str, params: IngestParams, report: ReadReport,
                  decisions: Decisions) -> Iterator[Document]:
    """CSV with a header naming `label` and `text` columns (any case, any order, others ignored);
    quoted fields may span lines."""
    reader = csv.reader(lines(chunks, params.encoding, name, report, decisions))
    try:
        fieldnames = next(reader, None)
    except csv.Error as exc:
        raise DataError(f"{name}:1: malformed CSV header: {exc}") from None
    columns = [c.strip().lower() for c in fieldnames or []]
    if "label" not in columns or "text" not in columns:
        raise DataError(f"{name}:1: a CSV corpus needs a header with 'label' and 'text' columns, "
                        f"found {fieldnames}")
    label_at, text_at = columns.index("label"), columns.index("text")
    try:
        for row in reader:
            if not row:  # csv.DictReader skips empty rows too
                continue
            origin = f"{name}:{reader.line_num}"
            if len(row) <= max(label_at, text_at):
                report.bad(origin)
                continue
            doc = make_document(report, row[label_at], row[text_at], origin)
            if doc is not None:
                yield doc
    except csv.Error as exc:
        raise DataError(f"{name}:{reader.line_num}: malformed CSV: {exc}") from None


def folder_documents(path: Path, params: IngestParams, report: ReadReport,
                     decisions: Decisions) -> Iterator[Document]:
    """One sub-folder per label (hidden ones ignored), one `.txt` per document, in name order.
    Only the names of one label's files are held at a time."""
    try:
        label_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not label_dirs:
            raise DataError(f"{path}: a folder corpus needs one sub-folder per label; found none")
        for label_dir in label_dirs:
            with os.scandir(label_dir) as entries:
                names = sorted(e.name for e in entries if e.name.endswith(".txt"))
            for file_name in names:
                doc_path = label_dir / file_name
                text = decode(_read_bytes(doc_path), params.encoding, str(doc_path), report)
                doc = make_document(report, label_dir.name, text, str(doc_path))
                if doc is not None:
                    yield doc
    except PermissionError as exc:
        raise DataError(f"{exc.filename or path}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{exc.filename or path}: cannot read: {exc.strerror or exc}") from None


STREAM_READERS = {"tsv": tsv_documents, "csv": csv_documents}


def _read_file(fmt: str) -> Callable[..., list[Document]]:
    def read(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
        decisions = Decisions()
        while True:
            try:
                return list(STREAM_READERS[fmt](file_chunks(path), str(path), params, report,
                                                decisions))
            except Reread:
                report.bad_lines.clear()
                report.empty_texts.clear()
                report.bad_line_count = report.empty_text_count = 0
    return read


def _read_folder(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    return list(folder_documents(path, params, report, Decisions()))


# Whole corpora as lists, for small inputs and tests; the ingest step streams (`sources.Corpus`).
READERS = {"tsv": _read_file("tsv"), "csv": _read_file("csv"), "folder": _read_folder}


def detect_format(path: Path | str, is_dir: bool | None = None) -> str:
    """`folder` for a directory, `csv` for `*.csv`, else `tsv` (the cnews `label<TAB>text`)."""
    if is_dir if is_dir is not None else Path(path).is_dir():
        return "folder"
    return "csv" if str(path).lower().endswith(".csv") else "tsv"


def chain(streams: Iterable[Iterator[Document]]) -> Iterator[Document]:
    """One stream of documents from several."""
    for stream in streams:
        yield from stream
