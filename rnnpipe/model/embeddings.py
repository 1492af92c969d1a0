"""Pretrained word vectors for the Embedding layer: read a vector file, keep the vocabulary's rows.

`load_embeddings(path, tokens, dimension)` returns a float32 matrix aligned to the vocabulary
(row i is the vector of `tokens[i]`) and a `Coverage` saying how much of the vocabulary, and of
the training text, the file covers. Training uses the matrix to initialise its Embedding layer.

Formats (`file_format="auto"` detects them; each may be gzip- or bzip2-compressed, detected by
the magic bytes rather than the `.gz`/`.bz2` suffix; Chinese-Word-Vectors ships `.bz2`):

- `word2vec-text`: a `count dim` header line, then `word v1 ... vD` per line. fastText `.vec`
  files and the Tencent / Sogou (Chinese-Word-Vectors) files are this format.
- `glove`: the same lines without the header; the dimension is read from the first line.
- `word2vec-binary`: a `count dim\\n` header, then per word its UTF-8 bytes, a space, D
  little-endian float32 and, from most writers, a `\\n`.

Why streaming: the files are big (Tencent's is 8.8 million words x 200 dimensions, ~16 GB of
text) and a vocabulary is a few tens of thousands of words, so the file is read a line (text) or
a record (binary) at a time and only the vocabulary's rows are kept: memory is the output matrix
plus a read buffer, whatever the file's size. The header's word count is ignored (real files
often get it wrong); the file is read to its end. When a word occurs twice the first one wins.

Rows: `<PAD>` (row 0) is zero; `<UNK>` (row 1) and every token the file lacks get random normal
vectors with mean 0 and the standard deviation of the found vectors (over all their values),
drawn from `numpy.random.default_rng(seed)` in row order, so a run is reproducible. `<UNK>` is
never looked up in the file: a file's `<unk>` or `</s>` means something else than ours.

Problems with the file raise `DataError` with one line naming the file and the line (binary: the
record and its byte offset in the uncompressed data), e.g. `vectors.txt:57: expected 300 values
after the word, found 299`.

Speed (measured on the dev container: Python 3.11, CPU time, best of 5, one core of a busy
2-core VM; a synthetic 200k-line x 100-dimension word2vec text file, 192 MB): ~630k lines/s
when no line is kept, ~260k lines/s keeping 20k rows (10% of the lines; parsing a kept line's
100 numbers costs ~25 µs, skipping a line ~1.5 µs); the same file gzip'd ~180k / ~120k lines/s
(decompression dominates); word2vec binary ~1.1M / ~0.9M records/s. With 200 dimensions and
0.5% of the lines kept (Tencent's shape): ~430k lines/s plain, ~95k lines/s gzip'd, so the
Tencent file (8.8M lines) takes ~20 s to scan plain and ~1.5 min gzip'd. See `_value_count` for
how skipped lines are still checked without parsing their numbers.
"""

from __future__ import annotations

import bz2
import gzip
import io
import re
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from rnnpipe.errors import DataError
from rnnpipe.model.vocabulary import PAD, UNK

FORMATS = ("word2vec-text", "word2vec-binary", "glove")
_MAGIC = {b"\x1f\x8b": "gzip", b"BZh": "bzip2"}
_CORRUPT = (EOFError, zlib.error, OSError)  # what gzip/bz2 raise for damaged data (see _corrupt)
# fastText's own `.bin` model starts with this int32 (FASTTEXT_FILEFORMAT_MAGIC_INT32): say so
# rather than fail on its first "line".
_FASTTEXT_BIN_MAGIC = (793712314).to_bytes(4, "little")
_HEADER = re.compile(rb"\s*(\d+)[ \t]+(\d+)\s*")
_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but tab, LF, CR
_READ_BUFFER = 1 << 20
# Binary records are cut from chunks this big; each refill briefly holds two (old tail + new).
_BINARY_CHUNK = 1 << 18
# The longest first line read while detecting the format: enough for a 50k-dimension GloVe line,
# and a bound on what a file without line breaks (not a vector file) makes us read.
_MAX_FIRST_LINE = 1 << 20
# word2vec.c cuts words at 100 bytes; a "word" much longer than that in a binary file means the
# file is not word2vec binary (or we lost our place in it).
_MAX_BINARY_WORD = 1 << 16
_SAMPLE_WORDS = 3


