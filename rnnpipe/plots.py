"""The evaluate step's figures as PNG files: the confusion matrix and the training curves. The
bytes are reproducible (no timestamp, a fixed "Software" entry), so DVC sees no change when
nothing changed."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rnnpipe.io import atomic_path


def plot_confusion(matrix: list[list[int]], labels: list[str], path: Path) -> None:
    """Confusion matrix heat map with counts, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data = np.array(matrix)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(data, cmap="Blues")
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, str(data[i, j]), ha="center", va="center",
                    color="white" if data[i, j] > data.max() / 2 else "black")
    ax.set_title("Test confusion matrix")
    fig.tight_layout()
    _save_figure(fig, path)


def plot_history(history_path: Path, path: Path) -> None:
    """Loss and accuracy per epoch, train vs validation, as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(history_path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    epochs = [int(r["epoch"]) for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, [float(r[f"train_{metric}"]) for r in rows], marker="o", label="train")
        ax.plot(epochs, [float(r[f"val_{metric}"]) for r in rows], marker="o", label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.legend()
    fig.tight_layout()
    _save_figure(fig, path)


def _save_figure(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    # A fixed "Software" entry and no timestamp keep the PNG bytes reproducible.
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
