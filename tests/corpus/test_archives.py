"""Corpus archives: a zip or tar holding one TSV/CSV file or a label-folder corpus is read;
members that would land outside the extraction folder are refused and named; broken, empty or
ambiguous archives are one clear error; nothing is left behind."""

from __future__ import annotations

import io
import re
import struct
import tarfile
import time
import zipfile
from pathlib import Path

import pytest

from rnnpipe.config import IngestParams
from rnnpipe.corpus.archives import archive_kind, find_corpus, tree_of
from rnnpipe.datafiles import read_split
from rnnpipe.errors import DataError
from rnnpipe.paths import SPLITS
from rnnpipe.steps.ingest import ingest

LABELS = ("pos", "neg")
TSV_OK = "".join(f"{LABELS[i % 2]}\t第{i}条评论，质量{'很好' if i % 2 == 0 else '太差'}\n"
                 for i in range(10))
EN_ROWS = [(label, f"{label} headline number {i}") for i in range(4)
           for label in ("sports", "business", "science", "politics", "tech")]


def _tar(members: dict[str, bytes | tuple[str, str]]) -> bytes:
    """A .tar.gz; a tuple value `(kind, target)` is a `sym` or `hard` link."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tf:
        for name, content in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(content, tuple):
                kind, target = content
                info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
                info.linkname = target
                tf.addfile(info)
            else:
                info.size = len(content)
                tf.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _zip(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for name, content in members.items():
            zf.writestr(zipfile.ZipInfo(name), content)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)  # S_IFLNK | 0777
            zf.writestr(info, target)
    return buffer.getvalue()


def _folder_members(prefix: str) -> dict[str, bytes]:
    return {f"{prefix}{label}/{i:03}.txt": text.encode() for i, (label, text) in enumerate(EN_ROWS)}


def leftovers(root: Path) -> list[str]:
    return [str(p.relative_to(root)) for p in root.rglob("*") if ".tmp" in p.name]


def run_ingest(root: Path, source: Path | str, **kwargs) -> dict:
    params = IngestParams(source=str(source), val_size=0.2, test_size=0.2, **kwargs)
    return ingest(params, data_dir=root / "data", summary_path=root / "reports" / "ingest.json")


@pytest.mark.parametrize(("name", "kind"), [
    ("a.zip", "zip"), ("a.ZIP", "zip"), ("a.tar", "tar"), ("a.tar.gz", "tar"), ("a.tgz", "tar"),
    ("a.tar.bz2", "tar"), ("a.tbz2", "tar"), ("a.tar.xz", "tar"), ("a.txz", "tar"),
    ("a.tsv", None), ("a.gz", None), ("tar", None)])
def test_archive_kind(name, kind):
    assert archive_kind(Path(name)) == kind


@pytest.mark.parametrize(("name", "payload"), [
    ("news.zip", _zip({"news.tsv": TSV_OK.encode()})),
    ("news.tar.gz", _tar({"news.tsv": TSV_OK.encode()})),
    ("news.tgz", _tar({"wrapper/news.csv": ("label,text\n" + TSV_OK.replace("\t", ",")).encode(),
                       "wrapper/.DS_Store": b"\x00"})),
    ("notes.zip", _zip({"data/c.tsv": TSV_OK.encode(), "data/notes.md": b"x"})),
    ("folders.zip", _zip({**_folder_members("cnews/"), "__MACOSX/._x": b"\x00"})),
    ("folders.tar", _tar(_folder_members("a/b/"))),
])
def test_archives_hold_a_file_or_a_label_folder_corpus(tmp_path, name, payload):
    archive = tmp_path / name
    archive.write_bytes(payload)
    summary = run_ingest(tmp_path, archive)
    assert summary["archive"] == ("zip" if name.endswith(".zip") else "tar")
    assert summary["documents_kept"] in (10, 20)
    assert sum(len(read_split(tmp_path / "data" / f"{s}.tsv")[0])
               for s in SPLITS) == summary["documents_kept"]
    assert not leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["data", "reports", name])


def test_find_corpus_looks_through_wrapping_folders():
    found = find_corpus(tree_of(["a/b/pos/", "a/b/neg/1.txt", ".hidden/x.tsv"]), "x.zip")
    assert found.path == "a/b" and found.is_dir
    found = find_corpus(tree_of(["only/c.tsv", "__MACOSX/._c.tsv"]), "x.zip")
    assert found.path == "only/c.tsv" and not found.is_dir
    assert find_corpus(tree_of(["./d/c.tsv", "./d/notes.md"]), "x.zip").path == "d/c.tsv"


def test_archive_members_are_named_in_bad_line_reports(tmp_path):
    archive = tmp_path / "c.zip"
    archive.write_bytes(_zip({"inner/c.tsv": (TSV_OK + "no separator\n").encode()}))
    with pytest.raises(DataError, match=rf"{re.escape(str(archive))}!inner/c.tsv:11: malformed"):
        run_ingest(tmp_path, archive)
    summary = run_ingest(tmp_path, archive, on_bad_line="skip")
    assert summary["first_bad_lines"] == [f"{archive}!inner/c.tsv:11"]
    assert all("rnnpipe-extract-" not in line
               for line in (tmp_path / "data" / "train.tsv").read_text().splitlines())


def test_archive_errors_name_the_member_not_the_temporary_folder(tmp_path):
    archive = tmp_path / "c.tar.gz"
    archive.write_bytes(_tar({"c.tsv": "pos\tgood\n".encode("utf-16-le")}))
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, archive)
    assert str(error.value).startswith(f"{archive}!c.tsv:1: contains NUL bytes")
    assert "rnnpipe-extract-" not in str(error.value)


@pytest.mark.parametrize(("payload", "member", "why"), [
    (_tar({"../x.tsv": b"pos\tx\n"}), "../x.tsv", "'..'"),
    (_tar({"a/../../x.tsv": b"pos\tx\n"}), "a/../../x.tsv", "'..'"),
    (_tar({"/tmp/x.tsv": b"pos\tx\n"}), "/tmp/x.tsv", "absolute path"),
    (_tar({"link": ("sym", "/etc")}), "link", "symlink to '/etc'"),
    (_tar({"a/link": ("sym", "../../outside")}), "a/link", "symlink"),
    (_tar({"hard": ("hard", "../../etc/passwd")}), "hard", "hard link"),
    # Each link alone looks harmless; through `d` → `.`, `d/d/d/l` points above the target.
    # tarfile's data filter, checking the real file system, catches it.
    (_tar({"d": ("sym", "."), "d/d/d/l": ("sym", "../../../outside")}), "d/d/d/l",
     "outside the destination"),
    (_zip({"../x.tsv": b"pos\tx\n"}), "../x.tsv", "'..'"),
    (_zip({"/abs/x.tsv": b"pos\tx\n"}), "/abs/x.tsv", "absolute path"),
    (_zip({"C:/x.tsv": b"pos\tx\n"}), "C:/x.tsv", "absolute path"),
    (_zip({"..\\x.tsv": b"pos\tx\n"}), "..\\\\x.tsv", "'..'"),
    (_zip({}, symlinks={"link": "../../etc/passwd"}), "link", "symlink"),
], ids=["tar-dotdot", "tar-nested-dotdot", "tar-absolute", "tar-symlink-absolute",
        "tar-symlink-up", "tar-hardlink", "tar-symlink-chain", "zip-dotdot", "zip-absolute",
        "zip-drive", "zip-backslash", "zip-symlink"])
def test_archive_members_escaping_the_target_are_refused(tmp_path, payload, member, why):
    suffix = ".zip" if payload[:2] == b"PK" else ".tar.gz"
    archive = tmp_path / f"evil{suffix}"
    archive.write_bytes(payload)
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, archive)
    message = str(error.value)
    assert f"unsafe archive member '{member}'" in message and why in message, message
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()
    assert not (tmp_path.parent / "x.tsv").exists() and not (tmp_path / "x.tsv").exists()


def test_a_zip_with_a_harmless_symlink_is_refused_too(tmp_path):
    archive = tmp_path / "link.zip"
    archive.write_bytes(_zip({"c.tsv": TSV_OK.encode()}, symlinks={"l.tsv": "c.tsv"}))
    with pytest.raises(DataError, match="member 'l.tsv' is a symlink; zip corpora must hold "
                                        "plain files"):
        run_ingest(tmp_path, archive)


@pytest.mark.parametrize(("name", "payload", "message"), [
    ("broken.zip", b"PK\x03\x04 not really", "not a readable zip archive"),
    ("broken.tar.gz", b"\x1f\x8b\x08 truncated", "cannot extract|not a readable tar"),
    ("empty.zip", _zip({}), "the archive is empty"),
    ("two.zip", _zip({"a.tsv": b"x", "b.tsv": b"y"}), "expected one TSV/CSV file"),
    ("fifo.tar", None, "device or FIFO"),
])
def test_unusable_archives(tmp_path, name, payload, message):
    archive = tmp_path / name
    if payload is None:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as tf:
            info = tarfile.TarInfo("pipe")
            info.type = tarfile.FIFOTYPE
            tf.addfile(info)
        payload = buffer.getvalue()
    archive.write_bytes(payload)
    with pytest.raises(DataError, match=message) as error:
        run_ingest(tmp_path, archive)
    assert str(error.value).startswith(str(archive))
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]


# --- limits: archives are read in place, and never inflate past what they may -----------------

def _deflated_zip(name: str, content: bytes, method: int = zipfile.ZIP_DEFLATED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=method) as zf:
        zf.writestr(name, content)
    return buffer.getvalue()


def _lie_about_size(payload: bytes, name: str, size: int) -> bytes:
    """The zip with `name`'s uncompressed size in its local and central headers set to `size`."""
    data = bytearray(payload)
    encoded = name.encode()
    local = data.index(b"PK\x03\x04")  # the first (only) local header
    central = data.index(b"PK\x01\x02")
    for offset, field in ((local, 22), (central, 24)):  # uncompressed size fields
        assert data[offset + (30 if offset == local else 46):].startswith(encoded)
        data[offset + field:offset + field + 4] = struct.pack("<I", size)
    return bytes(data)


