"""Tokenizers and id encoding, shared by the vocabulary step, training and the served model.

`jieba` segments Chinese into words (the tutorial's choice), `char` splits into characters
(whitespace dropped), `word` lower-cases English and keeps regex words. Segmenting a corpus runs
in parallel over the cores, chunk by chunk (`segment`: a few chunks in flight, so memory stays
flat however big the corpus); the vocabulary step writes the result once, as ids, cached by DVC.
"""

from __future__ import annotations

import collections
import logging
import multiprocessing
import os
import re
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

import numpy as np

from rnnpipe.model.vocabulary import PAD_ID, UNK_ID

# Separators for handing a worker's tokens back as one string. Python counts both as whitespace
# (`str.isspace`), and no tokenizer here ever returns whitespace inside a token, so they cannot
# occur in one.
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")
_jieba = None


def _jieba_tokens(text: str) -> list[str]:
    global _jieba
    if _jieba is None:
        import jieba

        jieba.setLogLevel(logging.WARNING)
        jieba.initialize()
        _jieba = jieba
    # HMM off: new-word discovery is slower and its guesses are less stable across versions.
    return [t for t in (w.strip() for w in _jieba.cut(text, HMM=False)) if t]


def _char_tokens(text: str) -> list[str]:
    return [c for c in text if not c.isspace()]


def _word_tokens(text: str) -> list[str]:
    return _WORD.findall(text.lower())


TOKENIZERS: dict[str, Callable[[str], list[str]]] = {
    "jieba": _jieba_tokens,
    "char": _char_tokens,
    "word": _word_tokens,
}


def tokenize(text: str, tokenizer: str) -> list[str]:
    """Split one text into tokens with the named tokenizer (`jieba`, `char` or `word`)."""
    return TOKENIZERS[tokenizer](text)


def default_workers(workers: int = 0) -> int:
    """`workers`, or every core this process may use when it is 0."""
    if workers > 0:
        return workers
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _pool(tokenizer: str, workers: int) -> ProcessPoolExecutor:
    if tokenizer == "jieba":
        _jieba_tokens("")  # load the dictionary once, before forking, so workers share it
    methods = multiprocessing.get_all_start_methods()
    context = multiprocessing.get_context("fork" if "fork" in methods else None)
    return ProcessPoolExecutor(max_workers=workers, mp_context=context)


def tokenize_many(texts: Sequence[str], tokenizer: str, workers: int = 0) -> list[list[str]]:
    """Tokenize `texts` in order, in parallel over `workers` processes (0 = all cores): `segment`
    over chunks of them, each document's token list rebuilt (small inputs in this process)."""
    workers = 1 if len(texts) < 2000 else default_workers(workers)
    size = max(500, len(texts) // (workers * 8))
    chunks = ((None, texts[i:i + size]) for i in range(0, len(texts), size))
    out: list[list[str]] = []
    for _, tokens, ids, lengths in segment(chunks, tokenizer, workers):
        start = 0
        for n in lengths.tolist():
            out.append([tokens[i] for i in ids[start:start + n].tolist()])
            start += n
    return out


def _segment_chunk(args: tuple[str, Sequence[str]]) -> tuple[list[str], bytes, bytes]:
    """A chunk's tokens as ids local to the chunk: the chunk's distinct tokens in order of first
    appearance, every token's local id (int32 bytes) and every document's token count. Far less
    to pickle, and to look up in the parent, than a string per token."""
    tokenizer, texts = args
    cut = TOKENIZERS[tokenizer]
    local: dict[str, int] = {}
    ids, lengths = array("i"), array("i")
    for text in texts:
        tokens = cut(text)
        lengths.append(len(tokens))
        ids.extend([local.setdefault(t, len(local)) for t in tokens])
    return list(local), ids.tobytes(), lengths.tobytes()


def segment(chunks: Iterable[tuple[Any, Sequence[str]]], tokenizer: str, workers: int = 0,
            in_flight: int = 2) -> Iterator[tuple[Any, list[str], np.ndarray, np.ndarray]]:
    """Segment `(tag, texts)` chunks in order, in parallel over `workers` processes (0 = all
    cores) with at most `in_flight` chunks per worker submitted ahead: for each chunk, its tag
    (kept here, never sent), its distinct tokens, each token's index into them (int32) and each
    text's token count (int32)."""
    workers = default_workers(workers)

    def unpack(tag: Any, result: tuple[list[str], bytes, bytes]):
        tokens, ids, lengths = result
        return tag, tokens, np.frombuffer(ids, dtype=np.int32), np.frombuffer(lengths,
                                                                              dtype=np.int32)

    if workers == 1:
        for tag, texts in chunks:
            yield unpack(tag, _segment_chunk((tokenizer, texts)))
        return
    pending: collections.deque[tuple[Any, Future]] = collections.deque()
    with _pool(tokenizer, workers) as pool:
        for tag, texts in chunks:
            pending.append((tag, pool.submit(_segment_chunk, (tokenizer, texts))))
            if len(pending) >= workers * in_flight:
                tag, future = pending.popleft()
                yield unpack(tag, future.result())
        while pending:
            tag, future = pending.popleft()
            yield unpack(tag, future.result())


def encode(token_lists: Sequence[Sequence[str]], token_ids: dict[str, int], max_len: int,
           truncate: str = "head") -> np.ndarray:
    """Map tokens to ids (unknown → `<UNK>`), cut to `max_len`, right-pad with `<PAD>`.

    A longer document keeps its first `max_len` tokens (`head`), its last (`tail`), or both ends
    (`head+tail`: the first quarter and the last three quarters of `max_len`, the split Sun et al.
    (2019) found best for long texts: openings and conclusions carry the topic).
    """
    ids = np.full((len(token_lists), max_len), PAD_ID, dtype=np.int32)
    for row, tokens in enumerate(token_lists):
        kept = truncated(tokens, max_len, truncate)
        ids[row, :len(kept)] = [token_ids.get(t, UNK_ID) for t in kept]
    return ids


def truncated(tokens: Sequence[str], max_len: int, truncate: str = "head") -> Sequence[str]:
    """The tokens a document keeps at `max_len` (see `encode`)."""
    if len(tokens) <= max_len:
        return tokens
    if truncate == "head":
        return tokens[:max_len]
    if truncate == "tail":
        return tokens[-max_len:]
    head = max_len // 4
    return [*tokens[:head], *tokens[len(tokens) - (max_len - head):]]
