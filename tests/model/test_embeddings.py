"""Pretrained vector reader: every format (and gzip'd), alignment, coverage, random rows, the
error messages, and that a big file is streamed rather than held."""

from __future__ import annotations

import bz2
import gzip
import io
import struct
import tarfile
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rnnpipe.errors import DataError
from rnnpipe.model.embeddings import Coverage, load_embeddings

DIM = 4
# Values exact in float32, so a row can be compared with ==.
VECTORS = {
    "the": [0.5, -1.25, 2.0, 0.125],
    "中国": [1.0, 0.0, -0.5, 3.0],
    ",": [0.25, 0.25, -0.75, 1.5],
    "猫": [-2.0, 1.5, 0.75, -0.25],
    "unused": [9.0, 9.0, 9.0, 9.0],
}
TOKENS = ["<PAD>", "<UNK>", "the", "中国", "never_in_file", "猫"]


COMPRESS = {"plain": lambda data: data, "gzip": gzip.compress, "bzip2": bz2.compress}


def _write(path: Path, data: bytes, gz: bool = False, compression: str = "plain") -> Path:
    path.write_bytes(COMPRESS["gzip" if gz else compression](data))
    return path


def _fmt(values) -> bytes:
    return b" ".join(repr(float(v)).encode() for v in values)


def word2vec_text(vectors: dict, header: bool = True, sep: bytes = b" ",
                  end: bytes = b"\n", count: int | None = None) -> bytes:
    """word2vec text; `header=False` is GloVe, `end=b" \\n"` is fastText's .vec."""
    dim = len(next(iter(vectors.values())))
    lines = [b"%d %d\n" % (len(vectors) if count is None else count, dim)] if header else []
    for word, values in vectors.items():
        lines.append(word.encode() + sep + _fmt(values).replace(b" ", sep) + end)
    return b"".join(lines)


def glove(vectors: dict) -> bytes:
    return word2vec_text(vectors, header=False)


def fasttext_vec(vectors: dict) -> bytes:
    return word2vec_text(vectors, end=b" \n")


def word2vec_binary(vectors: dict, newline: bool = True, count: int | None = None) -> bytes:
    dim = len(next(iter(vectors.values())))
    out = [b"%d %d\n" % (len(vectors) if count is None else count, dim)]
    for word, values in vectors.items():
        out.append(word.encode() + b" " + struct.pack(f"<{dim}f", *values)
                   + (b"\n" if newline else b""))
    return b"".join(out)


def _assert_aligned(matrix: np.ndarray, tokens=TOKENS, vectors=VECTORS) -> None:
    assert matrix.dtype == np.float32
    assert matrix.shape == (len(tokens), DIM)
    assert not matrix[0].any()  # <PAD>
    for row, token in enumerate(tokens):
        if token in vectors:
            np.testing.assert_array_equal(matrix[row], np.float32(vectors[token]), err_msg=token)


WRITERS: dict[str, tuple[Callable[[dict], bytes], str]] = {
    "word2vec-text": (word2vec_text, "word2vec-text"),
    "fasttext-vec": (fasttext_vec, "word2vec-text"),
    "glove": (glove, "glove"),
    "word2vec-binary": (word2vec_binary, "word2vec-binary"),
}


@pytest.mark.parametrize("compression", list(COMPRESS))
@pytest.mark.parametrize("kind", list(WRITERS))
def test_each_format_loads_aligned_rows(tmp_path, kind, compression):
    writer, detected = WRITERS[kind]
    path = _write(tmp_path / "vectors", writer(VECTORS), compression=compression)
    matrix, coverage = load_embeddings(path, TOKENS, DIM)
    _assert_aligned(matrix)
    assert coverage == Coverage(vocabulary=3 / 4, tokens=3 / 4, found=3, dimension=DIM,
                                format=detected)
    # The same file with its format named explicitly.
    forced, _ = load_embeddings(path, TOKENS, DIM, file_format=detected)
    np.testing.assert_array_equal(forced, matrix)


def test_compression_is_detected_by_content_not_suffix(tmp_path):
    gz_no_suffix = _write(tmp_path / "vectors.txt", word2vec_text(VECTORS), gz=True)
    plain_gz_suffix = _write(tmp_path / "plain.txt.gz", word2vec_text(VECTORS))
    bz2_as_gz = _write(tmp_path / "vectors.gz", word2vec_text(VECTORS), compression="bzip2")
    for path in (gz_no_suffix, plain_gz_suffix, bz2_as_gz):
        matrix, coverage = load_embeddings(path, TOKENS, DIM)
        _assert_aligned(matrix)
        assert coverage.found == 3