@pytest.mark.parametrize("kind", ["zip", "tar.gz"])
def test_a_bomb_is_refused_before_anything_is_inflated(tmp_path, kind):
    """20 MB of zeros compress ~1000-fold: refused on the sizes the headers declare, with one line
    naming the archive and the limit; nothing is written."""
    zeros = b"\0" * 20_000_000
    archive = tmp_path / f"bomb.{kind}"
    archive.write_bytes(_deflated_zip("c.tsv", zeros) if kind == "zip"
                        else _tar({"c.tsv": zeros}))
    started = time.monotonic()
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, archive)
    message = str(error.value)
    assert message.startswith(f"{archive}: declares 20,000,000 bytes uncompressed from ")
    assert "more than ingest.max_archive_ratio=100; refusing to read it" in message
    assert "\n" not in message and time.monotonic() - started < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]
    # A higher ratio lets it through to the corpus checks (zeros are not text).
    with pytest.raises(DataError, match="contains NUL bytes"):
        run_ingest(tmp_path, archive, max_archive_ratio=5000)


def test_the_total_size_limit(tmp_path):
    archive = tmp_path / "news.zip"
    archive.write_bytes(_zip({"news.tsv": TSV_OK.encode()}))
    size = len(TSV_OK.encode())
    with pytest.raises(DataError, match=rf"news\.zip: declares {size:,} bytes uncompressed, more "
                                        rf"than ingest\.max_archive_bytes=100; refusing"):
        run_ingest(tmp_path, archive, max_archive_bytes=100)
    assert run_ingest(tmp_path, archive, max_archive_bytes=size)["documents_kept"] == 10