@dataclass(frozen=True)
class Coverage:
    """How much of the vocabulary a vector file covers.

    `vocabulary`: share of the real tokens (ids >= 2; 0 is `<PAD>`, 1 is `<UNK>`) found in the
    file. `tokens`: the same share weighted by the tokens' training counts (the share of the
    vocabulary's training occurrences that get a pretrained vector); equal to `vocabulary` when
    no counts are given. `found`: vocabulary tokens found. `dimension`: the file's vector size.
    `format`: `word2vec-text` (also fastText `.vec`), `word2vec-binary` or `glove`.
    """

    vocabulary: float
    tokens: float
    found: int
    dimension: int
    format: str

    def to_dict(self) -> dict:
        """JSON-ready form."""
        return asdict(self)


def load_embeddings(path: str | Path, tokens: Sequence[str], dimension: int,
                    counts: Mapping[str, int] | None = None, seed: int = 0,
                    file_format: str = "auto") -> tuple[np.ndarray, Coverage]:
    """float32 matrix [len(tokens), dimension] aligned to `tokens` (row i = vector of tokens[i]).

    `tokens` is the vocabulary by id: `<PAD>`, `<UNK>`, then the real tokens. `counts` (token →
    training occurrences, e.g. the vocabulary step's Counter) weights `Coverage.tokens`; tokens
    missing from it count 0. `file_format` is `auto` or one of `FORMATS`. Raises `DataError` for
    an unreadable or malformed file, a dimension other than `dimension`, or a file that has none
    of the vocabulary's tokens; `ValueError` for a `tokens` list without the two special tokens.
    """
    path = Path(path)
    name = str(path)
    if file_format != "auto" and file_format not in FORMATS:
        raise ValueError(f"file_format must be 'auto' or one of {FORMATS}, not {file_format!r}")
    if len(tokens) < 3 or tokens[0] != PAD or tokens[1] != UNK:
        raise ValueError(f"tokens must be {PAD!r}, {UNK!r}, then at least one real token")
    rows = {token: row for row, token in enumerate(tokens) if row >= 2}
    if len(rows) != len(tokens) - 2:
        raise ValueError("tokens has duplicates")

    compression = _check_file(path, name)
    detected, file_dim = _detect(path, name, compression, file_format, dimension)
    if file_dim != dimension:
        raise DataError(f"{name}: the vectors have {file_dim} dimensions but train.embedding_dim "
                        f"is {dimension}; set train.embedding_dim: {file_dim}")

    matrix = np.zeros((len(tokens), dimension), dtype=np.float32)
    found = np.zeros(len(tokens), dtype=bool)
    with _open(path, compression) as stream:
        if detected == "word2vec-binary":
            samples = _read_binary(stream, name, compression, dimension, rows, matrix, found)
        else:
            # A value beyond float32's range becomes inf, which _parse_values reports with its
            # line; numpy's overflow warning would only repeat it (and costs ~5 µs per line to
            # silence line by line).
            with np.errstate(over="ignore"):
                samples = _read_text(stream, name, compression, dimension, rows, matrix, found,
                                     header=detected == "word2vec-text")

    n_found = int(found.sum())
    n_real = len(tokens) - 2
    if n_found == 0:
        file_words = ", ".join(repr(w) for w in samples) or "none"
        vocab_words = ", ".join(repr(t) for t in tokens[2:2 + _SAMPLE_WORDS])
        raise DataError(f"{name}: 0 of {n_real} vocabulary tokens were found (the file's first "
                        f"words: {file_words}; the vocabulary's: {vocab_words}); check that the "
                        f"tokenizer matches the vectors' (jieba words or characters, "
                        f"lower-casing)")

    # Misses get noise on the scale of the pretrained rows, so they neither dominate nor vanish
    # next to them; <PAD> stays zero (it is masked anyway, and zero is the conventional value).
    scale = float(matrix[found].std())
    missing = np.flatnonzero(~found)
    missing = missing[missing != 0]
    rng = np.random.default_rng(seed)
    matrix[missing] = rng.standard_normal((len(missing), dimension), dtype=np.float32) * scale

    vocabulary_share = n_found / n_real
    token_share = vocabulary_share
    if counts is not None:
        weights = np.array([counts.get(t, 0) for t in tokens[2:]], dtype=np.float64)
        total = weights.sum()
        # All-zero counts say nothing about frequency: fall back to the unweighted share.
        if total > 0:
            token_share = float(weights[found[2:]].sum() / total)
    coverage = Coverage(vocabulary=vocabulary_share, tokens=token_share, found=n_found,
                        dimension=file_dim, format=detected)
    return matrix, coverage