def test_binary_without_newlines_between_records(tmp_path):
    path = _write(tmp_path / "vectors.bin", word2vec_binary(VECTORS, newline=False))
    matrix, coverage = load_embeddings(path, TOKENS, DIM)
    _assert_aligned(matrix)
    assert coverage.format == "word2vec-binary"


def test_coverage_weighted_by_counts(tmp_path):
    path = _write(tmp_path / "vectors.txt", word2vec_text(VECTORS))
    counts = {"the": 10, "中国": 5, "never_in_file": 5}  # 猫 absent: counts 0
    _, coverage = load_embeddings(path, TOKENS, DIM, counts=counts)
    assert coverage.vocabulary == pytest.approx(3 / 4)
    assert coverage.tokens == pytest.approx(15 / 20)
    assert coverage.to_dict() == {"vocabulary": 0.75, "tokens": 0.75, "found": 3,
                                  "dimension": DIM, "format": "word2vec-text"}
    _, frequent_missing = load_embeddings(path, TOKENS, DIM, counts={"never_in_file": 98,
                                                                     "the": 2})
    assert frequent_missing.tokens == pytest.approx(0.02)


def test_random_rows_are_reproducible_and_scaled(tmp_path):
    rng = np.random.default_rng(1)
    vectors = {f"w{i}": list(rng.normal(0, 0.3, DIM).astype(np.float32)) for i in range(200)}
    path = _write(tmp_path / "vectors.txt", word2vec_text(vectors))
    tokens = ["<PAD>", "<UNK>", *vectors, *(f"miss{i}" for i in range(2000))]
    a, _ = load_embeddings(path, tokens, DIM, seed=7)
    b, _ = load_embeddings(path, tokens, DIM, seed=7)
    c, _ = load_embeddings(path, tokens, DIM, seed=8)
    np.testing.assert_array_equal(a, b)
    found, missing = slice(2, 202), slice(202, None)
    np.testing.assert_array_equal(a[found], c[found])  # the file's rows do not depend on the seed
    assert not np.array_equal(a[missing], c[missing])
    assert not a[0].any() and a[1].any()  # <PAD> zero, <UNK> random
    assert abs(a[missing].mean()) < 0.02
    assert a[missing].std() == pytest.approx(a[found].std(), rel=0.05)


def test_first_occurrence_wins_and_header_count_is_ignored(tmp_path):
    data = word2vec_text(VECTORS, count=999) + b"the 7 7 7 7\n"
    matrix, coverage = load_embeddings(_write(tmp_path / "v.txt", data), TOKENS, DIM)
    _assert_aligned(matrix)
    binary = word2vec_binary(VECTORS, count=2) + b"the " + struct.pack("<4f", 7, 7, 7, 7)
    matrix, _ = load_embeddings(_write(tmp_path / "v.bin", binary), TOKENS, DIM)
    _assert_aligned(matrix)


def test_separators_whitespace_bom_crlf_and_blank_lines(tmp_path):
    tabs = word2vec_text(VECTORS, sep=b"\t")
    messy = (b"\xef\xbb\xbf" + glove(VECTORS).replace(b" ", b"  ").replace(b"\n", b" \t\r\n")
             + b"\n\n")
    for name, data in [("tabs.txt", tabs), ("messy.txt", messy)]:
        matrix, coverage = load_embeddings(_write(tmp_path / name, data), TOKENS, DIM)
        _assert_aligned(matrix)
        assert coverage.found == 3


def test_chinese_words_and_unicode_spaces_inside_words(tmp_path):
    # U+3000 and U+00A0 are whitespace to Python's str.split, not to the file format: these
    # lines must keep their word whole (and so have the right number of values).
    vectors = {"中国": VECTORS["中国"], "你好\u3000世界": [1, 2, 3, 4], "a\u00a0b": [4, 3, 2, 1],
               "猫": VECTORS["猫"]}
    tokens = ["<PAD>", "<UNK>", "中国", "猫", "你好"]
    matrix, coverage = load_embeddings(_write(tmp_path / "zh.txt", word2vec_text(vectors)),
                                       tokens, DIM)
    _assert_aligned(matrix, tokens)
    assert coverage.found == 2


def test_glove_words_with_spaces_are_skipped(tmp_path):
    # GloVe 840B has words like ". . .": more fields than values, the extra ones not numbers.
    data = b"the " + _fmt(VECTORS["the"]) + b"\n. . . 1 2 3 4\n"
    matrix, coverage = load_embeddings(_write(tmp_path / "g.txt", data), ["<PAD>", "<UNK>",
                                                                          "the", "."], DIM)
    assert coverage.found == 1
    np.testing.assert_array_equal(matrix[2], np.float32(VECTORS["the"]))


