"""Ragged token ids: cutting any `max_len` with any truncation from them equals `text.encode`,
batches equal those cut from the padded matrix, predictions equal `network.predict_proba`, and a
memory-mapped split can hand its pages back and still be read."""

from __future__ import annotations

import numpy as np
import pytest

from rnnpipe.datafiles import read_ids, write_ids
from rnnpipe.model.network import bucketed_batches, predict_proba
from rnnpipe.model.ragged import (
    PaddedInputs,
    RaggedIds,
    RaggedInputs,
    as_inputs,
    cut_lengths,
    gather,
)
from rnnpipe.model.ragged import predict_proba as ragged_predict_proba
from rnnpipe.model.text import encode


def random_rows(n: int = 200, longest: int = 40, seed: int = 0) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    rows = [rng.integers(1, 60, size=rng.integers(0, longest)).tolist() for _ in range(n)]
    rows[3] = []  # an empty document
    return rows


def as_tokens(rows: list[list[int]]) -> tuple[list[list[str]], dict[str, int]]:
    return [[f"t{i}" for i in row] for row in rows], {f"t{i}": i for i in range(60)}


@pytest.mark.parametrize("truncate", ["head", "tail", "head+tail"])
@pytest.mark.parametrize("max_len", [1, 2, 3, 7, 8, 9, 17, 39, 64])
def test_cutting_from_ids_equals_encode(truncate, max_len):
    rows = random_rows()
    data = RaggedIds.from_rows(rows, np.zeros(len(rows)))
    tokens, token_ids = as_tokens(rows)
    padded = encode(tokens, token_ids, max_len, truncate)
    np.testing.assert_array_equal(gather(data, np.arange(len(rows)), max_len, truncate), padded)
    picked = np.array([17, 3, 0, 199, 42])
    np.testing.assert_array_equal(gather(data, picked, max_len, truncate), padded[picked])


@pytest.mark.parametrize("truncate", ["head", "tail", "head+tail"])
def test_batches_from_ids_equal_batches_from_the_padded_matrix(truncate):
    rows = random_rows(300, longest=90)
    data = RaggedIds.from_rows(rows, np.zeros(len(rows)))
    tokens, token_ids = as_tokens(rows)
    ragged = RaggedInputs(data, 50, truncate)
    padded = PaddedInputs(encode(tokens, token_ids, 50, truncate))
    np.testing.assert_array_equal(ragged.lengths, padded.lengths)
    assert len(ragged) == len(padded) == 300
    batches = bucketed_batches(ragged.lengths, 32, np.random.default_rng(1), pool=3)
    for rows_ in [*batches, np.array([3]), np.array([3, 4])]:
        np.testing.assert_array_equal(ragged.batch(rows_), padded.batch(rows_))


def test_cut_lengths():
    assert cut_lengths(np.array([0, 1, 5, 9]), 5).tolist() == [1, 1, 5, 5]


class Model:
    """A model whose probabilities depend on the batch's ids (their sum, their width)."""

    output_shape = (None, 2)

    def predict_on_batch(self, x):
        score = (x.sum(axis=1) % 7) / 7.0 + x.shape[1] / 1000
        return np.stack([score, 1 - score], axis=1)


def test_predictions_from_ids_equal_predictions_from_padded_ids():
    rows = random_rows(150)
    data = RaggedIds.from_rows(rows, np.zeros(len(rows)))
    tokens, token_ids = as_tokens(rows)
    seen: list[int] = []
    ragged = ragged_predict_proba(Model(), RaggedInputs(data, 24, "tail"), 16, seen.append)
    np.testing.assert_array_equal(
        ragged, predict_proba(Model(), encode(tokens, token_ids, 24, "tail"), 16))
    assert sum(seen) == 150
    assert as_inputs(encode(tokens, token_ids, 24)).lengths.shape == (150,)


def test_a_memory_mapped_split_hands_pages_back_and_reads_on(tmp_path):
    rows = random_rows(500)
    with write_ids(tmp_path / "train") as writer:
        writer.add(np.concatenate([np.array(r, dtype=np.int32) for r in rows]),
                   np.array([len(r) for r in rows]), np.zeros(len(rows)))
    data = read_ids(tmp_path / "train")
    before = gather(data, np.arange(500), 30, "head+tail")
    data.release()
    inputs = RaggedInputs(data, 30, "head+tail")
    inputs.release()
    np.testing.assert_array_equal(gather(data, np.arange(500), 30, "head+tail"), before)
    RaggedIds.from_rows([[1]], [0]).release()  # arrays in memory: nothing to hand back
