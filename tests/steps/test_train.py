"""The train step in-process on a tiny corpus: what it writes (model, preprocessing, history,
summary), `max_len: auto`, repeatability, resuming from a checkpoint, class weights, the
still-improving warning, and pretrained embeddings."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from rnnpipe.config import IngestParams, Params, TrainParams, VocabParams
from rnnpipe.datafiles import IDS_FILES, read_ids, write_ids
from rnnpipe.errors import DataError
from rnnpipe.io import read_json
from rnnpipe.model.network import load_model
from rnnpipe.model.vocabulary import Vocabulary
from rnnpipe.steps import train as train_step
from rnnpipe.steps.ingest import ingest
from rnnpipe.steps.train import choose_max_len, fingerprint, label_ids, read_split_ids, train
from rnnpipe.steps.vocab import vocabulary

HISTORY_HEADER = "epoch,train_loss,train_accuracy,val_loss,val_accuracy,val_macro_f1,learning_rate"
EPOCHS = 3


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, corpora) -> Path:
    """A tiny corpus taken through ingest and vocab; returns the data dir."""
    root = tmp_path_factory.mktemp("prepared")
    corpus = corpora.write(root / "reviews.tsv", corpora.zh())
    data = root / "data"
    ingest(IngestParams(source=str(corpus)), data, root / "ingest.json")
    vocabulary(VocabParams(min_count=1, workers=1), data, root / "vocab.json")
    return data


@pytest.fixture(scope="module")
def tiny(tiny_train) -> TrainParams:
    """Three epochs, never stopping early (the resume test needs all three)."""
    return TrainParams(**{**tiny_train, "max_len": "auto", "max_epochs": EPOCHS,
                          "patience": EPOCHS})


def run_train(out: Path, data: Path, params: TrainParams, **kwargs) -> dict:
    return train(params, ids_root=data / "ids", vocab_path=data / "vocab.json",
                 model_path=out / "models" / "model.keras",
                 history_path=out / "reports" / "history.csv",
                 summary_path=out / "reports" / "train.json",
                 checkpoint_dir=out / "checkpoint", **kwargs)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, prepared, tiny) -> tuple[Path, dict, list[dict]]:
    """One uninterrupted run: its folder, summary and the rows `on_epoch` saw."""
    out = tmp_path_factory.mktemp("trained")
    rows: list[dict] = []
    summary = run_train(out, prepared, tiny, on_epoch=rows.append)
    return out, summary, rows


def weights(path: Path) -> list[np.ndarray]:
    return load_model(path).get_weights()


def test_train_writes_model_preprocessing_history_and_summary(trained, prepared):
    out, summary, rows = trained
    assert (out / "models" / "model.keras").exists()
    preprocessing = read_json(out / "models" / "preprocessing.json")
    assert preprocessing == {"max_len": summary["max_len"], "truncate": "head"}
    history = (out / "reports" / "history.csv").read_text().splitlines()
    assert history[0] == HISTORY_HEADER
    assert len(history) == 1 + summary["epochs_run"] == 1 + len(rows) == 1 + EPOCHS
    assert [row["epoch"] for row in rows] == [1, 2, 3]
    assert history[1].split(",")[-1] == "0.01"  # the first epoch's learning rate
    saved = read_json(out / "reports" / "train.json")
    assert saved == {k: v for k, v in summary.items() if k not in ("seconds", "examples_per_s")}
    assert saved["train_examples"] == 64 and saved["monitor"] == "val_accuracy"
    assert 1 <= saved["best_epoch"] <= EPOCHS and saved["stopped_early"] is False
    assert saved["best_val_loss"] == round(rows[saved["best_epoch"] - 1]["val_loss"], 6)
    assert saved["embedding_coverage"] is None and saved["parameters"] > 0
    # Still improving exactly when the best epoch is the last one.
    assert (saved["still_improving"] is not None) == (saved["best_epoch"] == EPOCHS)
    assert not (out / "checkpoint").exists()  # removed once the model is written


def test_max_len_auto_is_the_train_splits_95th_percentile(trained, prepared):
    out, summary, _ = trained
    lengths = np.diff(read_ids(prepared / "ids" / "train").offsets)
    expected = math.ceil(np.percentile(lengths, 95))
    assert summary["max_len"] == expected
    assert read_json(out / "models" / "preprocessing.json")["max_len"] == expected
    assert summary["truncated_share"] == round(float(np.mean(lengths > expected)), 4)


def test_choose_max_len():
    lengths = list(range(1, 101))
    assert choose_max_len(lengths, TrainParams(max_len=7)) == 7
    assert choose_max_len(lengths, TrainParams(max_len="auto")) == 96  # ceil(p95 = 95.05)
    assert choose_max_len(lengths, TrainParams(max_len="auto", max_len_cap=50)) == 50
    assert choose_max_len([0, 0, 0], TrainParams(max_len="auto")) == 1


def test_training_is_repeatable(trained, prepared, tiny, tmp_path):
    out, _, _ = trained
    run_train(tmp_path, prepared, tiny)
    for rel in ("reports/history.csv", "reports/train.json", "models/preprocessing.json"):
        assert (tmp_path / rel).read_bytes() == (out / rel).read_bytes(), rel
    for a, b in zip(weights(tmp_path / "models" / "model.keras"),
                    weights(out / "models" / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_resume_continues_from_the_checkpoint(trained, prepared, tiny, tmp_path):
    out, _, _ = trained

    class Killed(Exception):
        pass

    def die_after_two(row):
        if row["epoch"] == 2:
            raise Killed

    with pytest.raises(Killed):
        run_train(tmp_path, prepared, tiny, on_epoch=die_after_two)
    state = json.loads((tmp_path / "checkpoint" / "state.json").read_text())
    assert len(state["history"]) == 2
    assert not (tmp_path / "models" / "model.keras").exists()
    resumed_epochs: list[dict] = []
    run_train(tmp_path, prepared, tiny, on_epoch=resumed_epochs.append)
    assert [row["epoch"] for row in resumed_epochs] == [3]
    assert (tmp_path / "reports" / "history.csv").read_text() == \
        (out / "reports" / "history.csv").read_text()
    # The same weights, bit for bit. (Not the same file bytes: in one process, Keras numbers
    # the layer names of every model it builds; each DVC stage is a process of its own.)
    for a, b in zip(weights(tmp_path / "models" / "model.keras"),
                    weights(out / "models" / "model.keras"), strict=True):
        np.testing.assert_array_equal(a, b)


def test_a_checkpoint_of_other_params_is_not_resumed(prepared, tiny, tmp_path):
    train_ids = [prepared / "ids" / "train" / name for name in IDS_FILES]
    val_ids = [prepared / "ids" / "val" / name for name in IDS_FILES]
    key = fingerprint(tiny, [prepared / "vocab.json", *train_ids])
    assert key == fingerprint(tiny, [prepared / "vocab.json", *train_ids])
    assert key != fingerprint(dataclasses.replace(tiny, learning_rate=0.02),
                              [prepared / "vocab.json", *train_ids])
    assert key != fingerprint(tiny, [prepared / "vocab.json", *val_ids])


def test_class_weights_and_still_improving_through_main(prepared, tiny, tmp_path, in_dir, capsys):
    """One epoch with balanced class weights: training ends while validation is (trivially)
    still improving, which `rnnpipe train` reports in train.json and as a warning."""
    in_dir(tmp_path)
    shutil.copytree(prepared, tmp_path / "data")
    params = Params(train=dataclasses.replace(tiny, class_weight="balanced", max_epochs=1))
    train_step.main(params)
    captured = capsys.readouterr()
    summary = read_json(tmp_path / "reports" / "train.json")
    assert summary["epochs_run"] == 1 and summary["best_epoch"] == 1
    assert summary["still_improving"].startswith("val_accuracy was still improving when training "
                                                 "reached train.max_epochs=1")
    assert f"train: warning: {summary['still_improving']}" in captured.err
    assert "train: best epoch 1 of 1 (max_epochs reached)" in captured.out
    assert "model at models/model.keras" in captured.out
    for rel in ("models/model.keras", "models/preprocessing.json", "reports/history.csv"):
        assert (tmp_path / rel).exists(), rel
    assert not (tmp_path / ".rnnpipe" / "checkpoint").exists()


def write_vectors(path: Path, vectors: dict[str, list[float]]) -> Path:
    dim = len(next(iter(vectors.values())))
    path.write_text(f"{len(vectors)} {dim}\n" + "".join(
        f"{word} {' '.join(repr(v) for v in values)}\n" for word, values in vectors.items()),
        encoding="utf-8")
    return path


def test_pretrained_embeddings(prepared, tiny, tmp_path):
    """A word2vec text file covering half the vocabulary: its vectors are the (frozen)
    embedding rows, and train.json records the coverage. Also an explicit max_len with
    head+tail truncation."""
    vocab = Vocabulary.load(prepared / "vocab.json")
    real = vocab.tokens[2:]
    covered = real[::2]
    rng = np.random.default_rng(0)
    vectors = {t: (rng.integers(-8, 8, size=tiny.embedding_dim) / 4).tolist() for t in covered}
    vectors["not-in-the-vocabulary"] = [9.0] * tiny.embedding_dim
    path = write_vectors(tmp_path / "vectors.txt", vectors)
    params = dataclasses.replace(tiny, embeddings=str(path), embeddings_trainable=False,
                                 max_epochs=1, max_len=4, truncate="head+tail")
    summary = run_train(tmp_path, prepared, params)
    coverage = read_json(tmp_path / "reports" / "train.json")["embedding_coverage"]
    assert coverage == summary["embedding_coverage"]
    assert coverage["found"] == len(covered) and coverage["dimension"] == tiny.embedding_dim
    assert coverage["vocabulary"] == pytest.approx(len(covered) / len(real))
    assert 0 < coverage["tokens"] <= 1 and coverage["format"] == "word2vec-text"
    matrix = load_model(tmp_path / "models" / "model.keras").get_layer("embedding") \
        .get_weights()[0]
    for token in covered:
        np.testing.assert_array_equal(matrix[vocab.token_ids[token]], vectors[token])
    assert summary["max_len"] == 4 and summary["truncate"] == "head+tail"
    assert summary["truncated_share"] > 0
    assert read_json(tmp_path / "models" / "preprocessing.json") == {"max_len": 4,
                                                                     "truncate": "head+tail"}


def test_embeddings_of_another_dimension_are_one_line(prepared, tiny, tmp_path):
    vocab = Vocabulary.load(prepared / "vocab.json")
    path = write_vectors(tmp_path / "vectors.txt", {t: [0.5] * 5 for t in vocab.tokens[2:6]})
    with pytest.raises(DataError) as error:
        run_train(tmp_path, prepared, dataclasses.replace(tiny, embeddings=str(path)))
    message = str(error.value)
    assert message == (f"{path}: the vectors have 5 dimensions but train.embedding_dim is "
                       f"{tiny.embedding_dim}; set train.embedding_dim: 5")
    assert not (tmp_path / "models").exists() and not (tmp_path / "reports").exists()


def test_missing_embeddings_file(prepared, tiny, tmp_path):
    with pytest.raises(DataError, match="nope.vec"):
        run_train(tmp_path, prepared,
                  dataclasses.replace(tiny, embeddings=str(tmp_path / "nope.vec")))


def test_bad_inputs_name_the_file(prepared, tmp_path):
    vocab = Vocabulary.load(prepared / "vocab.json")
    with pytest.raises(DataError, match=r"val: label id 2 is not in the vocabulary's label map "
                                        r"\(2 labels\)"):
        label_ids(np.array([0, 2]), vocab, tmp_path / "val")
    assert label_ids(np.array([1, 0]), vocab, tmp_path / "val").tolist() == [1, 0]
    with write_ids(tmp_path / "ids" / "val"):
        pass
    with pytest.raises(DataError, match="the val split is empty"):
        read_split_ids("val", tmp_path / "ids")
    with pytest.raises(DataError, match="run the vocabulary step first"):
        read_split_ids("train", tmp_path / "ids")