def test_word_cut_inside_a_character_is_skipped(tmp_path):
    # word2vec.c truncates words at 100 bytes, which can split a UTF-8 character.
    data = word2vec_text(VECTORS) + "中国".encode()[:-1] + b" 1 2 3 4\n"
    matrix, coverage = load_embeddings(_write(tmp_path / "v.txt", data), TOKENS, DIM)
    _assert_aligned(matrix)


def _error(tmp_path: Path, name: str, data: bytes | None, gz: bool = False,
           tokens=TOKENS, dimension: int = DIM, file_format: str = "auto") -> str:
    path = tmp_path / name
    if data is not None:
        _write(path, data, gz)
    with pytest.raises(DataError) as info:
        load_embeddings(path, tokens, dimension, file_format=file_format)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path)), message
    return message[len(str(path)):]


def test_missing_and_empty_files(tmp_path):
    assert _error(tmp_path, "vectors.txt", None) == ": no such file"
    assert _error(tmp_path, "empty.txt", b"") == ": empty file"
    assert _error(tmp_path, "empty.gz", b"", gz=True) == ": empty file"
    assert _error(tmp_path, "header.txt", b"10 4\n") == ": no vectors after the header line"
    (tmp_path / "folder").mkdir()
    assert "is a directory" in _error(tmp_path, "folder", None)


def test_wrong_number_of_values_names_the_line(tmp_path):
    lines = word2vec_text(VECTORS).splitlines(keepends=True)
    short_kept = lines[:]
    short_kept[2] = "中国 1 2 3\n".encode()
    short_skipped = lines[:]
    short_skipped[4] = b"unused 1 2 3\n"  # not in the vocabulary, still checked
    long_skipped = lines[:]
    long_skipped[4] = b"unused 1 2 3 4 5\n"
    word_only = lines[:]
    word_only[2] = "中国\n".encode()
    for data, expected in [(short_kept, ":3: expected 4 values after the word, found 3"),
                           (short_skipped, ":5: expected 4 values after the word, found 3"),
                           (long_skipped, ":5: expected 4 values after the word, found 5"),
                           (word_only, ":3: expected 4 values after the word, found 0")]:
        assert _error(tmp_path, "vectors.txt", b"".join(data)) == expected
    glove_short = glove(VECTORS) + b"extra 1 2 3\n"
    assert _error(tmp_path, "g.txt", glove_short) == ":6: expected 4 values after the word, found 3"


def test_bad_numbers_name_the_line(tmp_path):
    lines = word2vec_text(VECTORS).splitlines(keepends=True)
    for bad, expected in [(b"abc", ":3: 'abc' is not a number"),
                          (b"nan", ":3: 'nan' is not a finite float32"),
                          (b"-inf", ":3: '-inf' is not a finite float32"),
                          (b"1e39", ":3: '1e39' is not a finite float32")]:
        data = lines[:]
        data[2] = "中国 1 2 ".encode() + bad + b" 4\n"
        assert _error(tmp_path, "vectors.txt", b"".join(data)).startswith(expected)


def test_invalid_utf8_names_the_line(tmp_path):
    data = word2vec_text(VECTORS) + "中国".encode("gbk") + b" 1 2 3 4\n"
    message = _error(tmp_path, "vectors.txt", data)
    assert message.startswith(":7: the word is not valid UTF-8")


def test_binary_errors_name_the_record(tmp_path):
    good = word2vec_binary(VECTORS)
    assert _error(tmp_path, "vectors.bin", good[:-7]) == (
        ": truncated record 5 (file ends inside a vector)")
    assert _error(tmp_path, "vectors.bin", good + b"dangling") == (
        ": truncated record 6 (file ends inside a word)")
    nan = word2vec_binary({**VECTORS, "the": [1, float("nan"), 2, 3]})
    header = len(b"5 4\n")
    assert _error(tmp_path, "vectors.bin", nan) == (
        f": record 1 (byte {header}): the vector of 'the' has NaN or inf values")
    gbk = word2vec_binary(VECTORS) + "中国".encode("gbk") + b" " + struct.pack("<4f", 1, 2, 3, 4)
    assert _error(tmp_path, "vectors.bin", gbk).startswith(
        f": record 6 (byte {len(good)}): the word is not valid UTF-8")


