"""The files one step writes and the next reads, in one place: the splits ingest writes
(`label<TAB>text`) and the token files the vocabulary step writes (`label<TAB>tokens`)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from rnnpipe.errors import DataError
from rnnpipe.io import atomic_open

if TYPE_CHECKING:
    from rnnpipe.corpus.readers import Document


def write_split(path: Path, docs: Iterable[Document]) -> None:
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


def write_tokens(path: Path, labels: list[str], token_lists: list[list[str]]) -> None:
    """Write `label<TAB>tokens` lines atomically."""
    with atomic_open(path) as fh:
        for label, tokens in zip(labels, token_lists, strict=True):
            fh.write(f"{label}\t{' '.join(tokens)}\n")


def read_tokens(path: str | Path) -> tuple[list[str], list[list[str]]]:
    """Read a file written by `write_tokens` into (labels, token lists)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: missing; run the vocabulary step first (rnnpipe vocab)")
    labels, token_lists = [], []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            label, _, tokens = line.rstrip("\n").partition("\t")
            labels.append(label)
            token_lists.append(tokens.split(" ") if tokens else [])
    return labels, token_lists