def _check_file(path: Path, name: str) -> bool:
    """The file's compression (None, gzip, bzip2); `DataError` if missing, empty or unreadable."""
    try:
        with path.open("rb") as f:
            magic = f.read(3)
    except FileNotFoundError:
        raise DataError(f"{name}: no such file") from None
    except IsADirectoryError:
        raise DataError(f"{name}: is a directory, not a vector file") from None
    except PermissionError:
        raise DataError(f"{name}: cannot read: permission denied") from None
    except OSError as exc:
        raise DataError(f"{name}: cannot read: {exc.strerror or exc}") from None
    if not magic:
        raise DataError(f"{name}: empty file")
    return _MAGIC.get(magic[:2]) or _MAGIC.get(magic)


def _open(path: Path, compression: str | None) -> BinaryIO:
    # GzipFile's and BZ2File's readline are Python methods; a BufferedReader on top iterates
    # lines in C (~15% faster for gzip here).
    if compression == "gzip":
        return io.BufferedReader(gzip.GzipFile(path, "rb"), buffer_size=_READ_BUFFER)
    if compression == "bzip2":
        return io.BufferedReader(bz2.BZ2File(path, "rb"), buffer_size=_READ_BUFFER)
    return path.open("rb", buffering=_READ_BUFFER)


def _corrupt(name: str, where: str, compression: str | None, exc: Exception) -> DataError:
    """The error for damaged compressed data. In a plain file an `OSError` is the disk's, not
    the data's, and propagates (the CLI reports it as such); in a compressed one it is what
    gzip (`BadGzipFile`) and bz2 ("Invalid data stream") raise for damaged data."""
    if compression is None:
        raise exc
    return DataError(f"{name}{where}: corrupt {compression} data ({exc})")


def _detect(path: Path, name: str, compression: str | None, file_format: str,
            dimension: int) -> tuple[str, int]:
    """(format, dimension) from the file's start; checks a forced `file_format` against it.

    A header line (`count dim`) means word2vec; text and binary are told apart by the bytes after
    the first word: text values are UTF-8 without control characters, while D float32 (D >= 2)
    almost never are. No header means GloVe, whose dimension is the first line's value count.
    """
    try:
        with _open(path, compression) as stream:
            first = stream.readline(_MAX_FIRST_LINE)
            after = b""
            header = _HEADER.fullmatch(first.removeprefix(_BOM))
            if header:
                dim = int(header.group(2))
                # Enough for the first binary record (a word of up to ~1 KB and its vector);
                # capped, as a header's dimension is not to be trusted yet.
                after = stream.read(min(4 * dim, _MAX_FIRST_LINE) + 1024)
    except _CORRUPT as exc:
        raise _corrupt(name, ":1", compression, exc) from None
    if not first.strip():
        raise DataError(f"{name}: empty file" if not first else f"{name}:1: blank first line; "
                        f"expected a 'count dimension' header or a 'word v1 ... vD' line")
    if first[257:262] == b"ustar":  # Tencent's vectors come as a .tar.gz
        raise DataError(f"{name}: a tar archive, not a vector file; extract the vector file "
                        f"from it first (tar -xf)")
    if first.startswith(_FASTTEXT_BIN_MAGIC):
        raise DataError(f"{name}: a fastText .bin model, not a vector file; use the .vec file "
                        f"fastText writes next to it")

    if header is None:
        if file_format in ("word2vec-text", "word2vec-binary"):
            raise DataError(f"{name}:1: expected a 'count dimension' header ({file_format} "
                            f"format); a file without one is GloVe (file_format: glove or auto)")
        dim = len(first.split()) - 1
        if dim < 1:
            raise DataError(f"{name}:1: a word without values; not a vector file?")
        return "glove", dim

    if dim < 1:
        raise DataError(f"{name}:1: the header says the vectors have {dim} dimensions")
    if file_format == "glove":
        # Two integers are a header, or a one-dimensional GloVe line whose word is a number.
        if dimension != 1:
            raise DataError(f"{name}:1: looks like a word2vec header 'count dimension', which "
                            f"GloVe files lack; use file_format: word2vec-text (or auto)")
        return "glove", 1
    if not after.strip():
        raise DataError(f"{name}: no vectors after the header line")
    # Judge the D*4 bytes after the first word, where a binary file has its first vector: only
    # there, so that a text file's bad word a few lines down gets its own error (not "binary").
    # No space within the sample: no binary word is that long, so text (with a long first word).
    space = after.find(b" ")
    binary = space >= 0 and not _looks_like_text(after[space + 1:space + 1 + 4 * dim])
    if file_format == "word2vec-text" and binary:
        raise DataError(f"{name}:2: not text; is this a word2vec binary file? "
                        f"(file_format: word2vec-binary or auto)")
    if file_format == "word2vec-binary" and not binary:
        raise DataError(f"{name}: the bytes after the header are text, not float32; use "
                        f"file_format: word2vec-text (or auto)")
    return ("word2vec-binary" if binary else "word2vec-text"), dim


