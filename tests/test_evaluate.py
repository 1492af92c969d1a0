"""Evaluate: scores, the baseline, and the files it writes (metrics, confusion table, plots)."""

import csv
import dataclasses
import json

import numpy as np
import pytest

from rnnpipe.config import EvaluateParams, IngestParams, TrainParams, VocabParams
from rnnpipe.evaluate import evaluate, score
from rnnpipe.ingest import ingest
from rnnpipe.train import train
from rnnpipe.vocab import vocabulary
from tests.conftest import TINY_TRAIN, make_en_corpus, write_tsv


def test_score_accuracy_macro_f1_and_confusion():
    y_true = np.array([0, 0, 1, 1, 2, 2])
    y_pred = np.array([0, 1, 1, 1, 2, 0])
    result = score(y_true, y_pred, ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(4 / 6, abs=1e-6)
    assert result["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert result["per_class"]["b"] == {"precision": pytest.approx(2 / 3, abs=1e-6),
                                        "recall": 1.0, "f1": pytest.approx(0.8, abs=1e-6),
                                        "support": 2}
    f1s = [result["per_class"][k]["f1"] for k in "abc"]
    assert result["macro_f1"] == pytest.approx(np.mean(f1s), abs=1e-5)


def test_evaluate_five_class_english(tmp_path):
    corpus = write_tsv(tmp_path / "news.tsv", make_en_corpus(n_per_class=12))
    data, reports = tmp_path / "data", tmp_path / "reports"
    ingest(IngestParams(source=str(corpus), val_size=0.2, test_size=0.2), data,
           reports / "ingest.json")
    vocabulary(VocabParams(tokenizer="word", min_count=1, workers=1), data, reports / "vocab.json")
    params = dataclasses.replace(TrainParams(**TINY_TRAIN), epochs=1)
    train(params, tokens_dir=data / "tokens", vocab_path=data / "vocab.json",
          model_path=tmp_path / "model.keras", history_path=reports / "history.csv",
          summary_path=reports / "train.json", checkpoint_dir=tmp_path / "ckpt")
    metrics = evaluate(EvaluateParams(), model_path=tmp_path / "model.keras",
                       vocab_path=data / "vocab.json", tokens_dir=data / "tokens",
                       history_path=reports / "history.csv", reports=reports)
    assert json.loads((reports / "metrics.json").read_text()) == metrics
    assert 0 <= metrics["accuracy"] <= 1 and 0 <= metrics["macro_f1"] <= 1
    assert sorted(metrics["per_class"]) == ["business", "politics", "science", "sports", "tech"]
    assert metrics["baseline"]["accuracy"] > 0.5  # topic words make this corpus easy for TF-IDF
    assert np.array(metrics["confusion_matrix"]).sum() == metrics["test_documents"] == 10
    with open(reports / "confusion.csv", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 10 and set(rows[0]) == {"actual", "predicted"}
    for name in ("confusion_matrix", "training_curves"):
        assert (reports / "plots" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "macro avg" in (reports / "classification_report.txt").read_text()
