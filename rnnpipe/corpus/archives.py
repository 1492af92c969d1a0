"""Corpus archives (`.zip`, `.tar`, `.tar.gz`, `.tgz`, `.tar.bz2`, `.tar.xz`): extracted into a
temporary folder, refusing any member that would land outside it (an absolute path, a `..`
component, a link pointing outside, a device or FIFO), then the corpus inside is found.
"""

from __future__ import annotations

import lzma
import posixpath
import re
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from rnnpipe.errors import DataError

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")

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


