"""Reading a labelled corpus: `label<TAB>text` files, CSV with `label` and `text` columns, and
folders with one sub-folder per label holding one `.txt` per document.

Every problem a user can fix raises `DataError` naming the file and line. `encoding: auto` reads
UTF-8 (with or without BOM), else GB18030/GBK, and the report says which was used.
"""

from __future__ import annotations

import csv
import io
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from rnnpipe.config import IngestParams
from rnnpipe.errors import DataError

_WHITESPACE = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")


@dataclass(frozen=True)
class Document:
    """One labelled text and where it came from (`file:line`, for error messages)."""

    label: str
    text: str
    origin: str


@dataclass
class ReadReport:
    """What reading the raw corpus found besides documents."""

    format: str
    archive: str | None = None
    encodings: set[str] = field(default_factory=set)
    bad_lines: list[str] = field(default_factory=list)
    empty_texts: list[str] = field(default_factory=list)



def normalize_text(text: str) -> str:
    """Collapse all whitespace (tabs, newlines, mixed line endings) to single spaces."""
    return _WHITESPACE.sub(" ", text).strip()


def add_document(docs: list[Document], report: ReadReport, label: str, text: str,
                 origin: str) -> None:
    """Append a normalized document, or record an empty label or text in `report`."""
    label, text = normalize_text(label), normalize_text(text)
    if not label:
        report.bad_lines.append(origin)
    elif not text:
        report.empty_texts.append(origin)
    else:
        docs.append(Document(label, text, origin))


def _lines(text: str) -> list[str]:
    r"""Split on `\n`, `\r\n` or a lone `\r` only: `str.splitlines` would also split on form
    feeds, U+2028 and other separators, and then the line numbers in error messages would not
    be the ones an editor shows."""
    return _LINE_BREAK.split(text)


def _read_bytes(path: Path) -> bytes:
    """The bytes of the regular file `path`, or a `DataError` saying why they can't be read.

    A FIFO or a device would block or never end (`/dev/zero`), so only regular files are read.
    """
    try:
        mode = path.stat().st_mode
        if not stat.S_ISREG(mode):
            kind = "a directory" if stat.S_ISDIR(mode) else "not a regular file"
            raise DataError(f"{path}: cannot read: {kind} (expected a text file)")
        return path.read_bytes()
    except PermissionError:
        raise DataError(f"{path}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{path}: cannot read: {exc.strerror or exc}") from None


def decode(raw: bytes, encoding: str, name: str, report: ReadReport) -> str:
    """Decode `raw`; `auto` tries UTF-8 (with or without BOM), then GB18030 (a superset of GBK).

    The encoding that worked is recorded in `report` (it ends up in the summary and the CLI's
    last line), so a corpus silently read as GB18030 is visible.
    """
    candidates = ["utf-8-sig", "gb18030"] if encoding == "auto" else [encoding]
    first_error = ""
    for candidate in candidates:
        try:
            text = raw.decode(candidate)
        except LookupError:
            raise DataError(f"ingest.encoding: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            line = raw[: exc.start].count(b"\n") + 1
            if encoding != "auto":
                raise DataError(
                    f"{name}:{line}: not valid {encoding} ({exc.reason}); "
                    f"set ingest.encoding to the file's encoding or to auto"
                ) from None
            first_error = first_error or f"{name}:{line}"
            continue
        if "\x00" in text:
            line = text[: text.index("\x00")].count("\n") + 1
            raise DataError(f"{name}:{line}: contains NUL bytes; is it a text file (UTF-16 is "
                            f"read only with ingest.encoding: utf-16)?")
        report.encodings.add("utf-8" if candidate == "utf-8-sig" else candidate)
        return text
    raise DataError(f"{first_error}: neither UTF-8 nor GB18030 text (first invalid byte on "
                    f"this line); set ingest.encoding to the file's encoding")


def _read_tsv(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    text = decode(_read_bytes(path), params.encoding, str(path), report)
    docs: list[Document] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        label, sep, body = line.partition("\t")
        if not sep:
            report.bad_lines.append(f"{path}:{number}")
            continue
        add_document(docs, report, label, body, f"{path}:{number}")
    return docs


def _read_csv(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    text = decode(_read_bytes(path), params.encoding, str(path), report)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        fieldnames = reader.fieldnames
    except csv.Error as exc:
        raise DataError(f"{path}:1: malformed CSV header: {exc}") from None
    columns = [c.strip().lower() for c in fieldnames or []]
    if "label" not in columns or "text" not in columns:
        raise DataError(f"{path}:1: a CSV corpus needs a header with 'label' and 'text' columns, "
                        f"found {fieldnames}")
    reader.fieldnames = columns
    docs: list[Document] = []
    try:
        for row in reader:
            origin = f"{path}:{reader.line_num}"
            if row.get("label") is None or row.get("text") is None:
                report.bad_lines.append(origin)
                continue
            add_document(docs, report, row["label"], row["text"], origin)
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: malformed CSV: {exc}") from None
    return docs


def _read_folder(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    docs: list[Document] = []
    try:
        label_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
        if not label_dirs:
            raise DataError(f"{path}: a folder corpus needs one sub-folder per label; found none")
        for label_dir in label_dirs:
            for doc in sorted(label_dir.glob("*.txt")):
                text = decode(_read_bytes(doc), params.encoding, str(doc), report)
                add_document(docs, report, label_dir.name, text, str(doc))
    except PermissionError as exc:
        raise DataError(f"{exc.filename or path}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{exc.filename or path}: cannot read: {exc.strerror or exc}") from None
    return docs


READERS = {"tsv": _read_tsv, "csv": _read_csv, "folder": _read_folder}


def detect_format(path: Path) -> str:
    """`folder` for a directory, `csv` for `*.csv`, else `tsv` (the cnews `label<TAB>text`)."""
    if path.is_dir():
        return "folder"
    return "csv" if path.suffix.lower() == ".csv" else "tsv"


