"""Corpus archives (`.zip`, `.tar`, `.tar.gz`, `.tgz`, `.tar.bz2`, `.tar.xz`), read in place
(`members.Archive`): members are streamed, never extracted. What is checked before anything is
read: members that would land outside the archive's folder if extracted (an absolute path, a
`..` component, a link pointing outside, directly or through other links), devices and FIFOs,
and how far the archive inflates (`Limits`). Here: those checks, the archive as a tree of
members, and where the corpus is in it (`find_corpus`).
"""

from __future__ import annotations

import posixpath
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rnnpipe.errors import DataError

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
# The ratio limit applies once an archive holds this much: a small archive of repetitive text
# may compress 100-fold and hurts nobody.
RATIO_APPLIES_ABOVE = 10_000_000
_LINK_DEPTH = 40  # links followed in a chain before it counts as a loop


def archive_kind(path: Path) -> str | None:
    """`zip` or `tar` when the file name says it is an archive (`.zip`, `.tar`, `.tar.gz`,
    `.tgz`, `.tar.bz2`, `.tar.xz`...), else None."""
    name = path.name.lower()
    if name.endswith(".zip"):
        return "zip"
    if name.endswith(_TAR_SUFFIXES):
        return "tar"
    return None


def escapes(name: str) -> str | None:
    """Why extracting a member called `name` would write outside the target folder, or None."""
    normalized = name.replace("\\", "/")
    if normalized.startswith("/") or re.match(r"[A-Za-z]:", normalized):
        return "has an absolute path"
    if ".." in normalized.split("/"):
        return "has a '..' component"
    return None


def link_escapes(member: str, target: str, hard: bool) -> bool:
    """Whether a link `member` → `target` points outside the extraction folder, lexically.

    A symlink's target is relative to the folder holding the link, a hard link's to the
    archive's root. `_resolves_outside` repeats the check through the archive's other links.
    """
    target = target.replace("\\", "/")
    if target.startswith("/") or re.match(r"[A-Za-z]:", target):
        return True
    base = "" if hard else posixpath.dirname(member.replace("\\", "/"))
    resolved = posixpath.normpath(posixpath.join(base, target))
    return resolved == ".." or resolved.startswith("../")


def path_parts(name: str) -> list[str]:
    """A member name's components (`\\` read as `/`, no empty or `.` ones)."""
    return [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]


def resolve_links(parts: list[str], symlinks: dict[str, str],
                  depth: int = 0) -> list[str] | None:
    """Where `parts` lead from the archive's root when the archive's symlinks are followed (as
    extracting it would create them), or None if the path climbs out of the root or loops."""
    resolved: list[str] = []
    for part in parts:
        if part in ("", "."):
            continue
        if part == "..":
            if not resolved:
                return None
            resolved.pop()
            continue
        target = symlinks.get("/".join([*resolved, part]))
        if target is None:
            resolved.append(part)
            continue
        target = target.replace("\\", "/")
        if depth >= _LINK_DEPTH or target.startswith("/") or re.match(r"[A-Za-z]:", target):
            return None
        inner = resolve_links([*resolved, *target.split("/")], symlinks, depth + 1)
        if inner is None:
            return None
        resolved = inner
    return resolved


def unsafe_member(archive: str, member: str, why: str) -> DataError:
    return DataError(f"{archive}: unsafe archive member {member!r}: {why}; refusing to extract "
                     f"outside the target folder")


@dataclass(frozen=True)
class Limits:
    """How far an archive may inflate: uncompressed bytes in all, and uncompressed/compressed."""

    max_bytes: int
    max_ratio: float


def check_inflation(archive: str, declared: int, compressed: int, limits: Limits,
                     what: str = "declares") -> None:
    if declared > limits.max_bytes:
        raise DataError(f"{archive}: {what} {declared:,} bytes uncompressed, more than "
                        f"ingest.max_archive_bytes={limits.max_bytes:,}; refusing to read it")
    if declared > RATIO_APPLIES_ABOVE and declared > limits.max_ratio * max(compressed, 1):
        raise DataError(f"{archive}: {what} {declared:,} bytes uncompressed from "
                        f"{compressed:,} ({declared / max(compressed, 1):,.0f}x), more than "
                        f"ingest.max_archive_ratio={limits.max_ratio:g}; refusing to read it "
                        f"(a zip bomb?)")


@dataclass
class Node:
    """A file or folder inside an archive (folders may be implied by their files' paths)."""

    path: str  # from the archive's root, `/`-separated; "" for the root
    is_dir: bool
    ref: Any = None  # the ZipInfo / TarInfo of a file
    rank: int = 0  # position in name order among the archive's files
    children: dict[str, Node] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]


def add_member(root: Node, name: str, is_dir: bool, ref: Any) -> None:
    """Put member `name` into the tree under `root`, with the folders its path implies."""
    parts = path_parts(name)
    node = root
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        child = node.children.get(part)
        if child is None or (last and not is_dir):
            child = Node("/".join(parts[: i + 1]), is_dir or not last, ref if last else None)
            node.children[part] = child
        node = child


def _visible(name: str) -> bool:
    """Not hidden and not macOS's resource-fork folder (`__MACOSX`), which zips often carry."""
    return not name.startswith(".") and name != "__MACOSX"


def find_corpus(root: Node, archive: str) -> Node:
    """The corpus inside an archive: its one TSV/CSV file, or the folder holding one sub-folder
    per label. Lone wrapping folders (`news/` in `news.zip`) are looked through: a lone folder
    cannot be a label-folder corpus, which needs two labels."""
    current = root
    while True:
        entries = sorted((n for n in current.children.values() if _visible(n.name)),
                         key=lambda n: n.name)
        dirs = [n for n in entries if n.is_dir]
        files = [n for n in entries if not n.is_dir]
        if len(dirs) == 1 and not files:
            current = dirs[0]
            continue
        break
    if dirs:
        return current
    data_files = [n for n in files if n.name.lower().endswith((".tsv", ".csv", ".txt"))]
    if len(files) == 1:
        return files[0]
    if len(data_files) == 1:
        return data_files[0]
    if not files:
        raise DataError(f"{archive}: the archive is empty")
    where = current.path or "."
    raise DataError(f"{archive}: expected one TSV/CSV file or one folder per label, found "
                    f"{len(files)} files in {'its top level' if where == '.' else where!r}")


def tree_of(names: list[str]) -> Node:
    """A tree of `names` (folders end in `/`), as `find_corpus` sees an archive."""
    root = Node("", True)
    for name in names:
        add_member(root, name, name.endswith("/"), None)
    return root
