"""Step 1, ingest: read a labelled corpus, validate it, drop duplicates, split it.

params: `ingest` → outputs: `data/{train,val,test}.tsv` (`label<TAB>text`, one document a line)
and `reports/ingest.json` (counts per class and split, dropped rows and why). Sources, formats
and encodings are described in `rnnpipe.corpus`.

Memory stays flat however big the corpus: a first pass streams the documents and keeps ~22
bytes of each (a hash of its text, its label, its line's length: `corpus.split.Records`); the
duplicates and every document's split and place in its split file follow from those; a second
pass streams the corpus again and writes each kept document at its place.
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path

import numpy as np

from rnnpipe.config import IngestParams, Params, load_params
from rnnpipe.corpus.readers import ReadReport, Reread
from rnnpipe.corpus.sources import Corpus, open_corpus, unversioned_source
from rnnpipe.corpus.split import NOT_KEPT, Placement, Records, dedupe, line_bytes, place
from rnnpipe.errors import DataError
from rnnpipe.heartbeat import Progress, heartbeat
from rnnpipe.io import atomic_path, write_json
from rnnpipe.paths import CORPUS_DIR, DATA_DIR, INGEST_REPORT, SPLITS, split_file

FIRST_BAD_LINES = 10  # how many bad lines the report names
SWAPPED_LABELS = 20  # more distinct labels than this, and than half the documents: swapped?


def _first_pass(corpus: Corpus) -> tuple[Records, ReadReport]:
    """Stream the corpus once, keeping a few bytes per document; start over (once per stream)
    when `encoding: auto` finds a stream not to be UTF-8."""
    while True:
        records, report = Records(), corpus.new_report()
        progress = Progress("ingest: reading")
        try:
            for key, doc in corpus.documents(report):
                records.add(doc, key)
                progress.update()
        except Reread:
            continue
        finally:
            progress.finish()
        return records, report


def _order(records: Records) -> np.ndarray | None:
    """For documents read out of corpus order: the corpus position of each document read."""
    if records.keys is None:
        return None
    keys = np.frombuffer(records.keys, dtype=np.uint64)
    position = np.empty(len(keys), dtype=np.int64)
    position[np.argsort(keys, kind="stable")] = np.arange(len(keys))
    return position


def _origin_of(corpus: Corpus, records: Records, position: np.ndarray | None):
    """`origin_of(i)`: where the document at corpus position `i` came from (reads again)."""
    def origin_of(index: int) -> str:
        wanted = index if position is None else int(np.flatnonzero(position == index)[0])
        for seq, (_, doc) in enumerate(corpus.documents(corpus.new_report())):
            if seq == wanted:
                return doc.origin
        return "?"
    return origin_of


def _second_pass(corpus: Corpus, placement: Placement, sizes: np.ndarray,
                 position: np.ndarray | None, data_dir: Path) -> None:
    """Stream the corpus again and write each kept document at its offset in its split file."""
    with contextlib.ExitStack() as stack:
        fds = []
        for name in SPLITS:
            tmp = stack.enter_context(atomic_path(split_file(name, data_dir)))
            fd = os.open(tmp, os.O_WRONLY)
            stack.callback(os.close, fd)
            os.ftruncate(fd, placement.bytes[name])
            fds.append(fd)
        written = np.zeros(len(SPLITS), dtype=np.int64)
        kept = sum(placement.documents.values())
        progress = Progress("ingest: writing splits", total=kept)
        try:
            for seq, (_, doc) in enumerate(corpus.documents(corpus.new_report())):
                index = seq if position is None else position[seq]
                code = placement.split[index]
                if code == NOT_KEPT:
                    continue
                line = line_bytes(doc.label, doc.text)
                if len(line) != sizes[index]:
                    raise _changed(corpus)
                os.pwrite(fds[code], line, int(placement.offset[index]))
                written[code] += 1
                progress.update()
        except IndexError:
            raise _changed(corpus) from None
        finally:
            progress.finish()
        if [int(w) for w in written] != [placement.documents[name] for name in SPLITS]:
            raise _changed(corpus)


def _changed(corpus: Corpus) -> DataError:
    return DataError(f"ingest.source: {corpus.source}: changed while it was being read; run "
                     f"ingest again")


def ingest(params: IngestParams, data_dir: Path = DATA_DIR,
           summary_path: Path = INGEST_REPORT) -> dict:
    """Read, validate, deduplicate and split the corpus; write the splits and the summary."""
    with open_corpus(params) as corpus:
        records, report = _first_pass(corpus)
        read_count = len(records) + report.bad_line_count + report.empty_text_count
        if read_count == 0:
            raise DataError(f"ingest.source: {params.source}: the corpus is empty")
        if params.on_bad_line == "error":
            if report.bad_line_count:
                raise DataError(f"{report.bad_lines[0]}: malformed line (expected label<TAB>text, "
                                f"label not empty); {report.bad_line_count} such line(s) in all. "
                                f"Fix them or set ingest.on_bad_line: skip")
            if report.empty_text_count:
                raise DataError(f"{report.empty_texts[0]}: empty text; {report.empty_text_count} "
                                f"such document(s) in all. Fix them or set ingest.on_bad_line: "
                                f"skip")
        position = _order(records)
        hashes = records.hash_array()
        labels = np.frombuffer(records.label_ids, dtype=np.uint16)
        sizes = np.frombuffer(records.sizes, dtype=np.uint32)
        if position is not None:  # into corpus order: "first" means first in that order
            order = np.argsort(position)
            hashes, labels, sizes = hashes[order], labels[order], sizes[order]
            del order
        found = dedupe(hashes, labels)
        del hashes
        records.hashes = bytearray()
        names = list(records.labels)
        dropped = {"duplicate": found.duplicates, "conflicting_label": found.conflicting,
                   "bad_line": report.bad_line_count, "empty_text": report.empty_text_count}
        check_usable(params.source, names, np.bincount(labels, minlength=len(names)),
                     found.distinct, int(found.keep.sum()), read_count, dropped)
        placement = place(found.keep, labels, sizes, names, params.val_size, params.test_size,
                          params.seed, _origin_of(corpus, records, position))
        del found, labels
        _second_pass(corpus, placement, sizes, position, data_dir)
    summary = {
        "source": params.source,
        "format": report.format,
        "archive": report.archive,
        "encoding": sorted(report.encodings) or ["utf-8"],
        "documents_read": read_count,
        "documents_kept": sum(placement.documents.values()),
        "dropped": dropped,
        "first_bad_lines": report.bad_lines[:FIRST_BAD_LINES],
        "first_empty_texts": report.empty_texts[:FIRST_BAD_LINES],
        "splits": placement.documents,
        "classes": {label: placement.classes[label] for label in sorted(placement.classes)},
    }
    write_json(summary_path, summary)
    return summary


def check_usable(source: str, labels: list[str], label_counts: np.ndarray, distinct: int,
                 kept: int, read_count: int, dropped: dict) -> None:
    """Say why a corpus cannot be split, in terms of what was read: labels that look like texts
    (swapped columns), or nothing kept (and what was dropped for what). Counts are of the
    documents before deduplication: with swapped columns every "text" (a real label) comes with
    many "labels", so deduplication drops them all as conflicting."""
    present = [label for label, n in zip(labels, label_counts.tolist(), strict=True) if n]
    if len(present) > SWAPPED_LABELS and len(present) > 0.5 * distinct:
        # Thousands of labels seen once each: the label column holds the texts.
        sample = max(present, key=len)
        raise DataError(f"ingest.source: {source}: {len(present)} distinct labels among "
                        f"{distinct} documents (e.g. {sample[:40]!r}): the label column looks "
                        f"like text; are the columns swapped? Lines are label<TAB>text")
    if not kept:
        reasons = ", ".join(f"{n} {why.replace('_', ' ')}" for why, n in dropped.items() if n)
        raise DataError(f"ingest.source: {source}: no document kept of {read_count} read "
                        f"({reasons or 'nothing usable'})")


def describe(summary: dict) -> str:
    """The step's one-line summary."""
    dropped = summary["dropped"]
    return (f"ingest: {summary['documents_read']} read, {summary['documents_kept']} kept "
            f"({dropped['duplicate']} duplicates, {dropped['conflicting_label']} conflicting "
            f"labels, {dropped['bad_line']} bad lines, {dropped['empty_text']} empty texts "
            f"dropped); splits {summary['splits']}; encoding {', '.join(summary['encoding'])}")


def main(params: Params | None = None) -> None:
    """`rnnpipe ingest`: run the step with the `ingest` section of `params.yaml`."""
    params = params or load_params()
    if unversioned_source(params.ingest.source):
        print(f"ingest: note: {params.ingest.source} is outside {CORPUS_DIR}/, so DVC does not "
              f"version it or re-run when it changes; see {CORPUS_DIR}/README.md",
              file=sys.stderr)
    with heartbeat("ingest"):
        summary = ingest(params.ingest)
    print(describe(summary), flush=True)