def test_a_zip_whose_headers_lie_is_stopped_at_the_size_they_declare(tmp_path):
    """The headers say 1,000 bytes; the deflate stream holds 5 MB. Reading stops after 1,000 bytes
    (never inflating the rest), naming the member and the size it declared."""
    content = (TSV_OK * 50_000).encode()[:5_000_000]
    archive = tmp_path / "liar.zip"
    archive.write_bytes(_lie_about_size(_deflated_zip("c.tsv", content), "c.tsv", 1000))
    with pytest.raises(DataError) as error:
        run_ingest(tmp_path, archive)
    assert str(error.value) == (f"{archive}!c.tsv: inflates past the 1,000 bytes its header "
                                f"declares; refusing to read it (a zip bomb?)")
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]


def test_a_zip_with_a_bad_checksum(tmp_path):
    payload = bytearray(_deflated_zip("c.tsv", TSV_OK.encode(), zipfile.ZIP_STORED))
    at = payload.index(TSV_OK.encode()[:10])
    payload[at] ^= 0x01  # one flipped bit in the stored data: "pos" -> "qos"
    (tmp_path / "c.zip").write_bytes(bytes(payload))
    with pytest.raises(DataError, match=r"c\.zip: not a readable zip archive: Bad CRC-32"):
        run_ingest(tmp_path, tmp_path / "c.zip")


@pytest.mark.parametrize("method", [zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2])
def test_zip_compression_methods(tmp_path, method):
    archive = tmp_path / "c.zip"
    archive.write_bytes(_deflated_zip("c.tsv", (TSV_OK * 200).encode(), method))
    assert run_ingest(tmp_path, archive)["documents_read"] == 2000


def test_a_label_folder_corpus_splits_the_same_from_a_folder_a_zip_and_a_tar(tmp_path, corpora):
    """A tar is read front to back (a compressed one cannot be read out of order cheaply), in its
    own member order; each document keeps its place in name order, so the splits are the same
    bytes as from the folder or a zip."""
    rows = corpora.en(n_per_class=8)
    members = {f"news/{label}/{i:03}.txt": f"{text} {i}".encode()
               for i, (label, text) in enumerate(rows)}
    members["news/sports/000-dup.txt"] = next(v for k, v in members.items() if "/sports/" in k)
    folder = tmp_path / "folder"
    for name, content in members.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(content)
    reversed_members = dict(reversed(members.items()))  # archive order != name order
    (tmp_path / "news.zip").write_bytes(_zip(reversed_members))
    (tmp_path / "news.tar.gz").write_bytes(_tar(reversed_members))
    outputs = []
    for source in (folder / "news", tmp_path / "news.zip", tmp_path / "news.tar.gz"):
        out = tmp_path / source.name.replace(".", "-")
        summary = run_ingest(out, source)
        assert summary["dropped"]["duplicate"] == 1
        outputs.append([(out / "data" / f"{s}.tsv").read_bytes() for s in SPLITS])
    assert outputs[0] == outputs[1] == outputs[2]
