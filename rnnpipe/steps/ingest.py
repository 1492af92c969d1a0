"""Step 1, ingest: read a labelled corpus, validate it, drop duplicates, split it.

params: `ingest` → outputs: `data/{train,val,test}.tsv` (`label<TAB>text`, one document a line)
and `reports/ingest.json` (counts per class and split, dropped rows and why). Sources, formats
and encodings are described in `rnnpipe.corpus`.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

from rnnpipe.config import IngestParams, Params, load_params
from rnnpipe.corpus.readers import Document
from rnnpipe.corpus.sources import read_corpus, unversioned_source
from rnnpipe.corpus.split import deduplicate, stratified_split
from rnnpipe.datafiles import write_split
from rnnpipe.errors import DataError
from rnnpipe.io import write_json
from rnnpipe.paths import CORPUS_DIR, DATA_DIR, INGEST_REPORT, SPLITS, split_file

FIRST_BAD_LINES = 10  # how many bad lines the report names


def ingest(params: IngestParams, data_dir: Path = DATA_DIR,
           summary_path: Path = INGEST_REPORT) -> dict:
    """Read, validate, deduplicate and split the corpus; write the splits and the summary."""
    docs, report = read_corpus(params)
    read_count = len(docs) + len(report.bad_lines) + len(report.empty_texts)
    if read_count == 0:
        raise DataError(f"ingest.source: {params.source}: the corpus is empty")
    if params.on_bad_line == "error":
        if report.bad_lines:
            raise DataError(f"{report.bad_lines[0]}: malformed line (expected label<TAB>text, "
                            f"label not empty); {len(report.bad_lines)} such line(s) in all. "
                            f"Fix them or set ingest.on_bad_line: skip")
        if report.empty_texts:
            raise DataError(f"{report.empty_texts[0]}: empty text; {len(report.empty_texts)} "
                            f"such document(s) in all. Fix them or set ingest.on_bad_line: skip")
    read_docs = docs
    docs, duplicates, conflicting = deduplicate(docs)
    dropped = {"duplicate": duplicates, "conflicting_label": conflicting,
               "bad_line": len(report.bad_lines), "empty_text": len(report.empty_texts)}
    check_usable(params.source, docs, read_count, dropped, read_docs)
    splits = stratified_split(docs, params.val_size, params.test_size, params.seed)
    for name in SPLITS:
        write_split(split_file(name, data_dir), splits[name])
    counts = {name: Counter(d.label for d in splits[name]) for name in SPLITS}
    summary = {
        "source": params.source,
        "format": report.format,
        "archive": report.archive,
        "encoding": sorted(report.encodings) or ["utf-8"],
        "documents_read": read_count,
        "documents_kept": len(docs),
        "dropped": dropped,
        "first_bad_lines": report.bad_lines[:FIRST_BAD_LINES],
        "first_empty_texts": report.empty_texts[:FIRST_BAD_LINES],
        "splits": {name: len(splits[name]) for name in SPLITS},
        "classes": {label: {name: counts[name][label] for name in SPLITS}
                    for label in sorted({d.label for d in docs})},
    }
    write_json(summary_path, summary)
    return summary


def check_usable(source: str, docs: list[Document], read_count: int, dropped: dict,
                 read_docs: list[Document] | None = None) -> None:
    """Say why a corpus cannot be split, in terms of what was read: labels that look like texts
    (swapped columns), or nothing kept (and what was dropped for what). `read_docs` are the
    documents before deduplication: with swapped columns every "text" (a real label) comes with
    many "labels", so deduplication drops them all as conflicting."""
    read_docs = docs if read_docs is None else read_docs
    labels = Counter(d.label for d in read_docs)
    distinct = len({(d.label, d.text) for d in read_docs})
    if len(labels) > 20 and len(labels) > 0.5 * distinct:
        # Thousands of labels seen once each: the label column holds the texts.
        sample = max(labels, key=len)
        raise DataError(f"ingest.source: {source}: {len(labels)} distinct labels among "
                        f"{distinct} documents (e.g. {sample[:40]!r}): the label column looks "
                        f"like text; are the columns swapped? Lines are label<TAB>text")
    if not docs:
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
    print(describe(ingest(params.ingest)), flush=True)


