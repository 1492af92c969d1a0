"""Classification scores in NumPy alone, shared by training (validation after every epoch), the
evaluate step and the promotion gate, so every score of a run is computed the same way."""

from __future__ import annotations

import numpy as np


def confusion(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts `[actual, predicted]`."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (np.asarray(y_true), np.asarray(y_pred)), 1)
    return matrix


def per_class(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, np.ndarray]:
    """Precision, recall, F1 and support per class (0 where undefined)."""
    matrix = confusion(y_true, y_pred, num_classes)
    tp = np.diag(matrix).astype(np.float64)
    predicted, support = matrix.sum(axis=0), matrix.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(support > 0, tp / support, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Share of exact matches."""
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1 (a class never predicted nor present counts as 0, as
    scikit-learn's `f1_score(average="macro", zero_division=0)` does)."""
    return float(np.mean(per_class(y_true, y_pred, num_classes)["f1"]))


def scores(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict[str, float]:
    """`accuracy` and `macro_f1`, rounded as the reports keep them."""
    return {"accuracy": round(accuracy(y_true, y_pred), 6),
            "macro_f1": round(macro_f1(y_true, y_pred, num_classes), 6)}