def _looks_like_text(data: bytes) -> bool:
    """Whether `data` (cut anywhere) is UTF-8 text without control characters but tab/newline."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        # The sample may end inside a multi-byte character.
        if exc.reason != "unexpected end of data" or exc.end != len(data):
            return False
        text = data[:exc.start].decode("utf-8")
    return _CONTROL.search(text) is None


def _undecodable(word: bytes, exc: UnicodeDecodeError, where: str) -> None:
    """None for a word cut inside its last character; `DataError` for any other invalid byte.

    word2vec.c truncates words at 100 bytes, which can split a multi-byte character: such a
    word cannot be a vocabulary token, so it is skipped. Any other invalid byte means the file
    is not UTF-8 (e.g. GBK), which would otherwise show up only as a baffling 0% coverage.
    (Callers decode inline and build `where` only on failure: per-line work is the hot path.)
    """
    if exc.reason == "unexpected end of data" and exc.end == len(word):
        return None
    raise DataError(f"{where}: the word is not valid UTF-8 ({exc.reason} at byte {exc.start} "
                    f"of {word[:40]!r}); vector files must be UTF-8") from None


def _value_count(rest: bytes, dim: int) -> int:
    """How many whitespace-separated values `rest` (a line after its word) holds.

    Called for every line whose word is not in the vocabulary, so it avoids `split()` (which
    builds D objects, ~2 µs at D=100): the usual line separates values by single spaces, and
    `count(b" ")` is ~4x cheaper. Any other count is recounted exactly. What this misses is a
    line whose doubled spaces or tabs exactly offset a missing or extra value; kept lines are
    always split and checked in full.
    """
    end = len(rest.rstrip())
    if end and rest.count(b" ", 0, end) == dim - 1:
        return dim
    return len(rest.split())


def _spaced_word_values(fields: list[bytes], dim: int) -> bool:
    """Whether a line with more than D values is a word containing spaces plus D values.

    Some real files (GloVe 840B) have words such as `. . .`. Vocabulary tokens never contain
    whitespace, so such a line is skipped. If the extra leading fields are numbers, the line
    has too many values instead, which is an error.
    """
    for field in fields[: len(fields) - dim]:
        try:
            float(field)
        except ValueError:
            return True
    return False


def _parse_values(fields: list[bytes], where: str) -> np.ndarray:
    try:
        vector = np.array(fields, dtype=np.float32)  # the caller ignores overflow warnings
    except ValueError:
        for field in fields:
            try:
                float(field)
            except ValueError:
                text = field.decode("utf-8", "replace")
                raise DataError(f"{where}: {text[:40]!r} is not a number") from None
        # numpy refused the line yet Python reads every field: use Python's reading.
        vector = np.array([float(field) for field in fields], dtype=np.float32)
    if not np.isfinite(vector).all():
        bad = fields[int(np.flatnonzero(~np.isfinite(vector))[0])].decode("utf-8", "replace")
        raise DataError(f"{where}: {bad[:40]!r} is not a finite float32 (NaN, inf or beyond "
                        f"±3.4e38)")
    return vector


def _read_text(stream: BinaryIO, name: str, compression: str | None, dim: int,
               rows: Mapping[str, int], matrix: np.ndarray, found: np.ndarray,
               header: bool) -> list[str]:
    """Fill `matrix`/`found` from word2vec-text or GloVe lines; the file's first few words.

    Lines are read as bytes and split on ASCII whitespace (spaces or tabs, any amount): `str`
    splitting would also split at U+3000 or U+00A0, which occur inside words of Chinese files.
    """
    samples: list[str] = []
    lineno = 0
    try:
        for lineno, line in enumerate(stream, start=1):
            if lineno == 1:
                line = line.removeprefix(_BOM)
                if header:
                    continue
            parts = line.split(None, 1)
            if not parts:
                continue  # blank lines (e.g. at the end) carry nothing
            word_bytes = parts[0]
            rest = parts[1] if len(parts) == 2 else b""
            try:
                word = word_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                word = _undecodable(word_bytes, exc, f"{name}:{lineno}")
            if len(samples) < _SAMPLE_WORDS and word is not None:
                samples.append(word)
            row = rows.get(word) if word is not None else None
            if row is None or found[row]:
                n_values = _value_count(rest, dim)
                if n_values == dim:
                    continue
                fields = rest.split()
            else:
                fields = rest.split()
                n_values = len(fields)
            if n_values < dim or (n_values > dim and not _spaced_word_values(fields, dim)):
                raise DataError(f"{name}:{lineno}: expected {dim} values after the word, "
                                f"found {n_values}")
            if n_values > dim or row is None or found[row]:
                continue  # a word with spaces, not in the vocabulary, or seen before
            matrix[row] = _parse_values(fields, f"{name}:{lineno}")
            found[row] = True
    except _CORRUPT as exc:
        raise _corrupt(name, f":{lineno + 1}", compression, exc) from None
    return samples


def _read_binary(stream: BinaryIO, name: str, compression: str | None, dim: int,
                 rows: Mapping[str, int], matrix: np.ndarray, found: np.ndarray) -> list[str]:
    """Fill `matrix`/`found` from word2vec binary records; the file's first few words.

    Reads in chunks and walks them with an offset (reading a word byte by byte would cost a
    Python call per byte). Before each record the chunk is topped up to hold a whole usual
    record, so the common case makes no further read calls.
    """
    samples: list[str] = []
    size = 4 * dim
    lookahead = size + 1024  # a record with a word of up to ~1 KB (word2vec.c: 100 bytes)
    header_line = stream.readline(_MAX_FIRST_LINE)
    buf = b""
    pos = end = 0  # end: len(buf), kept rather than recomputed (an int object per call)
    base = len(header_line)  # offset of buf[0] in the (uncompressed) file
    record = 0
    eof = False

    def refill(need: int) -> None:
        """Make buf[pos:] at least `need` bytes long unless the file ends first."""
        nonlocal buf, pos, end, base, eof
        while end - pos < need and not eof:
            chunk = stream.read(max(_BINARY_CHUNK, need))
            if not chunk:
                eof = True
            base += pos
            buf = buf[pos:] + chunk
            pos, end = 0, len(buf)

    try:
        while True:
            if end - pos < lookahead and not eof:
                refill(lookahead)
            # word2vec.c ends each record with '\n'; some writers don't.
            while pos < end and buf[pos] == 0x0A:
                pos += 1
            if pos >= end:
                if eof:
                    break
                continue  # a run of newlines longer than the lookahead
            record += 1
            start = base + pos
            space = buf.find(b" ", pos)
            while space < 0:
                if end - pos > _MAX_BINARY_WORD:
                    raise DataError(f"{name}: record {record} (byte {start}): no space after "
                                    f"{_MAX_BINARY_WORD} bytes; not word2vec binary, or "
                                    f"corrupt")
                if eof:
                    raise DataError(f"{name}: truncated record {record} (file ends inside a "
                                    f"word)")
                refill(end - pos + 1)
                space = buf.find(b" ", pos)
            word_bytes = buf[pos:space]
            pos = space + 1
            if end - pos < size:
                refill(size)
                if end - pos < size:
                    raise DataError(f"{name}: truncated record {record} (file ends inside a "
                                    f"vector)")
            try:
                word = word_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                word = _undecodable(word_bytes, exc, f"{name}: record {record} (byte {start})")
            if len(samples) < _SAMPLE_WORDS and word is not None:
                samples.append(word)
            row = rows.get(word) if word is not None else None
            if row is not None and not found[row]:
                vector = np.frombuffer(buf, dtype="<f4", count=dim, offset=pos)
                if not np.isfinite(vector).all():
                    raise DataError(f"{name}: record {record} (byte {start}): the vector of "
                                    f"{word!r} has NaN or inf values")
                matrix[row] = vector
                found[row] = True
            pos += size
    except _CORRUPT as exc:
        raise _corrupt(name, f": record {record}", compression, exc) from None
    return samples