def test_dimension_mismatch_names_both_and_the_fix(tmp_path):
    for name, data in [("vectors.vec", fasttext_vec(VECTORS)), ("glove.txt", glove(VECTORS)),
                       ("vectors.bin", word2vec_binary(VECTORS))]:
        assert _error(tmp_path, name, data, dimension=128) == (
            ": the vectors have 4 dimensions but train.embedding_dim is 128; "
            "set train.embedding_dim: 4")


def test_no_token_found_suggests_the_tokenizer(tmp_path):
    tokens = ["<PAD>", "<UNK>", "中", "国", "猫"]
    message = _error(tmp_path, "vectors.txt", word2vec_text({"中国": [1, 2, 3, 4]}),
                     tokens=tokens)
    assert message.startswith(": 0 of 3 vocabulary tokens were found")
    assert "'中国'" in message and "tokenizer" in message and "jieba" in message


def test_corrupt_compressed_data(tmp_path):
    for compression in ("gzip", "bzip2"):
        data = COMPRESS[compression](word2vec_text(VECTORS) * 50)
        truncated = _error(tmp_path, "vectors.z", data[: len(data) // 2])
        assert f"corrupt {compression} data" in truncated
        damaged = data[:20] + bytes(64) + data[84:]
        assert f"corrupt {compression} data" in _error(tmp_path, "vectors.z", damaged)


def test_tar_archive_is_refused_with_a_hint(tmp_path):
    # Tencent's vectors ship as a .tar.gz holding the .txt.
    member = word2vec_text(VECTORS)
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        info = tarfile.TarInfo("tencent/vectors.txt")
        info.size = len(member)
        tar.addfile(info, io.BytesIO(member))
    assert "a tar archive" in _error(tmp_path, "vectors.tar.gz", archive.getvalue())


def test_forced_format_must_match_the_file(tmp_path):
    assert "GloVe files lack" in _error(tmp_path, "v.txt", word2vec_text(VECTORS),
                                        file_format="glove")
    assert ":1: expected a 'count dimension' header" in _error(
        tmp_path, "g.txt", glove(VECTORS), file_format="word2vec-text")
    assert "are text, not float32" in _error(tmp_path, "v.txt", word2vec_text(VECTORS),
                                             file_format="word2vec-binary")
    assert "is this a word2vec binary file" in _error(
        tmp_path, "v.bin", word2vec_binary(VECTORS), file_format="word2vec-text")
    with pytest.raises(ValueError, match="file_format"):
        load_embeddings(tmp_path / "v.txt", TOKENS, DIM, file_format="fasttext")


def test_fasttext_bin_model_is_refused_with_a_hint(tmp_path):
    data = struct.pack("<ii", 793712314, 12) + bytes(range(256)) * 4
    assert ".vec file" in _error(tmp_path, "cc.zh.300.bin", data)


def test_tokens_must_start_with_the_special_tokens(tmp_path):
    path = _write(tmp_path / "v.txt", word2vec_text(VECTORS))
    for tokens in (["the", "中国"], ["<PAD>", "<UNK>"], ["<PAD>", "<UNK>", "the", "the"]):
        with pytest.raises(ValueError):
            load_embeddings(path, tokens, DIM)


@pytest.mark.parametrize("kind", ["word2vec-text", "word2vec-binary"])
def test_big_file_is_streamed(tmp_path, kind):
    # 100k words (13-22 MB); only the vocabulary's 50 rows may be kept. Peak Python memory must
    # stay near the 1 MiB read buffer (measured: ~1.1 MB text, ~2.1 MB binary).
    n, dim = 100_000, 32
    vector = np.round(np.random.default_rng(0).normal(size=dim), 3).astype(np.float32)
    if kind == "word2vec-text":
        values = b" " + b" ".join(b"%.3f" % v for v in vector) + b"\n"
    else:
        values = b" " + vector.tobytes() + b"\n"
    path = tmp_path / "big"
    with path.open("wb") as f:
        f.write(b"%d %d\n" % (n, dim))
        f.write(b"".join(b"w%d" % i + values for i in range(n)))
    size = path.stat().st_size
    tokens = ["<PAD>", "<UNK>", *(f"w{i}" for i in range(0, n, n // 50))]
    tracemalloc.start()
    try:
        matrix, coverage = load_embeddings(path, tokens, dim)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert coverage.found == 50 and coverage.format == kind
    np.testing.assert_array_equal(matrix[2:], np.tile(vector, (50, 1)))
    assert size > 12_000_000
    assert peak < 3_000_000, (peak, size)
