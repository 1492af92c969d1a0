"""Atomic file output: a killed run leaves either the old file or the new one, never half of one."""

from __future__ import annotations

import contextlib
import glob
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any


def _suffix(path: Path) -> str:
    """The name's full extension (`.weights.h5`, `.tar.gz`, `.keras`): Keras only saves to
    names ending in `.keras` or `.weights.h5`, so a temporary name must keep all of it."""
    return "".join(path.suffixes[-2:]) if path.name.endswith(".weights.h5") else path.suffix


def _temp_pattern(path: Path) -> tuple[str, str]:
    return f".{path.name}.", f".tmp{_suffix(path)}"


def _remove_stale_temps(path: Path) -> None:
    """Remove temporary files an earlier, killed writer of `path` left beside it.

    A SIGKILL skips every `finally`; without this, `data/ids/` (a DVC directory output)
    would keep a stray `.train.tsv.<pid>.<random>.tmp.tsv`. Only temps whose writer process
    is gone are removed, so a concurrent writer of the same file is left alone.
    """
    prefix, suffix = _temp_pattern(path)
    for stale in path.parent.glob(f"{glob.escape(prefix)}*{glob.escape(suffix)}"):
        pid = stale.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            stale.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`.

    If the block raises (or the process dies) `path` keeps its old content, or stays absent:
    readers, DVC and the next step never see half a file. The temporary file is in the same
    folder, so the final `os.replace` is an atomic rename on one file system.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(path)
    prefix, suffix = _temp_pattern(path)
    # The pid in the name tells a later writer whether this temp's writer is still alive.
    fd, tmp = tempfile.mkstemp(prefix=f"{prefix}{os.getpid()}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb") as fh:
            os.fsync(fh.fileno())
        os.chmod(tmp_path, 0o644)
        os.replace(tmp_path, path)
        _fsync_dir(path.parent)
    finally:
        tmp_path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs: Any) -> Iterator[IO]:
    """Open a temporary file for writing that replaces `path` only when the block succeeds."""
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
        kwargs.setdefault("newline", "\n")
    with atomic_path(path) as tmp, open(tmp, mode, **kwargs) as fh:
        yield fh


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as stable, human-readable JSON (sorted keys keep diffs and hashes stable)."""
    with atomic_open(path) as fh:
        json.dump(data, fh, indent=2, sort_keys=True, ensure_ascii=False)
        fh.write("\n")


def read_json(path: str | Path) -> Any:
    """Read a JSON file written by `write_json`."""
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)
