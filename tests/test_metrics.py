"""Scores in NumPy alone agree with scikit-learn's, including classes that are missing from the
true labels, the predictions, or both."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)

from rnnpipe.metrics import accuracy, confusion, macro_f1, per_class, scores


def test_a_worked_example():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    assert confusion(y_true, y_pred, 3).tolist() == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    classes = per_class(y_true, y_pred, 3)
    assert classes["precision"][1] == pytest.approx(2 / 3)
    assert classes["recall"][1] == 1.0
    assert classes["f1"][1] == pytest.approx(0.8)
    assert classes["support"].tolist() == [2, 2, 2]
    assert accuracy(y_true, y_pred) == pytest.approx(4 / 6)
    assert macro_f1(y_true, y_pred, 3) == pytest.approx(np.mean(classes["f1"]))
    assert scores(y_true, y_pred, 3) == {"accuracy": 0.666667,
                                         "macro_f1": round(macro_f1(y_true, y_pred, 3), 6)}


@pytest.mark.parametrize("seed", range(40))
def test_agrees_with_sklearn_on_random_data(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(2, 7))
    n = int(rng.integers(1, 40))
    y_true = rng.integers(0, k, size=n)
    # Sometimes predictions cluster on few classes, so some are never predicted.
    y_pred = rng.integers(0, max(1, k - int(rng.integers(0, k))), size=n)
    if seed % 3 == 0:  # a class that is never the true label
        y_true = np.where(y_true == k - 1, 0, y_true)
    labels = list(range(k))
    assert accuracy(y_true, y_pred) == pytest.approx(accuracy_score(y_true, y_pred))
    assert macro_f1(y_true, y_pred, k) == pytest.approx(
        f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))
    assert confusion(y_true, y_pred, k).tolist() == \
        confusion_matrix(y_true, y_pred, labels=labels).tolist()
    precision, recall, f1, support = precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0)
    classes = per_class(y_true, y_pred, k)
    np.testing.assert_allclose(classes["precision"], precision)
    np.testing.assert_allclose(classes["recall"], recall)
    np.testing.assert_allclose(classes["f1"], f1)
    np.testing.assert_array_equal(classes["support"], support)


def test_a_class_neither_present_nor_predicted_counts_as_zero():
    y = np.array([0, 1, 0, 1])
    assert macro_f1(y, y, 2) == 1.0
    assert macro_f1(y, y, 4) == pytest.approx(0.5)  # two empty classes score 0
    assert macro_f1(y, y, 4) == pytest.approx(
        f1_score(y, y, labels=[0, 1, 2, 3], average="macro", zero_division=0))


def test_empty_input():
    empty = np.array([], dtype=int)
    assert accuracy(empty, empty) == 0.0
    assert confusion(empty, empty, 2).tolist() == [[0, 0], [0, 0]]
    assert scores(empty, empty, 2) == {"accuracy": 0.0, "macro_f1": 0.0}
