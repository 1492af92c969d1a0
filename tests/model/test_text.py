"""Tokenizers, parallel segmentation (same result as serial), and encoding to ids with each way of
cutting a long document."""

from __future__ import annotations

import numpy as np
import pytest

from rnnpipe.model.text import (
    TOKENIZERS,
    default_workers,
    encode,
    segment,
    tokenize,
    tokenize_many,
    truncated,
)
from rnnpipe.model.vocabulary import PAD_ID, UNK_ID


def test_tokenizers():
    assert tokenize("Hello, World! It's 2026.", "word") == ["hello", "world", "it's", "2026"]
    assert tokenize("snake_case and-dash", "word") == ["snake", "case", "and", "dash"]
    assert tokenize("好 书！\n", "char") == ["好", "书", "！"]
    assert tokenize("这本书非常好看", "jieba") == ["这", "本书", "非常", "好看"]
    assert tokenize("  好\u3000看  ", "jieba") == ["好", "看"]  # no whitespace tokens
    assert sorted(TOKENIZERS) == ["char", "jieba", "word"]


def test_no_token_holds_whitespace_or_the_packing_separators():
    text = "a\x1fb\x1ec 好\t看\u3000书"
    for name in TOKENIZERS:
        assert all(t and not any(c.isspace() for c in t) for t in tokenize(text, name)), name


@pytest.mark.parametrize("tokenizer", ["jieba", "char", "word"])
def test_parallel_segmentation_matches_serial(tokenizer):
    texts = [f"第{i}本书非常好看，但是价格太贵了 Price {i} isn't bad" for i in range(2500)]
    texts[7] = ""  # documents without tokens keep their place
    texts[2100] = "   "
    parallel = tokenize_many(texts, tokenizer, workers=2)
    assert parallel == tokenize_many(texts, tokenizer, workers=1)
    assert len(parallel) == len(texts) and parallel[7] == [] and parallel[2100] == []


def test_few_texts_are_segmented_in_process():
    assert tokenize_many(["好书", "hello"], "char", workers=4) == [["好", "书"],
                                                                 ["h", "e", "l", "l", "o"]]
    assert tokenize_many([], "word") == []


def test_default_workers():
    assert default_workers(3) == 3
    assert default_workers(0) >= 1


def test_ids_unknown_tokens_and_padding():
    token_ids = {"<PAD>": 0, "<UNK>": 1, "c": 2, "b": 3}
    ids = encode([["c", "b", "zzz"], []], token_ids, max_len=4)
    assert ids.dtype == np.int32
    assert ids.tolist() == [[2, 3, UNK_ID, PAD_ID], [PAD_ID] * 4]
    assert encode([], token_ids, max_len=3).shape == (0, 3)


@pytest.mark.parametrize(("truncate", "kept"), [
    ("head", ["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7"]),
    ("tail", ["t12", "t13", "t14", "t15", "t16", "t17", "t18", "t19"]),
    # head+tail: the first quarter of max_len and the last three quarters.
    ("head+tail", ["t0", "t1", "t14", "t15", "t16", "t17", "t18", "t19"]),
])
def test_long_documents_are_cut(truncate, kept):
    tokens = [f"t{i}" for i in range(20)]
    assert list(truncated(tokens, 8, truncate)) == kept
    token_ids = {t: i + 2 for i, t in enumerate(tokens)}
    assert encode([tokens], token_ids, 8, truncate).tolist() == [[token_ids[t] for t in kept]]


@pytest.mark.parametrize("truncate", ["head", "tail", "head+tail"])
def test_short_documents_are_never_cut(truncate):
    tokens = ["a", "b", "c"]
    assert list(truncated(tokens, 3, truncate)) == tokens
    assert encode([tokens], {"a": 2, "b": 3, "c": 4}, 5, truncate).tolist() == [[2, 3, 4, 0, 0]]


def test_head_and_tail_with_a_tiny_max_len():
    tokens = ["a", "b", "c", "d", "e"]
    assert list(truncated(tokens, 1, "head+tail")) == ["e"]  # no room for a head
    assert list(truncated(tokens, 4, "head+tail")) == ["a", "c", "d", "e"]


def decode_chunks(results) -> list[tuple[object, list[list[str]]]]:
    """`segment`'s results back to tokens per text."""
    out = []
    for tag, tokens, ids, lengths in results:
        ends = np.cumsum(lengths)
        out.append((tag, [[tokens[i] for i in ids[end - n:end]]
                          for n, end in zip(lengths.tolist(), ends.tolist(), strict=True)]))
    return out


@pytest.mark.parametrize("tokenizer", ["jieba", "char", "word"])
def test_segment_streams_chunks_in_order_in_parallel(tokenizer):
    texts = [f"第{i}本书非常好看，但是价格太贵了 Price {i} isn't bad" for i in range(600)]
    texts[5] = ""
    chunks = [(f"chunk{i}", texts[i:i + 37]) for i in range(0, len(texts), 37)]
    serial = decode_chunks(segment(iter(chunks), tokenizer, workers=1))
    assert [tag for tag, _ in serial] == [tag for tag, _ in chunks]
    assert [t for _, part in serial for t in part] == [tokenize(t, tokenizer) for t in texts]
    assert decode_chunks(segment(iter(chunks), tokenizer, workers=2, in_flight=1)) == serial


def test_segment_submits_only_a_few_chunks_ahead():
    """Chunks are pulled from the input as results are taken: memory stays flat."""
    pulled = []

    def chunks():
        for i in range(50):
            pulled.append(i)
            yield i, ["好书"] * 10

    results = segment(chunks(), "char", workers=2, in_flight=2)
    next(results)
    assert len(pulled) <= 2 * 2 + 1
    assert sum(1 for _ in results) == 49


def test_segment_ids_are_local_to_the_chunk():
    ((tag, tokens, ids, lengths),) = list(segment([("t", ["b a b", "c", ""])], "word", 1))
    assert tag == "t" and tokens == ["b", "a", "c"]
    assert ids.tolist() == [0, 1, 0, 2] and lengths.tolist() == [3, 1, 0]
    assert ids.dtype == lengths.dtype == np.int32
