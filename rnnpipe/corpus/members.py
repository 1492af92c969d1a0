"""A corpus archive opened for reading in place: every member checked (`archives`), then read
member by member as blocks, never more than its header declares. Zip members are inflated here
(stored, deflate, bzip2) a block at a time, so a member whose header lies about its size is
stopped at that size; tar members come from `tarfile`, whose decompressors are bounded too.
"""

from __future__ import annotations

import bz2
import contextlib
import lzma
import posixpath
import stat
import struct
import tarfile
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

from rnnpipe.corpus.archives import (
    Limits,
    Node,
    add_member,
    archive_kind,
    check_inflation,
    escapes,
    link_escapes,
    path_parts,
    resolve_links,
    unsafe_member,
)
from rnnpipe.errors import DataError

BLOCK = 1 << 20


class Archive:
    """An open corpus archive: its checked members as a tree, readable member by member."""

    def __init__(self, path: Path, archive: str, limits: Limits) -> None:
        self.path, self.archive, self.limits = path, archive, limits
        self.kind = archive_kind(path)
        self.root = Node("", True)
        self._zip: zipfile.ZipFile | None = None
        self._tar: tarfile.TarFile | None = None
        self._fh = None
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        files = sorted(self._files(self.root), key=lambda n: n.path)
        for rank, node in enumerate(files):
            node.rank = rank
        # tar.gz & co. can only be read front to back cheaply: read in archive order there.
        self.sequential = self.kind == "tar"

    def _files(self, node: Node) -> Iterator[Node]:
        for child in node.children.values():
            if child.is_dir:
                yield from self._files(child)
            else:
                yield child

    def _errors(self, exc: BaseException) -> DataError | None:
        if isinstance(exc, (zipfile.BadZipFile, tarfile.TarError, EOFError, zlib.error,
                            lzma.LZMAError, struct.error)):
            return DataError(f"{self.archive}: not a readable {self.kind} archive: {exc}")
        if isinstance(exc, (RuntimeError, NotImplementedError)):
            return DataError(f"{self.archive}: cannot extract: {exc}")
        if isinstance(exc, OSError):  # a truncated gzip stream
            return DataError(f"{self.archive}: cannot extract: {exc.strerror or exc}")
        return None

    @contextlib.contextmanager
    def _as_data_errors(self) -> Iterator[None]:
        """Whatever the archive libraries raise about a damaged archive, as one `DataError`."""
        try:
            yield
        except DataError:
            raise
        except Exception as exc:
            error = self._errors(exc)
            if error is None:
                raise
            raise error from None

    def _open(self) -> None:
        with self._as_data_errors():
            compressed = self.path.stat().st_size
            if self.kind == "zip":
                self._open_zip(compressed)
            else:
                self._open_tar(compressed)

    def _open_zip(self, compressed: int) -> None:
        self._zip = zipfile.ZipFile(self.path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 (closed by close())
        declared = 0
        for info in self._zip.infolist():
            why = escapes(info.filename)
            if why:
                raise unsafe_member(self.archive, info.filename, why)
            if stat.S_ISLNK(info.external_attr >> 16):
                # Extracting would write the link as a file holding its target's path; a corpus
                # has no business containing links, so say so instead of reading that text.
                target = self._zip.read(info).decode("utf-8", "replace")
                if link_escapes(info.filename, target, hard=False):
                    raise unsafe_member(self.archive, info.filename, f"a symlink to {target!r}")
                raise DataError(f"{self.archive}: member {info.filename!r} is a symlink; zip "
                                f"corpora must hold plain files")
            declared += info.file_size
            check_inflation(self.archive, declared, compressed, self.limits)
            add_member(self.root, info.filename, info.is_dir(), None if info.is_dir() else info)

    def _open_tar(self, compressed: int) -> None:
        self._tar = tarfile.open(self.path, "r:*")  # noqa: SIM115 (closed by close())
        declared = 0
        symlinks: dict[str, str] = {}
        links = []
        while True:
            member = self._tar.next()  # skipping the last member's data inflates it: check first
            if member is None:
                break
            why = escapes(member.name)
            if why:
                raise unsafe_member(self.archive, member.name, why)
            if member.issym() or member.islnk():
                if link_escapes(member.name, member.linkname, hard=member.islnk()):
                    kind = "a hard link" if member.islnk() else "a symlink"
                    raise unsafe_member(self.archive, member.name, f"{kind} to {member.linkname!r}")
                if member.issym():
                    symlinks["/".join(path_parts(member.name))] = member.linkname
                links.append(member)
            elif member.isdev() or member.isfifo():
                raise DataError(f"{self.archive}: member {member.name!r} is a device or FIFO; "
                                f"corpus archives must hold plain files and folders")
            elif member.isfile():
                declared += member.size
                check_inflation(self.archive, declared, compressed, self.limits)
            add_member(self.root, member.name, member.isdir(), None if member.isdir() else member)
        for member in links:  # a chain of links can escape where each one alone looks harmless
            base = [] if member.islnk() else path_parts(posixpath.dirname(member.name))
            if resolve_links([*base, *member.linkname.replace("\\", "/").split("/")],
                        symlinks) is None:
                kind = "a hard link" if member.islnk() else "a symlink"
                raise unsafe_member(self.archive, member.name,
                              f"{kind} to {member.linkname!r}, which resolves outside the "
                              f"destination")

    def blocks(self, node: Node) -> Iterator[bytes]:
        """The bytes of file `node`, in blocks, never more than its header declares."""
        with self._as_data_errors():
            if self._zip is not None:
                yield from self._zip_blocks(node)
            else:
                yield from self._tar_blocks(node)

    def _too_big(self, node: Node, declared: int) -> DataError:
        return DataError(f"{self.archive}!{node.path}: inflates past the {declared:,} bytes its "
                         f"header declares; refusing to read it (a zip bomb?)")

    def _zip_blocks(self, node: Node) -> Iterator[bytes]:
        info: zipfile.ZipInfo = node.ref
        if info.flag_bits & 0x1:
            raise DataError(f"{self.archive}: cannot extract: member {info.filename!r} is "
                            f"encrypted")
        fh = self._fh
        fh.seek(info.header_offset)
        header = fh.read(zipfile.sizeFileHeader)
        if len(header) != zipfile.sizeFileHeader or header[:4] != zipfile.stringFileHeader:
            raise zipfile.BadZipFile(f"bad local header of {info.filename!r}")
        name_length, extra_length = struct.unpack("<HH", header[26:30])
        fh.seek(name_length + extra_length, 1)
        method = info.compress_type
        if method == zipfile.ZIP_STORED:
            decompressor = None
        elif method == zipfile.ZIP_DEFLATED:
            decompressor = zlib.decompressobj(-15)
        elif method == zipfile.ZIP_BZIP2:
            decompressor = bz2.BZ2Decompressor()
        else:
            raise DataError(f"{self.archive}: cannot extract: member {info.filename!r} uses "
                            f"compression method {method}; corpus zips must be stored, deflated "
                            f"or bzip2-compressed")
        left, out, crc = info.compress_size, 0, 0

        def raw() -> bytes:
            nonlocal left
            data = fh.read(min(BLOCK, left)) if left > 0 else b""
            left -= len(data)
            return data

        def output(data: bytes) -> bytes:
            nonlocal out, crc
            out += len(data)
            if out > info.file_size:
                raise self._too_big(node, info.file_size)
            crc = zlib.crc32(data, crc)
            return data

        if decompressor is None:
            while data := raw():
                yield output(data)
        elif method == zipfile.ZIP_DEFLATED:
            tail = b""
            while not decompressor.eof:
                tail = tail or raw()
                if not tail:
                    yield output(decompressor.flush())
                    break
                # At most BLOCK bytes out of each call: a bomb never inflates in memory.
                yield output(decompressor.decompress(tail, BLOCK))
                tail = decompressor.unconsumed_tail
        else:
            while not decompressor.eof:
                data = raw() if decompressor.needs_input else b""
                if decompressor.needs_input and not data:
                    break
                yield output(decompressor.decompress(data, BLOCK))
        if out != info.file_size or crc != info.CRC:
            raise zipfile.BadZipFile(f"Bad CRC-32 or size for file {info.filename!r}")

    def _tar_blocks(self, node: Node) -> Iterator[bytes]:
        member: tarfile.TarInfo = node.ref
        extracted = self._tar.extractfile(member)
        if extracted is None:
            raise DataError(f"{self.archive}!{node.path}: cannot read: not a regular file")
        declared = getattr(getattr(extracted, "raw", None), "size", member.size)
        out = 0
        with extracted:
            while block := extracted.read(BLOCK):
                out += len(block)
                if out > declared:
                    raise self._too_big(node, declared)
                yield block

    def close(self) -> None:
        for handle in (self._zip, self._tar, self._fh):
            if handle is not None:
                handle.close()
        self._zip = self._tar = self._fh = None

    def __enter__(self) -> Archive:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
